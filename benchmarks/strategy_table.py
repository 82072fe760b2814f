"""The tabular benchmark's table: every architecture of one small space trained once, cached as JSON.

The space (TABLE_SPACE) is the paper's 6 slots x {attention, MLP} = 64 architectures, on character-level
Tiny Shakespeare (the last 10% is validation), d_model 48, 200 steps of 16 x 64 tokens, two seeds; the
objective is the mean validation loss. The 8 stacks of depth 3 are in the table too, because the incremental
search (3 slots a stage) trains them in its first stage. Each candidate is built by the space
itself (`SearchSpace.sample` on a fixed trial) and trained like a search trial (`train_candidate`'s settings:
seed = space seed + repeat), so a replay's lookup by `arch_id` finds exactly what a real search would train.

The table is written after every architecture (atomically), so an interrupted run continues where it stopped.

    python benchmarks/bench_strategies.py --table-only      # ~15 CPU-minutes on one core
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TABLE_PATH = ROOT / "benchmarks" / "results" / "strategies_table.json"
OPS = ("attention", "mlp")
DEPTHS = (3, 6)
TABLE_SPACE = """\
name: bench_attn_mlp
description: 6 slots x {attention, mlp} on Tiny Shakespeare (the tabular strategy benchmark)
base: {d_model: 48, defaults: {attention: {n_heads: 4}}}
layers:
  n_layers: 6
  slot: {op: {choice: [attention, mlp]}}
task: {name: text, params: {data: DATA, seq_len: 64, val_fraction: 0.1, max_val_windows: 64}}
train: {steps: 200, lr: 3.0e-3, batch_size: 16, warmup_steps: 20, eval_every: 200}
objectives: [{metric: val_loss, mode: min}]
strategy: {name: random}
scheduler: none
seed: 0
repeats: 2
trials: 64
"""


def table_space_yaml() -> str:
    return TABLE_SPACE.replace("DATA", str((ROOT.parent / "shared" / "data" / "tinyshakespeare.txt").resolve()))


def at_depth(space: Any, depth: int) -> Any:
    """The space cut to its first `depth` slots (what an incremental stage of that depth searches)."""
    return space.with_overrides(layers=dataclasses.replace(space.layers, n_layers=depth,
                                                           slots=space.layers.slots[:depth]))


def candidate(space: Any, ops: tuple[str, ...]) -> Any:
    """The candidate the space builds for these slot choices (a fixed Optuna trial)."""
    import optuna

    params = {f"layer{i}.op": op for i, op in enumerate(ops)}
    return at_depth(space, len(ops)).sample(optuna.trial.FixedTrial(params))


def load_table(path: Path = TABLE_PATH) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def build_table(path: Path = TABLE_PATH, log: Any = print) -> dict[str, Any]:
    """Train every architecture not yet in the table at `path`; returns the table."""
    import torch

    from composer.atomic import write_json
    from composer.canonical_form import arch_id, stripe
    from composer.costs import model_cost
    from composer.search.space_parse import load_space
    from composer.tasks import get_task
    from composer.trainer import TrainConfig, train

    torch.set_num_threads(1)
    space = load_space(table_space_yaml())
    table = load_table(path) or {"space": TABLE_SPACE, "objective": "val_loss", "mode": "min",
                                 "seeds": [space.seed + r for r in range(space.repeats)], "archs": {}}
    task = get_task(space.task)
    config = TrainConfig.from_dict(space.train)
    for depth in DEPTHS:
        for ops in itertools.product(OPS, repeat=depth):
            spec = candidate(space, ops).spec
            key = arch_id(spec)
            if key in table["archs"]:
                continue
            runs = []
            for seed in table["seeds"]:
                start = time.process_time()
                result = train(spec, task, config=config.with_settings(seed=seed, threads=1))
                runs.append({"seed": seed, "status": result.status, "val_loss": result.metrics.get("val_loss"),
                             "cpu_s": round(time.process_time() - start, 2)})
            losses = [r["val_loss"] for r in runs]
            table["archs"][key] = {"ops": list(ops), "depth": depth, "stripe": stripe(spec),
                                   "params": model_cost(spec, seq_len=64).params, "runs": runs,
                                   "val_loss": sum(losses) / len(losses)}
            write_json(path, table)
            total = sum(len(OPS) ** d for d in DEPTHS)
            log(f"[{len(table['archs'])}/{total}] {stripe(spec)}: {table['archs'][key]['val_loss']:.4f} "
                f"({sum(r['cpu_s'] for r in runs):.1f} CPU s)")
    return table
