#!/usr/bin/env python3
"""Golden values for the engine, from an independent PyTorch implementation.

Builds a tiny Llama-style decoder (RMSNorm, RoPE in Hugging Face's rotate-half
layout, grouped-query attention, SwiGLU, untied head) with plain PyTorch ops,
runs one forward/backward on fixed tokens and targets (two ignored), and writes
the parameters, inputs, logits, loss and every parameter's gradient to
crates/engine/tests/data/golden.safetensors, under Hugging Face tensor names.
The Rust test `tests/golden.rs` loads the same parameters into the engine and
compares; it needs no Python.

Usage: python3 tools/make_golden.py   (needs torch and safetensors)
"""
import json
import math
import pathlib

import torch
from safetensors.torch import save_file

CFG = dict(vocab_size=48, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=40,
           max_seq_len=16, rope_theta=10000.0, norm_eps=1e-5, tie_embeddings=False)
BATCH, SEQ = 2, 12
IGNORE = 2**32 - 1


def rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, pos, theta):
    hd = x.shape[-1]
    inv = theta ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    ang = pos[:, None].double() * inv[None, :]
    cos = torch.cat([ang.cos(), ang.cos()], -1).to(x.dtype)
    sin = torch.cat([ang.sin(), ang.sin()], -1).to(x.dtype)
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    rot = torch.cat([-x2, x1], -1)
    return x * cos + rot * sin


def forward(p, tokens, c):
    d, H, KV = c["d_model"], c["n_heads"], c["n_kv_heads"]
    hd = d // H
    B, T = tokens.shape
    x = p["model.embed_tokens.weight"][tokens]
    pos = torch.arange(T)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(c["n_layers"]):
        pre = f"model.layers.{i}."
        h = rms(x, p[pre + "input_layernorm.weight"], c["norm_eps"])
        q = (h @ p[pre + "self_attn.q_proj.weight"].T).view(B, T, H, hd).transpose(1, 2)
        k = (h @ p[pre + "self_attn.k_proj.weight"].T).view(B, T, KV, hd).transpose(1, 2)
        v = (h @ p[pre + "self_attn.v_proj.weight"].T).view(B, T, KV, hd).transpose(1, 2)
        q, k = rope(q, pos, c["rope_theta"]), rope(k, pos, c["rope_theta"])
        k = k.repeat_interleave(H // KV, dim=1)
        v = v.repeat_interleave(H // KV, dim=1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        s = s.masked_fill(~mask, float("-inf"))
        a = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, H * hd)
        x = x + a @ p[pre + "self_attn.o_proj.weight"].T
        h = rms(x, p[pre + "post_attention_layernorm.weight"], c["norm_eps"])
        g = h @ p[pre + "mlp.gate_proj.weight"].T
        u = h @ p[pre + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(g) * u) @ p[pre + "mlp.down_proj.weight"].T
    x = rms(x, p["model.norm.weight"], c["norm_eps"])
    return x @ p["lm_head.weight"].T


def main():
    torch.manual_seed(1234)
    c = CFG
    d, hd, f, V = c["d_model"], c["d_model"] // c["n_heads"], c["ffn_hidden"], c["vocab_size"]
    shapes = {"model.embed_tokens.weight": (V, d)}
    for i in range(c["n_layers"]):
        pre = f"model.layers.{i}."
        shapes.update({
            pre + "input_layernorm.weight": (d,),
            pre + "self_attn.q_proj.weight": (c["n_heads"] * hd, d),
            pre + "self_attn.k_proj.weight": (c["n_kv_heads"] * hd, d),
            pre + "self_attn.v_proj.weight": (c["n_kv_heads"] * hd, d),
            pre + "self_attn.o_proj.weight": (d, c["n_heads"] * hd),
            pre + "post_attention_layernorm.weight": (d,),
            pre + "mlp.gate_proj.weight": (f, d),
            pre + "mlp.up_proj.weight": (f, d),
            pre + "mlp.down_proj.weight": (d, f),
        })
    shapes["model.norm.weight"] = (d,)
    shapes["lm_head.weight"] = (V, d)
    params = {}
    for name, shape in shapes.items():
        if len(shape) == 1:
            t = 1.0 + 0.1 * torch.randn(shape)
        else:
            t = 0.2 * torch.randn(shape)
        params[name] = t.float().requires_grad_(True)
    tokens = torch.randint(0, V, (BATCH, SEQ))
    targets = torch.randint(0, V, (BATCH, SEQ))
    targets[0, 3] = -100
    targets[1, 7] = -100
    logits = forward(params, tokens, c)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-100)
    loss.backward()

    out = {f"param/{k}": v.detach().contiguous() for k, v in params.items()}
    out.update({f"grad/{k}": v.grad.contiguous() for k, v in params.items()})
    out["tokens"] = tokens.float().contiguous()
    tg = targets.clone().double()
    tg[tg < 0] = -1.0
    out["targets"] = tg.float().contiguous()
    out["logits"] = logits.detach().reshape(BATCH * SEQ, V).contiguous()
    out["loss"] = loss.detach().reshape(1)
    dest = pathlib.Path(__file__).resolve().parent.parent / "crates/engine/tests/data/golden.safetensors"
    save_file(out, str(dest), metadata={"config": json.dumps(c), "batch": str(BATCH), "seq": str(SEQ),
                                        "torch": torch.__version__})
    print(f"wrote {dest} (loss {loss.item():.6f})")


if __name__ == "__main__":
    main()
