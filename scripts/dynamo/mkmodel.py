#!/usr/bin/env python3
"""Build the weightless "tiny-llama" model dir the Dynamo mocker serves.

    python scripts/dynamo/mkmodel.py [OUT_DIR]   (default: <repo>/target/dynamo-model/tiny-llama)

Run it with the Dynamo venv's Python: it needs `tokenizers`, and the training
corpus is that interpreter's own stdlib, so the same Python version gives the
same tokenizer without any download.

The mocker only needs config.json (to size KV bytes/token), tokenizer.json and
a chat template; without the template the worker registers but the frontend
never serves the model ("MDC does not contain a prompt formatter").
"""

import glob
import json
import os
import sys
import sysconfig

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

VOCAB_SIZE = 8192
MAX_LEN = 4096
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def main():
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(repo, "target", "dynamo-model", "tiny-llama")
    os.makedirs(out, exist_ok=True)

    # A fixed, sorted file list keeps the corpus (and so the merges) stable.
    files = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))[:200]
    if not files:
        sys.exit("error: no stdlib sources found to train on")

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train(
        files,
        trainers.BpeTrainer(
            vocab_size=VOCAB_SIZE,
            special_tokens=SPECIALS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    bos, eos = tok.token_to_id(SPECIALS[0]), tok.token_to_id(SPECIALS[1])
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A $B",
        special_tokens=[(SPECIALS[0], bos)],
    )
    tok.save(os.path.join(out, "tokenizer.json"))

    write_json(
        os.path.join(out, "tokenizer_config.json"),
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": SPECIALS[0],
            "eos_token": SPECIALS[1],
            "pad_token": SPECIALS[1],
            "model_max_length": MAX_LEN,
            # The post-processor already prepends BOS; adding it here too would double it.
            "add_bos_token": False,
            "chat_template": CHAT_TEMPLATE,
        },
    )
    # Llama-shaped but tiny: the mocker only derives KV bytes/token from it
    # (layers * 2 * kv_heads * head_dim * dtype bytes). head_dim 64 also keeps
    # the dir usable by vLLM-CPU with dummy weights.
    write_json(
        os.path.join(out, "config.json"),
        {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": tok.get_vocab_size(),
            "hidden_size": 256,
            "intermediate_size": 512,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 64,
            "max_position_embeddings": MAX_LEN,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "hidden_act": "silu",
            "tie_word_embeddings": True,
            "torch_dtype": "bfloat16",
            "bos_token_id": bos,
            "eos_token_id": eos,
        },
    )
    print(f"wrote {out} (vocab {tok.get_vocab_size()}, trained on {len(files)} stdlib files)")


if __name__ == "__main__":
    main()
