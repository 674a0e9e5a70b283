"""The `gguf` package (llama.cpp's Python reader) reads `ferrogpt export gguf` files as llama.cpp
expects them, compared with the Hugging Face export of the same model.

argv: WORK_DIR (WORK_DIR/hf holds the HF export, WORK_DIR/model-{f32,q8_0}.gguf the GGUF exports).
Checks the Llama metadata, the vocabulary, and every tensor: f32 exactly equal to the HF weight
(q and k permuted as llama.cpp's own converter permutes them), q8_0 within a quantisation step.
"""

import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import load_file


def field(reader, key):
    f = reader.fields[key]
    values = [f.parts[i] for i in f.data]
    if f.types and f.types[-1].name == "STRING":
        values = [bytes(v).decode() for v in values]
    else:
        values = [v[0] for v in values]
    return values if len(values) != 1 or f.types[0].name == "ARRAY" else values[0]


def llama_cpp_permute(w, n_head):
    """llama.cpp's convert_hf_to_gguf.py: Hugging Face q/k rows to adjacent rotary pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_name(hf):
    fixed = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
    if hf in fixed:
        return fixed[hf]
    parts = {
        "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    }
    layer, rest = hf[len("model.layers."):].split(".", 1)
    return f"blk.{layer}.{parts[rest[:-len('.weight')]]}.weight"


def main():
    work = Path(sys.argv[1])
    config = json.loads((work / "hf" / "config.json").read_text())
    weights = load_file(work / "hf" / "model.safetensors")
    failures = []
    for dtype in ["f32", "q8_0"]:
        reader = GGUFReader(work / f"model-{dtype}.gguf")
        expect = {
            "general.architecture": "llama",
            "llama.block_count": config["num_hidden_layers"],
            "llama.embedding_length": config["hidden_size"],
            "llama.attention.head_count": config["num_attention_heads"],
            "llama.attention.head_count_kv": config["num_key_value_heads"],
            "llama.context_length": config["max_position_embeddings"],
            "tokenizer.ggml.model": "gpt2",
            "tokenizer.ggml.eos_token_id": config["eos_token_id"],
        }
        for key, want in expect.items():
            got = field(reader, key)
            if got != want:
                failures.append(f"{dtype}: {key} = {got!r}, want {want!r}")
        tokens = field(reader, "tokenizer.ggml.tokens")
        if len(tokens) != config["vocab_size"]:
            failures.append(f"{dtype}: {len(tokens)} tokens, vocab_size {config['vocab_size']}")
        tensors = {t.name: t for t in reader.tensors}
        worst = 0.0
        for hf, w in weights.items():
            t = tensors.get(gguf_name(hf))
            if t is None:
                failures.append(f"{dtype}: no tensor for {hf}")
                continue
            want = w.astype(np.float32)
            if "q_proj" in hf:
                want = llama_cpp_permute(want, config["num_attention_heads"])
            elif "k_proj" in hf:
                want = llama_cpp_permute(want, config["num_key_value_heads"])
            got = dequantize(t.data, t.tensor_type).reshape(want.shape)
            diff = float(np.abs(got - want).max())
            worst = max(worst, diff)
            # q8_0: half a step d = max|block| / 127, plus the rounding of d to f16 (127 d 2^-11).
            limit = 0.0 if dtype == "f32" or want.ndim == 1 else float(np.abs(want).max()) / 127 * 0.57
            if diff > limit:
                failures.append(f"{dtype}: {t.name} differs by {diff:.3g} (limit {limit:.3g})")
        print(f"gguf {dtype}: {len(reader.tensors)} tensors, {len(tokens)} tokens, max |diff| vs HF weights {worst:.3g}")
    for f in failures:
        print("FAIL", f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
