"""The Python SDK against the Rust SDK's own outputs
(examples/testdata/sdk-vectors.json, written by examples/testdata/vectors-gen)."""

import struct
import unittest

import support  # noqa: F401  (sets up the bindings first)

import sparkhost
from sparkhost import (
    Params,
    PromptFormat,
    SplitMix64,
    WordTokenizer,
    WorkloadError,
    choose_target,
    debug_str,
    display_f64,
    document_min_words,
    generation_params,
    llama3_completion_prompt,
    message,
    param,
    prompt_format_params,
    sha256_hex,
    synthetic_document,
)
from wit_world.imports import types

V = support.vectors()


def outcome(f, to_json=lambda v: v):
    try:
        return {"ok": to_json(f())}
    except WorkloadError as e:
        return {"err": [e.kind, e.message]}


def declared(rows):
    return [param(name, description, default) for name, description, default in rows]


def f32_bits(x):
    return struct.pack(">f", x).hex()


def hex64(x):
    return "%016x" % x


class RngTest(unittest.TestCase):
    def test_draws_match_the_rust_sdk(self):
        for v in V["rng"]:
            seed = int(v["seed"])
            r = SplitMix64(seed)
            self.assertEqual([hex64(r.next_u64()) for _ in v["next_u64"]], v["next_u64"])
            r = SplitMix64(seed)
            self.assertEqual([r.next_f64() for _ in v["next_f64"]], v["next_f64"])
            r = SplitMix64(seed)
            for lo, hi, want in v["range_u32"]:
                self.assertEqual(r.range_u32(lo, hi), want)
            r = SplitMix64(seed)
            self.assertEqual([r.pick(list(range(n))) for n in v["pick_sizes"]], v["pick"])

    def test_vectors_of_rng_rs(self):
        r = SplitMix64(0)
        self.assertEqual(
            [r.next_u64() for _ in range(4)],
            [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F, 0xF88BB8A8724C81EC],
        )
        r = SplitMix64(1337)
        self.assertEqual([r.range_u32(1, 6) for _ in range(8)], [2, 6, 3, 3, 1, 6, 6, 2])
        self.assertEqual(SplitMix64(0).next_f64(), 0.8833108082136426)
        with self.assertRaises(ValueError):
            r.range_u32(2, 1)
        with self.assertRaises(ValueError):
            r.pick([])


class TextTest(unittest.TestCase):
    def test_documents_match_the_rust_sdk(self):
        for d in V["text"]["documents"]:
            r = SplitMix64(int(d["seed"]))
            doc = synthetic_document(r, d["doc_id"], d["topic"], d["target"])
            self.assertEqual(len(doc.encode("utf-8")), d["len"], d["doc_id"])
            self.assertEqual(sha256_hex(doc), d["sha256"], d["doc_id"])
            self.assertEqual(doc[:400], d["head"])
            self.assertEqual(hex64(r.next_u64()), d["next_u64_after"], "no extra draws")
        for t, want in V["text"]["document_min_words"]:
            self.assertEqual(document_min_words(t), want)
        self.assertEqual(llama3_completion_prompt("hello\nworld"), V["text"]["llama3_completion_prompt"])

    def test_size_rules_match_the_rust_sdk(self):
        for c in V["text"]["choose_target"]:
            r = SplitMix64(int(c["seed"]))
            got = [
                list(choose_target(c["set"], r, tuple(c["short_range"]), tuple(c["long_range"])))
                for _ in c["targets"]
            ]
            self.assertEqual(got, c["targets"], c)

    def test_sha256(self):
        for text, want in V["sha256"]:
            self.assertEqual(sha256_hex(text), want)

    def test_word_tokenizer(self):
        t = WordTokenizer()
        for text, target, filler, count, fitted in V["word_tokenizer"]:
            self.assertEqual(t.count(text), count, repr(text))
            self.assertEqual(t.fit(text, target, filler), fitted, repr((text, target)))


class PromptTest(unittest.TestCase):
    def test_rendering_matches_the_rust_sdk(self):
        messages = [message(role, content) for role, content in V["prompt"]["messages"]]
        for r in V["prompt"]["renders"]:
            pairs = [("api", r["api"])]
            if r["template"]:
                pairs.append(("template", r["template"]))
            p = Params(prompt_format_params("completions", "llama3"), pairs)
            got = PromptFormat.from_params(p).render(messages)
            if "text" in r["prompt"]:
                self.assertEqual(got, types.Prompt_Text(r["prompt"]["text"]))
            else:
                want = [message(role, content) for role, content in r["prompt"]["chat"]]
                self.assertEqual(got, types.Prompt_Chat(want))

    def test_params_match_the_rust_sdk(self):
        self.assertEqual(
            prompt_format_params("completions", "llama3"),
            declared(V["prompt"]["params_completions_llama3"]),
        )
        self.assertEqual(prompt_format_params("chat", "none"), declared(V["prompt"]["params_chat_none"]))
        for c in V["params"]["prompt_format"]:
            p = Params(prompt_format_params("chat", "llama3"), [tuple(x) for x in c["pairs"]])
            got = outcome(lambda: PromptFormat.from_params(p), lambda f: [f.api, f.template])
            self.assertEqual(got, c["format"], c["pairs"])


class RustFormattingTest(unittest.TestCase):
    def test_debug_str(self):
        for text, want in V["debug_str"]:
            self.assertEqual(debug_str(text), want)

    def test_display_f64(self):
        for x, want in V["display_f64"]:
            self.assertEqual(display_f64(x), want, repr(x))


class ParamsTest(unittest.TestCase):
    def test_getters_and_messages_match_the_rust_sdk(self):
        decl = declared(V["params"]["declared"])
        for c in V["params"]["cases"]:
            p = Params(decl, [("v", c["value"])])
            name = repr(c["value"])
            self.assertEqual(outcome(lambda: p.get_str("v")), c["get_str"], name)
            self.assertEqual(outcome(lambda: p.get_u32("v")), c["get_u32"], name)
            self.assertEqual(outcome(lambda: p.get_u32_min("v", 1)), c["get_u32_min_1"], name)
            self.assertEqual(outcome(lambda: p.get_u32_in("v", 2, 10)), c["get_u32_in_2_10"], name)
            self.assertEqual(outcome(lambda: p.get_opt_u32("v")), c["get_opt_u32"], name)
            self.assertEqual(outcome(lambda: p.get_f64("v")), c["get_f64"], name)
            self.assertEqual(outcome(lambda: p.get_opt_f64("v")), c["get_opt_f64"], name)
            self.assertEqual(
                outcome(lambda: p.get_opt_u64("v"), lambda n: None if n is None else str(n)),
                c["get_opt_u64"],
                name,
            )
            self.assertEqual(outcome(lambda: p.get_bool("v")), c["get_bool"], name)
            self.assertEqual(outcome(lambda: p.get_range("v"), list), c["get_range"], name)
            self.assertEqual(outcome(lambda: p.get_list("v")), c["get_list"], name)
            self.assertEqual(
                outcome(lambda: p.get_choice("v", ["short", "long"])),
                c["get_choice_short_long"],
                name,
            )

    def test_misc_messages(self):
        decl = declared(V["params"]["declared"])
        m = V["params"]["misc"]
        self.assertEqual(outcome(lambda: Params(decl, [("vv", "1")]), lambda _: None), m["unknown"])
        self.assertEqual(
            outcome(lambda: Params([], [("vv", "1")]), lambda _: None), m["unknown_none_declared"]
        )
        self.assertEqual(
            outcome(lambda: Params(decl, [("w", "1"), ("w", "2")]), lambda _: None), m["twice"]
        )
        p = Params(decl, [])
        self.assertEqual(outcome(lambda: p.get_str("nope")), m["undeclared_read"])
        self.assertEqual(outcome(lambda: p.is_set("v")), m["is_set_default"])
        self.assertEqual(outcome(lambda: Params(decl, [("v", "1")]).is_set("v")), m["is_set_user"])
        given = [types.Param(name="v", value="5")]
        self.assertEqual(Params(decl, given).get_u32("v"), 5)

    def test_generation_params_match_the_rust_sdk(self):
        self.assertEqual(generation_params(), declared(V["params"]["generation_params_seed"]))
        self.assertEqual(
            generation_params(max_tokens="64", temperature="0", top_p="", stop="", ignore_eos="true"),
            declared(V["params"]["generation_params_custom"]),
        )

        def to_json(g):
            return {
                "max_tokens": g.max_tokens,
                "temperature": None if g.temperature is None else f32_bits(g.temperature),
                "top_p": None if g.top_p is None else f32_bits(g.top_p),
                "stop": g.stop,
                "seed": None if g.seed is None else str(g.seed),
                "ignore_eos": g.ignore_eos,
            }

        for c in V["params"]["generation"]:
            p = Params(generation_params(), [tuple(x) for x in c["pairs"]])
            self.assertEqual(outcome(p.get_generation, to_json), c["generation"], c["pairs"])


class ExportTest(unittest.TestCase):
    def test_export_merges_params_and_converts_errors(self):
        from componentize_py_types import Err

        class Echo:
            @staticmethod
            def describe():
                return types.WorkloadInfo(
                    name="echo", version="0.1.0", description="d", params=[param("n", "N.", "3")]
                )

            @classmethod
            def create(cls, params, seed):
                e = cls()
                e.n, e.seed = params.get_u32("n"), seed
                return e

            def phases(self):
                return []

            def next_batch(self, max):
                return (self.n, self.seed, max)

        planner = sparkhost.export_workload(Echo)
        generator = sparkhost.exported_generator()
        self.assertEqual(planner().describe().name, "echo")
        g = generator.create([types.Param(name="n", value="5")], 9)
        self.assertEqual(g.next_batch(10), (5, 9, 10))
        g.on_response(None)
        with self.assertRaises(Err) as caught:
            generator.create([types.Param(name="n", value="x")], 9)
        self.assertIsInstance(caught.exception.value, types.WorkloadError_InvalidConfig)
        self.assertIn('"x"', caught.exception.value.value)


if __name__ == "__main__":
    unittest.main()
