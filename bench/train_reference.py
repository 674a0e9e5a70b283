#!/usr/bin/env python3
"""PyTorch reference for `ferrogpt bench train` and `ferrogpt bench generate`.

The same architecture and shapes as ferrogpt's reference model: vocab 4096,
context 256, d_model 256, 4 layers, 4 heads, RMSNorm, RoPE (rotate-half),
SwiGLU with hidden 688, untied LM head, f32, batch 16. PyTorch at its best on
the CPU: F.scaled_dot_product_attention (flash kernel), fused RMSNorm where
available, fused cross-entropy, AdamW(fused=True) falling back to foreach,
torch.inference_mode and a preallocated KV cache for decoding. `--compile`
adds torch.compile (inductor) on top.

Prints one JSON line per mode: {"mode": "train", "tokens_per_s": ...}.
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

V, T, D, L, H, FF, B = 4096, 256, 256, 4, 4, 688, 16
HD = D // H


def rope_tables(t, hd, theta=10000.0):
    inv = theta ** (-torch.arange(0, hd, 2, dtype=torch.float32) / hd)
    ang = torch.arange(t, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)


def rope(x, cos, sin):
    x1, x2 = x[..., : HD // 2], x[..., HD // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.n1 = nn.RMSNorm(D, eps=1e-5)
        self.qkv = nn.Linear(D, 3 * D, bias=False)
        self.o = nn.Linear(D, D, bias=False)
        self.n2 = nn.RMSNorm(D, eps=1e-5)
        self.gate_up = nn.Linear(D, 2 * FF, bias=False)
        self.down = nn.Linear(FF, D, bias=False)

    def forward(self, x, cos, sin, cache=None, pos=0):
        b, t, _ = x.shape
        q, k, v = self.qkv(self.n1(x)).view(b, t, 3, H, HD).permute(2, 0, 3, 1, 4)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        if cache is None:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            kc, vc = cache
            kc[:, :, pos:pos + t] = k
            vc[:, :, pos:pos + t] = v
            a = F.scaled_dot_product_attention(q, kc[:, :, :pos + t], vc[:, :, :pos + t], is_causal=t > 1)
        x = x + self.o(a.transpose(1, 2).reshape(b, t, D))
        g, u = self.gate_up(self.n2(x)).chunk(2, -1)
        return x + self.down(F.silu(g) * u)


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, D)
        self.blocks = nn.ModuleList(Block() for _ in range(L))
        self.norm = nn.RMSNorm(D, eps=1e-5)
        self.head = nn.Linear(D, V, bias=False)
        cos, sin = rope_tables(T, HD)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, idx, caches=None, pos=0):
        t = idx.shape[1]
        cos, sin = self.cos[pos:pos + t], self.sin[pos:pos + t]
        x = self.emb(idx)
        for i, blk in enumerate(self.blocks):
            x = blk(x, cos, sin, None if caches is None else caches[i], pos)
        return self.head(self.norm(x))


def make_opt(model):
    kw = dict(lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    try:
        return torch.optim.AdamW(model.parameters(), fused=True, **kw), "fused"
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(model.parameters(), foreach=True, **kw), "foreach"


def bench_train(args):
    model = GPT()
    opt, kind = make_opt(model)
    step_fn = model
    if args.compile:
        step_fn = torch.compile(model)
    g = torch.Generator().manual_seed(0)
    times = []
    for i in range(args.warmup + args.steps):
        data = torch.randint(0, V, (B, T + 1), generator=g)
        x, y = data[:, :-1], data[:, 1:]
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(step_fn(x).reshape(-1, V), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        dt = time.perf_counter() - t0
        if i >= args.warmup:
            times.append(dt)
    med = statistics.median(times)
    print(json.dumps({"mode": "train", "tokens_per_s": B * T / med, "step_s": med, "optimizer": kind,
                      "compile": args.compile, "threads": torch.get_num_threads(), "torch": torch.__version__}))


@torch.inference_mode()
def bench_generate(args):
    model = GPT().eval()
    n = args.tokens
    rates = []
    for run in range(args.runs + 1):
        caches = [(torch.zeros(1, H, n + 1, HD), torch.zeros(1, H, n + 1, HD)) for _ in range(L)]
        tok = torch.zeros(1, 1, dtype=torch.long)
        t0 = time.perf_counter()
        for pos in range(n):
            logits = model(tok, caches, pos)
            tok = logits[:, -1].argmax(-1, keepdim=True)
        if run > 0:
            rates.append(n / (time.perf_counter() - t0))
    print(json.dumps({"mode": "generate", "tokens_per_s": statistics.median(rates), "runs": rates,
                      "threads": torch.get_num_threads(), "torch": torch.__version__}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["train", "generate"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--tokens", type=int, default=255)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    {"train": bench_train, "generate": bench_generate}[args.mode](args)


if __name__ == "__main__":
    main()
