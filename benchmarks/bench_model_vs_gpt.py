"""Training throughput of a Composer HybridLM vs a plain hand-written PyTorch GPT of the same shape.

Shape: d_model 256, 6 x (attention, MLP), 8 heads, seq 256, batch 16, byte vocabulary (256), pre-norm
LayerNorm, GELU MLP (4x), RoPE, tied embeddings. Forward + backward + AdamW step, measured alternately in
one run. Target: Composer >= 0.95x the plain model.

    python benchmarks/bench_model_vs_gpt.py [--rounds 5 --steps 5]
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch
import torch.nn.functional as F
from common import alternate, write_result
from torch import nn

from composer import build_model, load_spec

D, LAYERS, HEADS, SEQ, BATCH, VOCAB = 256, 6, 8, 256, 16, 256


class PlainBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.qkv = nn.Linear(D, 3 * D, bias=False)
        self.proj = nn.Linear(D, D, bias=False)
        self.fc = nn.Linear(D, 4 * D, bias=False)
        self.fc_out = nn.Linear(4 * D, D, bias=False)
        h = D // HEADS
        inv = 10000.0 ** (-torch.arange(h // 2) / (h // 2))
        ang = torch.arange(SEQ)[:, None] * inv[None]
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)

    def rope(self, x):
        half = x.shape[-1] // 2
        a, b = x[..., :half], x[..., half:]
        return torch.cat([a * self.cos - b * self.sin, a * self.sin + b * self.cos], -1)

    def forward(self, x):
        B, T, _ = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(self.rope(q), self.rope(k), v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, D))
        return x + self.fc_out(F.gelu(self.fc(self.ln2(x))))


class PlainGPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(VOCAB, D)
        self.blocks = nn.ModuleList(PlainBlock() for _ in range(LAYERS))
        self.ln_f = nn.LayerNorm(D)
        self.head = nn.Linear(D, VOCAB, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, idx):
        x = self.wte(idx)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


SPEC = f"""
d_model: {D}
vocab_size: {VOCAB}
max_seq_len: {SEQ}
norm: layernorm
layers:
  - repeat: {LAYERS}
    body:
      - {{op: attention, n_heads: {HEADS}}}
      - {{op: mlp, kind: gelu}}
"""


def train_step(logits_of, opt, x, y):
    def step():
        loss = F.cross_entropy(logits_of(x).view(-1, VOCAB), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randint(0, VOCAB, (BATCH, SEQ))
    y = torch.randint(0, VOCAB, (BATCH, SEQ))
    ours, plain = build_model(load_spec(SPEC)), PlainGPT()
    n_ours = sum(p.numel() for p in ours.parameters())
    n_plain = sum(p.numel() for p in plain.parameters())
    fns = {
        "composer": train_step(lambda x: ours(x).logits, torch.optim.AdamW(ours.parameters(), lr=1e-4), x, y),
        "plain": train_step(plain, torch.optim.AdamW(plain.parameters(), lr=1e-4), x, y),
    }
    times = alternate(fns, rounds=args.rounds, steps=args.steps)
    tokens = BATCH * SEQ
    med = {k: statistics.median(v) for k, v in times.items()}
    flops = 6 * n_ours * tokens + 12 * LAYERS * D * SEQ * tokens / 2  # dense + causal attention (fwd+bwd)
    result = {
        "shape": {"d_model": D, "layers": LAYERS, "heads": HEADS, "seq": SEQ, "batch": BATCH, "vocab": VOCAB},
        "params": {"composer": n_ours, "plain": n_plain},
        "tokens_per_s": {k: tokens / v for k, v in med.items()},
        "seconds_per_step": times,
        "ratio_composer_over_plain": med["plain"] / med["composer"],
        "composer_gflops_per_s": flops / med["composer"] / 1e9,
        "target": ">= 0.95",
    }
    assert n_ours == n_plain, (n_ours, n_plain)
    path = write_result("model_vs_gpt", result)
    print(f"composer {result['tokens_per_s']['composer']:.0f} tok/s, plain {result['tokens_per_s']['plain']:.0f} "
          f"tok/s, ratio {result['ratio_composer_over_plain']:.3f} ({math.floor(result['composer_gflops_per_s'])} "
          f"GFLOP/s) -> {path}")


if __name__ == "__main__":
    main()
