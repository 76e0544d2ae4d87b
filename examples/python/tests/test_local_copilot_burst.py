"""local_copilot_burst (Python) natively, with the host's tokenizer replaced
by WordTokenizer: the Rust workload's unit tests, ported."""

import unittest

import support

from sparkhost import TOPICS, Params, SplitMix64, WordTokenizer, WorkloadError, sha256_hex, synthetic_document
from wit_world.imports import types

app = support.workload_module("local_copilot_burst")
words = WordTokenizer()

SMALL = [
    ("requests", "10"),
    ("warmup", "0"),
    ("sessions", "2"),
    ("burst-size", "3"),
    ("shared-prefix-tokens", "300"),
    ("context-tokens", "200"),
]


def config(pairs):
    return app.Config.from_params(Params(app.declared_params(), pairs))


def plans(pairs, seed):
    c = config(pairs)
    return c, app.LocalCopilotBurst.build(c, seed, words)


def response(id_, text):
    return types.ResponseSummary(
        id=id_, phase="", session_id=None, ok=True, status=200, error_kind=None, text=text,
        prompt_tokens=None, completion_tokens=None, cached_tokens=None, ttft_ms=None, e2e_ms=1.0,
    )


def messages(r):
    assert isinstance(r.prompt, types.Prompt_Chat), "chat by default"
    return r.prompt.value


def get(r, key):
    return next(l.value for l in r.labels if l.key == key)


class LocalCopilotBurstTest(unittest.TestCase):
    def test_defaults_match_the_seed(self):
        c = config([])
        self.assertEqual((c.requests, c.warmup, c.sessions, c.burst_size), (64, 8, 8, 4))
        self.assertEqual(c.shared_prefix_tokens, 3072)
        self.assertEqual(c.burst_gap_ms, 8000, "sessions × interval")
        self.assertEqual(c.history, "real")
        self.assertEqual(c.format.api, "chat")
        self.assertEqual(c.generation.temperature, app.sparkhost.f32(0.7))
        self.assertIsNone(config([("shared-prefix", "false")]).shared_prefix_tokens)
        self.assertEqual(config([("burst-gap-ms", "5")]).burst_gap_ms, 5)
        for bad in ([("sessions", "0")], [("burst-size", "0")], [("history", "fake")]):
            with self.assertRaises(WorkloadError, msg=bad):
                config(bad)

    def test_bursts_sessions_turns_and_arrivals(self):
        c, p = plans(SMALL, 1)
        t = p[0].turns
        self.assertEqual(
            [(x.session, x.turn, x.burst, x.position) for x in t],
            [(0, 1, 0, 0), (0, 2, 0, 1), (0, 3, 0, 2), (1, 1, 1, 0), (1, 2, 1, 1),
             (1, 3, 1, 2), (0, 4, 2, 0), (0, 5, 2, 1), (0, 6, 2, 2), (1, 4, 3, 0)],
        )
        self.assertEqual(t[0].arrival, types.Arrival_AtOffsetMs(0.0))
        self.assertEqual(t[1].arrival, types.Arrival_AfterPreviousTurn(300.0))
        self.assertEqual(t[3].arrival, types.Arrival_AtOffsetMs(1000.0))
        self.assertEqual(t[6].arrival, types.Arrival_AfterPreviousTurn(2000.0))
        first = p[0].next_requests(c, 100)
        self.assertEqual([r.id for r in first], ["copilot_main-00000", "copilot_main-00003"])
        self.assertEqual(first[1].session_id, "session_02")
        self.assertEqual(get(first[1], "burst_id"), "burst_0002")

    def test_history_grows_with_the_real_answers(self):
        c, p = plans(SMALL, 1)
        plan = p[0]
        first = plan.next_requests(c, 100)
        self.assertEqual(plan.next_requests(c, 100), [], "waiting for answers")
        self.assertTrue(plan.record(response(first[1].id, "answer B1")))
        self.assertTrue(plan.record(response(first[0].id, "answer A1")))
        second = plan.next_requests(c, 100)
        self.assertEqual(second[0].id, "copilot_main-00001")
        self.assertEqual(second[1].id, "copilot_main-00004")
        m = messages(second[0])
        self.assertEqual([x.role for x in m], ["system", "user", "assistant", "user"])
        self.assertEqual(m[2].content, "answer A1")
        self.assertEqual(m[:2], messages(first[0]), "the previous prompt is a prefix")
        self.assertTrue(
            m[3].content.startswith(
                "Session ID: session_01\nBurst ID: burst_0001\nTurn: 2\nTask: In 5 bullets, explain how the "
            )
        )
        self.assertEqual(get(second[0], "history_turns"), "1")
        self.assertFalse(plan.record(response("nope", "")))

    def test_the_prefix_is_shared_and_contexts_are_per_session(self):
        c, p = plans([("history", "synthetic"), *SMALL], 7)
        plan = p[0]
        shared = plan.shared_prefix
        self.assertTrue(shared.startswith(app.SHARED_PREFIX_HEADER))
        self.assertEqual(words.count(shared), 300)
        all_ = plan.next_requests(c, 100)
        self.assertEqual(len(all_), 10, "synthetic history plans everything at once")
        self.assertTrue(plan.finished())
        for r in all_:
            self.assertEqual(r.prefix_hash, sha256_hex(shared))
            self.assertTrue(messages(r)[0].content.startswith(f"{shared}\n\nSession Context:\nSession: "))
        a, b = messages(all_[0])[0].content, messages(all_[3])[0].content
        self.assertNotEqual(a, b)
        self.assertEqual(words.count(a[len(shared) + 2 :]), 200)
        last = messages(all_[9])
        self.assertEqual(len(last), 1 + 2 * 3 + 1, "turn 4 of session 2 carries 3 earlier turns")
        self.assertTrue(last[2].content.startswith("Reply to copilot_main-00003: five bullets on how the "))

    def test_without_prefix_or_context_there_is_no_system_message(self):
        c, p = plans(
            [("shared-prefix", "false"), ("context-tokens", "0"), ("history", "synthetic"),
             ("warmup", "0"), ("requests", "2")],
            3,
        )
        all_ = p[0].next_requests(c, 10)
        self.assertEqual(len(messages(all_[0])), 1)
        self.assertIsNone(all_[0].prefix_hash)
        _, q = plans([("shared-prefix", "false"), ("warmup", "0")], 3)
        self.assertEqual(q[0].prefix_hash[0], sha256_hex(q[0].system[0]))

    def test_warmup_comes_first_and_differs_and_later_phases_wait(self):
        c, p = plans(
            [("history", "synthetic"), ("requests", "4"), ("warmup", "2"),
             ("shared-prefix-tokens", "50"), ("context-tokens", "0")],
            5,
        )
        batch = app.LocalCopilotBurst.next(p, c, 100)
        self.assertTrue(batch.done)
        self.assertEqual(
            [r.id for r in batch.requests],
            ["copilot_warmup-00000", "copilot_warmup-00001", "copilot_main-00000",
             "copilot_main-00001", "copilot_main-00002", "copilot_main-00003"],
        )
        self.assertEqual(batch.requests[0].session_id, "warmup_session_01")
        self.assertNotEqual(batch.requests[0].prefix_hash, batch.requests[2].prefix_hash)

        c, p = plans(
            [("requests", "2"), ("warmup", "2"), ("burst-size", "2"),
             ("shared-prefix-tokens", "50"), ("context-tokens", "0")],
            5,
        )
        b = app.LocalCopilotBurst.next(p, c, 100)
        self.assertEqual((len(b.requests), b.done), (1, False))
        self.assertTrue(p[0].record(response("copilot_warmup-00000", "x")))
        b = app.LocalCopilotBurst.next(p, c, 100)
        self.assertEqual([r.id for r in b.requests], ["copilot_warmup-00001", "copilot_main-00000"])

    def test_completions_render_the_llama3_history(self):
        c, p = plans(
            [("api", "completions"), ("history", "synthetic"), ("warmup", "0"), ("requests", "2"),
             ("shared-prefix-tokens", "20"), ("context-tokens", "0")],
            5,
        )
        t = p[0].next_requests(c, 10)[1].prompt.value
        self.assertTrue(
            t.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nShared Project Context:\n")
        )
        self.assertIn(
            "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nReply to copilot_main-00000: ", t
        )
        self.assertTrue(t.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n"))

    def test_the_planner_answers_on_response_and_refuses_unknown_ids(self):
        w = app.LocalCopilotBurst.create(Params(app.declared_params(), SMALL), 1, words)
        self.assertEqual([(p.name, p.load) for p in w.phases()], [("copilot_burst", types.LoadModel_Closed(2))])
        b = w.next_batch(10)
        self.assertEqual((len(b.requests), b.done), (2, False))
        w.on_response(response(b.requests[0].id, "A"))
        with self.assertRaises(WorkloadError) as caught:
            w.on_response(response('nope"', ""))
        self.assertEqual(
            (caught.exception.kind, caught.exception.message),
            ("internal", 'response for unknown request "nope\\""'),
        )
        self.assertEqual(app.Planner().describe().name, "local_copilot_burst")

    def test_porting_vectors_seed_1337(self):
        rng = SplitMix64(1337 + app.PREFIX_SEED_OFFSET)
        doc = synthetic_document(rng, "copilot_main-shared-prefix", app.SHARED_PREFIX_TOPIC, 3072)
        self.assertEqual(
            (len(doc), sha256_hex(doc)),
            (16055, "add7e5d4487a85f0e5b3da4715db6fb8485f2bbef7a4bba193195fae559277e8"),
        )
        rng = SplitMix64(1337 + app.CONTEXT_SEED_OFFSET)
        topic = rng.pick(TOPICS)
        self.assertEqual(topic, "service degradation playbook")
        doc = synthetic_document(rng, "session_01-context", topic, 1024)
        self.assertEqual(
            (len(doc), sha256_hex(doc)),
            (5647, "7d4f71e84c747563ed7541d3861cd46da1f3df1ec8fc3904dc039d6d201badf8"),
        )
        _, p = plans([("history", "synthetic")], 1337)
        main = p[1].turns
        self.assertEqual(
            main[0].user_text,
            "Session ID: session_01\nBurst ID: burst_0001\nTurn: 1\nTask: In 5 bullets, "
            "explain how the policy engine prioritizes the tenant isolation controls pipeline "
            "under bursty traffic. Call out one concrete risk and one mitigation.",
        )
        self.assertEqual(
            main[0].synthetic_reply,
            "Reply to copilot_main-00000: five bullets on how the policy engine prioritizes "
            "the tenant isolation controls pipeline under bursty traffic, one concrete risk, "
            "and one mitigation.",
        )
        self.assertEqual(
            main[5].user_text,
            "Session ID: session_02\nBurst ID: burst_0002\nTurn: 2\nTask: In 5 bullets, "
            "explain how the telemetry worker describes the token budget policy pipeline "
            "under constrained memory tiers. Call out one concrete risk and one mitigation.",
        )
        self.assertTrue(
            p[0].turns[0].user_text.startswith(
                "Session ID: warmup_session_01\nBurst ID: burst_0001\nTurn: 1\nTask: In 5 "
                "bullets, explain how the batch scheduler re-evaluates the fault tolerance and "
                "retries pipeline under bursty traffic."
            )
        )


if __name__ == "__main__":
    unittest.main()
