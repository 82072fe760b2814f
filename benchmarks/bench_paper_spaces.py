"""How long the Composer-paper search spaces take: the measured cost of one candidate, extrapolated to the
search -> benchmarks/results/paper_spaces.json

For search_spaces/composer_paper.yaml and composer_paper_16.yaml, one representative candidate (alternating
attention/MLP slots, matched to the space's size) is trained on every MAD member at the space's batch size
twice, for `--short` and `--long` steps, on one thread. The CPU time of each run (process time, so other work on
the machine does not inflate it) gives the cost per step (the difference) and the fixed cost (set-up and the
final evaluation). A candidate at the space's budget costs the sum over members of fixed + steps x per step.

- On 2 cores: two trials at a time, so (trials + 1 consensus) x candidate / 2.
- On one GPU (no GPU here, so estimated): tiny models are launch-bound on a GPU. The operators one training
  step dispatches are counted here (forward, backward, optimizer), each costed at 10 us (a CUDA launch plus the
  framework's dispatch), plus the step's FLOPs at 200 TFLOP/s (a fifth of an H200's bf16 peak); trials run one
  at a time, and the fixed cost is taken as on the CPU (the evaluation is a few forward passes; data set-up is
  on the CPU anyway).

    python benchmarks/bench_paper_spaces.py [--short 2] [--long 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPACES = ("composer_paper.yaml", "composer_paper_16.yaml")
LAUNCH_S = 10e-6
GPU_FLOPS = 200e12


def count_ops(spec, task, config) -> int:
    """Operators dispatched by one training step (forward, backward, optimizer)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from composer.training.setup import set_up
    from composer.training.step import train_step

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    state = set_up(spec, task, config, None)
    train_step(state, 1e-3, config.runtime.batch_size, 1.0)          # warm: lazy optimizer state
    with Count():
        train_step(state, 1e-3, config.runtime.batch_size, 1.0)
    return Count.calls


def measure(path: Path, short: int, long: int) -> dict:
    import optuna

    from composer.costs import model_cost
    from composer.search.space_parse import load_space
    from composer.tasks import get_task
    from composer.trainer import TrainConfig, train

    space = load_space(str(path))
    n = space.layers.n_layers
    candidate = space.sample(optuna.trial.FixedTrial({f"layer{i}.op": ("attention", "mlp")[i % 2] for i in range(n)}))
    spec = candidate.spec
    suite = get_task(space.task)
    config = TrainConfig.from_dict(space.train).with_settings(threads=1, eval_every=1 << 62)
    steps = space.train["steps"]
    members, cpu_total, gpu_total = {}, 0.0, 0.0
    train(spec, suite.members[0][1], config=config.with_settings(steps=1))      # one-time imports and set-up
    for label, task in suite.members:
        cpu = []
        for budget in (short, long):
            start = time.process_time()
            train(spec, task, config=config.with_settings(steps=budget))
            cpu.append(time.process_time() - start)
        per_step = (cpu[1] - cpu[0]) / (long - short)
        fixed = max(0.0, cpu[0] - short * per_step)
        ops = count_ops(spec, task, config)
        tokens = config.runtime.batch_size * task.seq_len
        flops = 3 * model_cost(spec, seq_len=task.seq_len).flops_per_token * tokens
        gpu_step = ops * LAUNCH_S + flops / GPU_FLOPS
        members[label] = {"cpu_s_per_step": round(per_step, 4), "cpu_fixed_s": round(fixed, 2), "ops_per_step": ops,
                          "gpu_s_per_step_estimated": round(gpu_step, 5), "tokens_per_step": tokens}
        cpu_total += fixed + steps * per_step
        gpu_total += fixed + steps * gpu_step
        print(f"{path.name} {label:32s} {per_step * 1000:7.1f} ms/step CPU, fixed {fixed:5.1f} s, {ops} ops/step",
              flush=True)
    trials = space.trials + 1
    return {"stripe": " ".join("A" if layer.op == "attention" else "M" for layer in spec.layers),
            "params": model_cost(spec).params, "trials_with_consensus": trials, "steps_per_member": steps,
            "members": members, "candidate_cpu_s": round(cpu_total, 1),
            "candidate_gpu_s_estimated": round(gpu_total, 1),
            "search_2_cores_h": round(trials * cpu_total / 2 / 3600, 2),
            "search_1_gpu_h_estimated": round(trials * gpu_total / 3600, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=2)
    parser.add_argument("--long", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = {"short_steps": args.short, "long_steps": args.long, "launch_s": LAUNCH_S, "gpu_flops": GPU_FLOPS,
              "spaces": {name: measure(ROOT / "search_spaces" / name, args.short, args.long) for name in SPACES}}
    for name, data in result["spaces"].items():
        print(f"{name}: candidate {data['candidate_cpu_s']:.0f} CPU s; search {data['search_2_cores_h']} h on 2 "
              f"cores, ~{data['search_1_gpu_h_estimated']} h on one GPU (estimated)")
    print(write_result("paper_spaces", result))


if __name__ == "__main__":
    main()
