"""Search overhead and ASHA savings -> benchmarks/results/search.json.

1. Per-trial overhead of Ray Tune + Optuna: the same candidates trained by `search` (one trial at a time)
   and by calling `train` directly in this process; the difference per trial is the fixed overhead, stated
   as a percentage of a 30 s trial and of the measured trial. Ray's start-up is measured separately.
   `--text-overhead`: the same on the discovery proxy (text, d_model 16, six slots), read from the trials
   themselves: per trial, the search's wall time less the trainer's own training seconds (result.json
   `train_time_s`), i.e. trial start-up (task, model, memory check), evaluation, checkpoint and result writes
   and Tune's scheduling; Ray's start-up amortised over the trials is added, and the whole stated as a
   percentage of a 30 s trial.
2. ASHA vs full-budget training on the quickstart space with the same random candidates (same sampler
   seed): total training steps spent, and the best accuracy each finds.

    python benchmarks/bench_search.py [--asha-trials 10]
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result  # noqa: E402

OVERHEAD_SPACE = """\
name: overhead
base: {d_model: 32, defaults: {attention: {n_heads: 2}, gla: {n_heads: 2}}}
layers:
  n_layers: {choice: [1, 2]}
  slot: {op: {choice: [attention, gla, short_conv]}, channel: mlp}
task: {name: mqar, params: {vocab_size: 64, seq_len: 32, kv_pairs: 4, num_train: 2000, num_test: 100}}
train: {steps: STEPS, lr: 3.0e-3, batch_size: 8, eval_every: 20}
objectives: [{metric: accuracy, mode: max}]
strategy: {name: random}
scheduler: none
resources: {cpus_per_trial: 1, max_concurrent: 1}
trials: TRIALS
"""


def rows_of(run_dir: Path) -> list[dict]:
    with open(run_dir / "leaderboard.csv", newline="") as f:
        return list(csv.DictReader(f))


def overhead(trials: int, steps: int) -> dict:
    import ray
    import yaml

    from composer.search import search
    from composer.search.runner import start_ray
    from composer.trainer import train

    start = time.perf_counter()
    start_ray(None, verbose=False)
    ray_start = time.perf_counter() - start
    text = OVERHEAD_SPACE.replace("STEPS", str(steps)).replace("TRIALS", str(trials))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = search(text, runs_dir=tmp, progress=lambda state: None)
        searched = time.perf_counter() - start
        specs = [yaml.safe_load((Path(tmp) / "overhead" / "trials" / str(r["trial"]) / "spec.yaml").read_text())
                 for r in result.rows if not r.get("reused")]
    ray.shutdown()
    space = yaml.safe_load(text)
    start = time.perf_counter()
    for spec in specs:          # the candidates the search trained (not the reused duplicates), trained directly
        train(spec, "mqar", steps, lr=3e-3, batch_size=8, eval_every=20, threads=1,
              task_params=space["task"]["params"])
    direct = time.perf_counter() - start
    per_trial_overhead = (searched - direct) / trials
    reused = sum(1 for r in result.rows if r.get("reused"))
    return {"trials": trials, "steps": steps, "ray_start_s": round(ray_start, 2),
            "search_wall_s": round(searched, 2), "direct_train_s": round(direct, 2), "reused_trials": reused,
            "direct_per_trial_s": round(direct / trials, 3),
            "overhead_per_trial_s": round(per_trial_overhead, 3),
            "overhead_pct_of_measured_trial": round(100 * per_trial_overhead / (direct / trials), 1),
            "overhead_pct_at_30s_trial": round(100 * per_trial_overhead / 30.0, 2)}


TEXT_SPACE = """\
name: text_overhead
base: {d_model: 16, vocab_size: 256, max_seq_len: 64}
layers:
  n_layers: 6
  slot: {op: {choice: [attention, mamba2, gated_deltanet, gla, short_conv]}, channel: mlp}
task: {name: text, params: {data: DATA, val_fraction: 0.1, seq_len: 64}}
train: {steps: STEPS, lr: 3.0e-3, batch_size: 16, warmup_steps: 20, eval_every: 1000000000}
objectives: [{metric: val_loss, mode: min}]
strategy: {name: random}
scheduler: none
resources: {cpus_per_trial: 1, max_concurrent: 1}
trials: TRIALS
"""


def text_overhead(trials: int, steps: int) -> dict:
    import json
    import os

    import ray

    from benchmarks.common import TINY_SHAKESPEARE
    from composer.search import search
    from composer.search.runner import start_ray

    load = os.getloadavg()[0]
    start = time.perf_counter()
    start_ray(None, verbose=False)
    ray_start = time.perf_counter() - start
    text = TEXT_SPACE.replace("STEPS", str(steps)).replace("TRIALS", str(trials)).replace(
        "DATA", str(TINY_SHAKESPEARE))
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu = time.perf_counter(), time.process_time()
        result = search(text, runs_dir=tmp, progress=lambda state: None)
        searched, driver_cpu = time.perf_counter() - start, time.process_time() - cpu
        trained = [json.loads((Path(tmp) / "text_overhead" / "trials" / str(r["trial"]) / "result.json").read_text())
                   for r in result.rows]
    ray.shutdown()
    train_s = sum(r.get("train_time_s") or 0.0 for r in trained)
    per_trial = (searched - train_s) / len(trained)
    with_ray = per_trial + ray_start / len(trained)
    return {"trials": len(trained), "steps": steps, "ray_start_s": round(ray_start, 2),
            "search_wall_s": round(searched, 2), "train_time_s_total": round(train_s, 2),
            "train_s_per_trial": round(train_s / len(trained), 2), "overhead_per_trial_s": round(per_trial, 3),
            "overhead_per_trial_with_ray_start_s": round(with_ray, 3),
            "overhead_pct_at_30s_trial": round(100 * with_ray / 30.0, 2),
            "driver_cpu_s": round(driver_cpu, 2),
            "driver_cpu_pct_of_search_wall": round(100 * driver_cpu / searched, 1),
            "load_1min_start_end": [round(load, 2), round(os.getloadavg()[0], 2)]}


def asha_savings(trials: int) -> dict:
    import ray

    from composer.search import search
    from composer.search.space_parse import load_space

    root = Path(__file__).resolve().parents[1]
    space = load_space(str(root / "search_spaces" / "quickstart.yaml"))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, scheduler in (("asha", space.scheduler), ("full_budget", {"name": "none"})):
            variant = space.with_overrides(scheduler=scheduler, strategy={"name": "random"}, trials=trials)
            variant.data = {**variant.data, "scheduler": scheduler, "strategy": {"name": "random"}}
            start = time.perf_counter()
            result = search(variant, run_dir=Path(tmp) / label, progress=lambda state: None)
            wall = time.perf_counter() - start
            trained = [r for r in result.rows if not r.get("reused")]
            out[label] = {"wall_s": round(wall, 1), "steps_trained": sum(int(r.get("step") or 0) for r in trained),
                          "best_accuracy": result.best_row.get("accuracy") if result.best_row else None,
                          "best_stripe": result.best_row.get("stripe") if result.best_row else None,
                          "counts": result.summary["counts"]}
    ray.shutdown()
    out["steps_saved_pct"] = round(100 * (1 - out["asha"]["steps_trained"] / out["full_budget"]["steps_trained"]), 1)
    out["wall_saved_pct"] = round(100 * (1 - out["asha"]["wall_s"] / out["full_budget"]["wall_s"]), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overhead-trials", type=int, default=8)
    parser.add_argument("--overhead-steps", type=int, default=60)
    parser.add_argument("--asha-trials", type=int, default=10)
    parser.add_argument("--text-overhead", action="store_true", help="also the per-trial overhead on the text proxy")
    parser.add_argument("--text-overhead-only", action="store_true",
                        help="only the text-proxy overhead, merged into the existing search.json")
    parser.add_argument("--text-trials", type=int, default=6)
    parser.add_argument("--text-steps", type=int, default=200)
    args = parser.parse_args()
    if args.text_overhead or args.text_overhead_only:
        text = text_overhead(args.text_trials, args.text_steps)
        print(text, flush=True)
    if args.text_overhead_only:
        import json

        from benchmarks.common import RESULTS

        previous = json.loads((RESULTS / "search.json").read_text())
        previous.pop("machine", None)
        print(write_result("search", {**previous, "text_overhead": text}))
        return
    result = {"overhead": overhead(args.overhead_trials, args.overhead_steps)}
    if args.text_overhead:
        result["text_overhead"] = text
    print(result["overhead"], flush=True)
    result["asha_vs_full_budget"] = asha_savings(args.asha_trials)
    print(result["asha_vs_full_budget"], flush=True)
    print(write_result("search", result))


if __name__ == "__main__":
    main()
