"""Training tokens/s of `composer.trainer.train` against a bare PyTorch loop over the same HybridLM.

Both sides build a fresh model, run the same number of AdamW steps with gradient clipping on batches of the
same shape, and are timed over the steps only (train() reports its training time without evaluation or model
building). They alternate for several rounds in one process; the ratio of medians is reported.

    .venv/bin/python benchmarks/bench_trainer.py [--steps 40] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import add_data_argument, text_task, write_result  # noqa: E402
from composer import build_model  # noqa: E402
from composer.tasks import get_task  # noqa: E402
from composer.trainer import Budget, fit_spec, make_optimizer, train  # noqa: E402

SPEC = {"d_model": 128, "max_seq_len": 256, "layers": ["attention", "mlp", "retnet", "mlp"]}


def bare_loop(spec, task, steps: int, batch_size: int) -> float:
    """Tokens/s of a plain loop: pre-generated batch, forward, loss, backward, clip, step."""
    torch.manual_seed(0)
    model = build_model(spec)
    opt = make_optimizer(model, 1e-3, 0.1)
    x, y = task.train_batch(0, batch_size)
    start = time.perf_counter()
    for _ in range(steps):
        logits = model(x).logits
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return steps * batch_size * task.seq_len / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    add_data_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task_config = text_task(args.data, seq_len=256)
    task = get_task(**task_config)
    spec = fit_spec(SPEC, task)
    trainer, bare = [], []
    for _ in range(args.rounds):
        result = train(spec, task, Budget(steps=args.steps), batch_size=args.batch_size, eval_every=10**9,
                       threads=args.threads)
        trainer.append(result.metrics["tokens_per_s"])
        bare.append(bare_loop(spec, task, args.steps, args.batch_size))
        print(f"train() {trainer[-1]:,.0f} tok/s   bare loop {bare[-1]:,.0f} tok/s", flush=True)
    ratio = statistics.median(trainer) / statistics.median(bare)
    path = write_result("trainer", {
        "spec": SPEC, "task": task_config, "steps": args.steps, "batch_size": args.batch_size,
        "threads": args.threads, "trainer_tokens_per_s": trainer, "bare_tokens_per_s": bare,
        "ratio_of_medians": ratio, "target": ">= 0.95",
    })
    print(f"ratio {ratio:.3f} -> {path}")


if __name__ == "__main__":
    main()
