"""Rank transfer on CPU: does the ranking of 6 architectures at ~20K parameters hold at ~250K?

Six architectures (pure attention, two pure linear-time baselines, three hybrids) are fitted by
`scaling.rules.fit_to_params` (stacking the searched block) to three non-embedding sizes spanning 12.5x, and
trained on the `text` task (`--data`, default Tiny Shakespeare with its last tenth validating; context 128)
for 400K tokens each (one fixed token budget: a tokens-per-parameter rule does not fit the CPU time) with two
seeds each, through the ladder machinery (`scaling.ladder.run_ladder`, two worker processes of one thread).
Reported: Spearman, Kendall and pairwise accuracy between the smallest and each larger size's ranking (mean
over seeds), beside the seed-to-seed noise floor at each size, and per-architecture fits of L(N) = E + A N^-alpha.

    .venv/bin/python benchmarks/bench_transfer.py [--quick] [--fresh]

Writes benchmarks/results/transfer.json (and runs/bench_transfer/ with ladder.json and fits.png). About 4
minutes on 2 idle cores; `--quick` (two tiny sizes' worth of steps) checks the plumbing in about a minute.
A second run resumes the ladder (finished trials are kept): `--fresh` discards them to measure again.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import add_data_argument, text_task  # noqa: E402
from scaling.ladder import LocalRunner, run_ladder  # noqa: E402
from scaling.ladder_parse import load_ladder  # noqa: E402

ARCHITECTURES = {
    "attention": {"d_model": 64, "layers": ["attention", "mlp"]},
    "gated_deltanet": {"d_model": 64, "layers": ["gated_deltanet", "mlp"]},
    "mamba2": {"d_model": 64, "layers": ["mamba2", "mlp"]},
    "hybrid_gdn_attn": {"d_model": 64, "layers": ["gated_deltanet", "mlp", "gated_deltanet", "mlp",
                                                  "attention", "mlp"]},
    "hybrid_mamba_attn": {"d_model": 64, "layers": ["mamba2", "mlp", "attention", "mlp"]},
    "hybrid_parallel": {"d_model": 64, "layers": [{"parallel": ["attention", "gated_deltanet"],
                                                   "combine": "mean"}, "mlp"]},
}


def ladder_config(quick: bool, data: str | None) -> dict:
    return {
        "name": "bench_transfer_quick" if quick else "bench_transfer",
        "task": text_task(data, seq_len=128),
        "architectures": ARCHITECTURES,
        "sizes": ["20K", "70K", "250K"],
        "count": "non_embedding",
        "method": "stack",
        "tolerance": 0.05,
        "budget": ({"tokens": 20_000} if quick else
                   {"tokens_per_param": 4, "min_tokens": 400_000, "max_tokens": 400_000}),
        "seeds": [0, 1],
        "train": {"lr": 3e-3, "batch_size": 16, "warmup_steps": 20, "eval_every": 1_000_000},
        "predict_at": "1M",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a plumbing check with tiny budgets")
    parser.add_argument("--fresh", action="store_true", help="discard earlier results of this ladder")
    parser.add_argument("--workers", type=int, default=2)
    add_data_argument(parser)
    args = parser.parse_args()
    ladder = load_ladder(ladder_config(args.quick, args.data))
    runs = Path("runs")
    if args.fresh:
        shutil.rmtree(runs / ladder.name, ignore_errors=True)
    start = time.time()
    result = run_ladder(ladder, runs, LocalRunner(workers=args.workers, threads=1),
                        log=lambda m: print(f"{time.time() - start:7.1f}s {m}", flush=True))
    elapsed = time.time() - start
    trials = result["trials"]
    sizes = {label: sorted({t["n_params"] for t in trials if t["size"] == label})
             for label, _ in ladder.sizes}
    losses = {}
    for t in trials:
        losses.setdefault(t["arch"], {}).setdefault(t["size"], []).append(round(t["metrics"]["val_loss"], 4))
    transfer = result.get("transfer", {})
    smallest, largest = ladder.sizes[0][0], ladder.sizes[-1][0]
    out = {
        "benchmark": "transfer",
        "machine": f"{os.cpu_count()} CPU cores, fp32, {args.workers} worker processes x 1 thread",
        "task": ladder.task,
        "budget": ladder.budget,
        "seeds": ladder.seeds,
        "wall_seconds": round(elapsed, 1),
        "architectures": list(ARCHITECTURES),
        "sizes_non_embedding_params": sizes,
        "size_span": max(sizes[largest]) / min(sizes[smallest]),
        "val_loss": losses,
        "ranking": transfer.get("ranking"),
        "smallest_vs_largest": transfer.get("transfer", {}).get(largest),
        "smallest_vs_each": transfer.get("transfer"),
        "noise_floor": transfer.get("noise_floor"),
        "fits": {a: {k: f[k] for k in ("E", "A", "alpha", "intervals", "rmse", "prediction") if k in f}
                 for a, f in result.get("fits", {}).items()},
        "ladder_json": str(runs / ladder.name / "ladder.json"),
    }
    if not args.quick:
        path = Path(__file__).resolve().parent / "results" / "transfer.json"
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(out, indent=1))
        os.replace(tmp, path)
    print(json.dumps({k: out[k] for k in ("wall_seconds", "ranking", "smallest_vs_largest", "noise_floor")},
                     indent=1))


if __name__ == "__main__":
    main()
