"""Training throughput of a Composer HybridLM vs a plain hand-written PyTorch GPT of the same shape.

Model row: d_model 256, 6 x (attention, MLP), 8 heads, seq 256, batch 16, byte vocabulary (256), pre-norm
LayerNorm, GELU MLP (4x), RoPE, tied embeddings. Forward + backward + AdamW step, measured alternately in
one run. Target: Composer >= 0.95x the plain model.

nanoGPT row (`--nanogpt`): nanoGPT's CPU baby-GPT shape and recipe (4 x (attention, MLP), d_model 128, 4 heads,
seq 64, batch 12, `--nanogpt-steps` steps on Tiny Shakespeare's bytes) as whole processes, paired by round:
`composer train` of the spec against a plain PyTorch loop of the same model written the way nanoGPT's train.py
is (random windows, forward, loss, backward, clip, AdamW, cosine learning rate, the loss read every step; it
imports torch only). Both evaluate once, at the end, on the same 256 validation windows; `composer train` with
its default evaluations (a tenth of the steps apart) is measured beside them. Tokens/s is training tokens per
second of the whole process. nanoGPT itself is not a dependency. Target: Composer >= 1.0x the plain loop.

    python benchmarks/bench_model_vs_gpt.py [--rounds 5 --steps 5] [--nanogpt --nanogpt-rounds 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from common import RESULTS, TINY_SHAKESPEARE, alternate, write_result
from torch import nn

D, LAYERS, HEADS, SEQ, BATCH, VOCAB = 256, 6, 8, 256, 16, 256


@dataclass(frozen=True)
class Shape:
    d_model: int = D
    layers: int = LAYERS
    heads: int = HEADS
    seq: int = SEQ
    vocab: int = VOCAB


# nanoGPT's CPU "baby GPT" recipe (README: 4 layers, 4 heads, width 128, context 64, 12 sequences a step, dropout 0,
# lr 1e-3, betas 0.9/0.99, weight decay 0.1, 100 warmup steps, cosine to 1e-4, clip 1.0), on bytes
BABY = Shape(d_model=128, layers=4, heads=4, seq=64, vocab=256)
BABY_BATCH = 12


class PlainBlock(nn.Module):
    def __init__(self, shape: Shape = Shape()):
        super().__init__()
        D, self.heads = shape.d_model, shape.heads
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.qkv = nn.Linear(D, 3 * D, bias=False)
        self.proj = nn.Linear(D, D, bias=False)
        self.fc = nn.Linear(D, 4 * D, bias=False)
        self.fc_out = nn.Linear(4 * D, D, bias=False)
        h = D // shape.heads
        inv = 10000.0 ** (-torch.arange(h // 2) / (h // 2))
        ang = torch.arange(shape.seq)[:, None] * inv[None]
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)

    def rope(self, x):
        half = x.shape[-1] // 2
        a, b = x[..., :half], x[..., half:]
        return torch.cat([a * self.cos - b * self.sin, a * self.sin + b * self.cos], -1)

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(self.rope(q), self.rope(k), v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, D))
        return x + self.fc_out(F.gelu(self.fc(self.ln2(x))))


class PlainGPT(nn.Module):
    def __init__(self, shape: Shape = Shape()):
        super().__init__()
        self.wte = nn.Embedding(shape.vocab, shape.d_model)
        self.blocks = nn.ModuleList(PlainBlock(shape) for _ in range(shape.layers))
        self.ln_f = nn.LayerNorm(shape.d_model)
        self.head = nn.Linear(shape.d_model, shape.vocab, bias=False)
        self.head.weight = self.wte.weight
        nn.init.normal_(self.wte.weight, std=shape.d_model ** -0.5)    # as HybridLM's (composer/model.py)

    def forward(self, idx):
        x = self.wte(idx)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def spec_text(shape: Shape = Shape()) -> str:
    return f"""
d_model: {shape.d_model}
vocab_size: {shape.vocab}
max_seq_len: {shape.seq}
norm: layernorm
layers:
  - repeat: {shape.layers}
    body:
      - {{op: attention, n_heads: {shape.heads}}}
      - {{op: mlp, kind: gelu}}
"""


SPEC = spec_text()


def train_step(logits_of, opt, x, y):
    def step():
        loss = F.cross_entropy(logits_of(x).view(-1, VOCAB), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def plain_loop(steps: int, threads: int, data: str) -> dict:
    """nanoGPT's training loop, written plainly, on PlainGPT(BABY): the training seconds and the final loss."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    raw = torch.frombuffer(bytearray(Path(data).read_bytes()), dtype=torch.uint8).long()
    cut = int(len(raw) * 0.9)
    train_data, val_data = raw[:cut], raw[cut:]
    model = PlainGPT(BABY)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(0)

    def get_batch():
        ix = torch.randint(len(train_data) - BABY.seq - 1, (BABY_BATCH,), generator=gen)
        x = torch.stack([train_data[i:i + BABY.seq] for i in ix])
        y = torch.stack([train_data[i + 1:i + 1 + BABY.seq] for i in ix])
        return x, y

    def get_lr(it):
        warmup, min_lr = 100, 1e-4
        if it < warmup:
            return 1e-3 * (it + 1) / (warmup + 1)
        ratio = (it - warmup) / max(1, steps - warmup)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (1e-3 - min_lr)

    start = time.perf_counter()
    for it in range(steps):
        for group in opt.param_groups:
            group["lr"] = get_lr(it)
        x, y = get_batch()
        loss = F.cross_entropy(model(x).view(-1, BABY.vocab), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss.item()
    train_s = time.perf_counter() - start
    model.eval()
    windows = min((len(val_data) - 1) // BABY.seq, 256)
    val_x = val_data[:windows * BABY.seq].view(windows, BABY.seq)
    val_y = val_data[1:windows * BABY.seq + 1].view(windows, BABY.seq)
    with torch.no_grad():
        val = sum(F.cross_entropy(model(val_x[i:i + 128]).view(-1, BABY.vocab), val_y[i:i + 128].reshape(-1),
                                  reduction="sum").item() for i in range(0, windows, 128)) / val_y.numel()
    return {"train_s": train_s, "val_loss": val}


def whole_process(cmd: list[str], threads: int) -> dict:
    """Wall seconds and CPU seconds of one process run start to end, and the last JSON line it prints."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "load_1min": round(os.getloadavg()[0], 2),
            "out": json.loads(out.stdout[out.stdout.index("{"):])}


def nanogpt_row(steps: int, rounds: int, threads: int, data: str) -> dict:
    tokens = steps * BABY_BATCH * BABY.seq
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "baby.yaml"
        spec.write_text(spec_text(BABY))
        composer = [sys.executable, "-m", "composer", "train", str(spec), "--task", "text", "--data", data,
                    "--set", "val_fraction=0.1", "seq_len=64", "--steps", str(steps), "--batch-size",
                    str(BABY_BATCH), "--lr", "1e-3", "--betas", "0.9", "0.99", "--weight-decay", "0.1",
                    "--warmup-steps", "100", "--min-lr-ratio", "0.1", "--grad-clip", "1.0", "--threads",
                    str(threads), "--json"]
        commands = {
            "composer": composer + ["--eval-every", str(10 * steps)],
            "plain": [sys.executable, str(Path(__file__).resolve()), "--plain-loop", "--nanogpt-steps", str(steps),
                      "--threads", str(threads), "--data", data],
            "composer_default_eval": composer,
        }
        runs: dict[str, list[dict]] = {name: [] for name in commands}
        for _ in range(rounds):
            for name, cmd in commands.items():
                runs[name].append(whole_process(cmd, threads))
                print(f"nanogpt {name}: {runs[name][-1]['wall_s']:.1f} s wall (load {runs[name][-1]['load_1min']})",
                      flush=True)
    row: dict = {"shape": {"d_model": BABY.d_model, "layers": BABY.layers, "heads": BABY.heads, "seq": BABY.seq,
                           "batch": BABY_BATCH, "vocab": BABY.vocab}, "steps": steps, "threads": threads,
                 "tokens": tokens, "clock": "whole process, wall", "runs": {}}
    for name, samples in runs.items():
        wall = statistics.median(r["wall_s"] for r in samples)
        out = [r["out"] for r in samples]
        val = [o.get("val_loss", o.get("metrics", {}).get("val_loss")) for o in out]
        row["runs"][name] = {"tokens_per_s_whole_process": tokens / wall, "wall_s": [r["wall_s"] for r in samples],
                             "cpu_s": [r["cpu_s"] for r in samples], "load_1min": [r["load_1min"] for r in samples],
                             "val_loss": val}
    for name in ("composer", "composer_default_eval"):
        paired = [p["wall_s"] / c["wall_s"] for p, c in zip(runs["plain"], runs[name])]
        row[f"ratio_{name}_over_plain_paired_median"] = statistics.median(paired)
    row["target"] = ">= 1.0 (composer over plain)"
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--nanogpt", action="store_true", help="also the nanoGPT-shaped whole-process row")
    parser.add_argument("--nanogpt-only", action="store_true", help="only the nanoGPT row (keeps the model row)")
    parser.add_argument("--nanogpt-steps", type=int, default=600)
    parser.add_argument("--nanogpt-rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", default=str(TINY_SHAKESPEARE))
    parser.add_argument("--plain-loop", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_loop:
        print(json.dumps(plain_loop(args.nanogpt_steps, args.threads, args.data)))
        return
    if args.nanogpt or args.nanogpt_only:
        nanogpt = nanogpt_row(args.nanogpt_steps, args.nanogpt_rounds, args.threads, args.data)
        print(f"nanoGPT shape: composer / plain {nanogpt['ratio_composer_over_plain_paired_median']:.3f} "
              f"(default evaluations {nanogpt['ratio_composer_default_eval_over_plain_paired_median']:.3f})")
    if args.nanogpt_only:
        previous = json.loads((RESULTS / "model_vs_gpt.json").read_text())
        previous.pop("machine", None)
        print(write_result("model_vs_gpt", {**previous, "nanogpt_shape": nanogpt}))
        return
    from composer import build_model, load_spec

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
        **({"nanogpt_shape": nanogpt} if args.nanogpt else {}),
    }
    assert n_ours == n_plain, (n_ours, n_plain)
    path = write_result("model_vs_gpt", result)
    print(f"composer {result['tokens_per_s']['composer']:.0f} tok/s, plain {result['tokens_per_s']['plain']:.0f} "
          f"tok/s, ratio {result['ratio_composer_over_plain']:.3f} ({math.floor(result['composer_gflops_per_s'])} "
          f"GFLOP/s) -> {path}")


if __name__ == "__main__":
    main()
