"""reuse_verify (Python) natively, with the host's tokenizer replaced by
WordTokenizer: the Rust workload's unit tests, ported."""

import unittest

import support

from sparkhost import (
    LLAMA3_ASSISTANT_PREFIX,
    LLAMA3_USER_PREFIX,
    TOPICS,
    Params,
    SplitMix64,
    WordTokenizer,
    WorkloadError,
    choose_target,
    label,
    sha256_hex,
    synthetic_document,
)
from wit_world.imports import types

app = support.workload_module("reuse_verify")
words = WordTokenizer()


def config(pairs):
    return app.Config.from_params(Params(app.declared_params(), pairs))


def requests(pairs, seed):
    return app.plan(config(pairs), seed, words)


class ReuseVerifyTest(unittest.TestCase):
    def test_defaults_match_the_seed(self):
        c = config([])
        self.assertEqual((c.repeats, c.set), (3, "short"))
        self.assertEqual((c.short_range, c.long_range), ((512, 2048), (8192, 32768)))
        self.assertEqual(c.generation.max_tokens, 256)
        self.assertEqual(c.generation.temperature, 0.0)
        self.assertEqual(c.generation.stop, ["<|eot_id|>"])
        self.assertEqual(c.format.api, "completions")

    def test_bad_params_are_invalid_config(self):
        for pairs in (
            [("repeats", "1")],
            [("repeats", "11")],
            [("prompt-set", "mixed")],
            [("api", "chat"), ("template", "none")],
        ):
            with self.assertRaises(WorkloadError, msg=pairs) as caught:
                config(pairs)
            self.assertEqual(caught.exception.kind, "invalid-config")
        self.assertEqual(config([("repeats", "10")]).repeats, 10)

    def test_every_repeat_is_the_same_request_in_its_own_phase(self):
        all_ = requests([("repeats", "4")], 1337)
        self.assertEqual(len(all_), 4)
        for i, r in enumerate(all_):
            k = i + 1
            self.assertEqual(r.id, f"reuse-00000-r{k}")
            self.assertEqual(r.phase, f"reuse_{k}")
            self.assertEqual(r.prompt, all_[0].prompt)
            self.assertEqual(r.prefix_hash, all_[0].prefix_hash)
            self.assertEqual(r.generation, all_[0].generation)
            self.assertIn(label("repeat", str(k)), r.labels)
        self.assertIsInstance(all_[0].prompt, types.Prompt_Text)
        self.assertTrue(
            all_[0].prompt.value.startswith(
                "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nDocument ID: reuse-00000\n"
            )
        )

    def test_the_prompt_is_fitted_before_the_template(self):
        (r,) = requests([("short-range", "700:700"), ("repeats", "2")], 5)[:1]
        text = r.prompt.value
        self.assertTrue(text.startswith(LLAMA3_USER_PREFIX) and text.endswith(LLAMA3_ASSISTANT_PREFIX))
        user = text[len(LLAMA3_USER_PREFIX) : -len(LLAMA3_ASSISTANT_PREFIX)]
        self.assertEqual(words.count(user), 700)
        self.assertEqual(r.prefix_hash, sha256_hex(user))
        self.assertIn(label("target_tokens", "700"), r.labels)

    def test_same_seed_same_plan(self):
        self.assertEqual(requests([], 9), requests([], 9))
        self.assertNotEqual(requests([], 9)[0].prompt, requests([], 10)[0].prompt)

    def test_phases_are_serial_and_batches_hand_out_the_plan(self):
        w = app.ReuseVerify.create(Params(app.declared_params(), [("repeats", "3")]), 1, words)
        self.assertEqual(
            [(p.name, p.include_in_summary, p.load) for p in w.phases()],
            [(f"reuse_{k}", True, types.LoadModel_Closed(1)) for k in (1, 2, 3)],
        )
        first = w.next_batch(2)
        self.assertEqual((len(first.requests), first.done), (2, False))
        second = w.next_batch(2)
        self.assertEqual(([r.id for r in second.requests], second.done), (["reuse-00000-r3"], True))
        self.assertEqual(app.Planner().describe().name, "reuse_verify")

    def test_porting_vectors_seed_1337(self):
        for size_set, long_range, cls, target, length, sha in (
            ("short", (8192, 32768), "short", 512, 2871,
             "55c71e25536ad2b134bc4cc06bd92bdab16e578cd2cbb7790b84c54e20df337c"),
            ("long", (6000, 7600), "long", 7120, 35063,
             "21024d1532efdb18221dcc022892296c964329be6d59faec417019f5dcc56109"),
        ):
            rng = SplitMix64(1337)
            self.assertEqual(choose_target(size_set, rng, (512, 2048), long_range), (cls, target))
            topic = rng.pick(TOPICS)
            self.assertEqual(topic, "cache eviction workflow")
            doc = synthetic_document(rng, "reuse-00000", topic, target)
            self.assertEqual((len(doc.encode()), sha256_hex(doc)), (length, sha))


if __name__ == "__main__":
    unittest.main()
