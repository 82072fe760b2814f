"""Wall time of one `mad` suite evaluation (six tasks at their baselines, one model each) of a 4-layer
width-128 model on this machine's CPU cores.

The published protocol (200 epochs of 12,800 examples at batch 128 = 20,000 steps per task, times a 3 x 2
learning-rate x weight-decay grid, and 66 settings with the difficulty variants) is far beyond 2 CPU cores.
So the suite runs at a stated reduced budget (`--steps` per task, batch 128), the measured per-task training
time is extrapolated linearly in steps to the published budget, and both are written to
benchmarks/results/mad.json.

    .venv/bin/python benchmarks/bench_mad.py [--steps 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import write_result  # noqa: E402
from composer.tasks import mad_suite  # noqa: E402
from composer.trainer import Budget, train  # noqa: E402

SPEC = {"d_model": 128, "max_seq_len": 256, "layers": ["attention", "mlp", "attention", "mlp"]}
PUBLISHED_STEPS = 200 * 12_800 // 128          # 200 epochs at batch 128
GRID = 6                                       # lr {1e-4, 5e-4, 1e-3} x weight decay {0, 0.1}
SETTINGS_WITH_VARIANTS = 66


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    suite = mad_suite()
    start = time.perf_counter()
    result = train(SPEC, suite, Budget(steps=args.steps), batch_size=128, threads=args.threads)
    wall = time.perf_counter() - start
    per_task = {label: m["train_time_s"] / max(1, m["steps"]) for label, m in result.members.items()}
    extrapolated = sum(per_task.values()) * PUBLISHED_STEPS
    for label, seconds in per_task.items():
        print(f"{label:40s} {seconds * 1000:8.1f} ms/step")
    data = {
        "spec": SPEC, "threads": args.threads, "steps_per_task": args.steps, "batch_size": 128,
        "wall_s_reduced_suite": wall, "seconds_per_step": per_task,
        "accuracy_reduced": {k: v for k, v in result.metrics.items() if k.startswith("accuracy")},
        "published_steps_per_task": PUBLISHED_STEPS,
        "extrapolated_training_s_baselines_one_lr": extrapolated,
        "extrapolated_training_s_full_protocol": extrapolated * GRID * SETTINGS_WITH_VARIANTS / len(per_task),
        "note": "reduced budget measured; the published budget is extrapolated linearly in steps (training only, "
                "evaluation excluded); the full-protocol figure scales the baseline mean by 66 settings x 6 "
                "(lr, wd) runs, ignoring that longer-sequence variants cost more per step",
    }
    path = write_result("mad", data)
    print(f"reduced suite {wall:.1f} s; published baselines (one lr) ~{extrapolated / 3600:.1f} h -> {path}")


if __name__ == "__main__":
    main()
