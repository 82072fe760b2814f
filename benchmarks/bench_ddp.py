"""Data-parallel training on this machine: tokens/s of one worker vs two (Ray Train, gloo) and the communication
share of a two-worker step.

    timeout 420 python benchmarks/bench_ddp.py            # ~4-6 min on an idle 2-core machine: results/ddp.json
    python benchmarks/bench_ddp.py --smoke                # a few steps of a tiny model, writes nothing

Throughput: the same model, task and global batch trained by `composer.train` (the text task, Tiny Shakespeare
when present) as (a) one process on one thread, (b) one process on two threads (the other use of two CPUs) and
(c) two data-parallel workers on one thread each; tokens/s is the run's own (training time only, not Ray's start).

Communication share: inside a two-worker Ray Train run, each worker times its step (forward, backward, the
all-reduce of the gradients, AdamW) with DDP's gradient sync and with it off (`no_sync`), alternating;
share = 1 - without / with: the part of a step that synchronising the workers adds. Timings on a shared machine
are indicative: the load average before and after is recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import RESULTS, add_data_argument, machine, text_task  # noqa: E402

FULL = {"spec": {"d_model": 256, "layers": [{"op": "attention", "n_heads": 4}, "mlp", "gla", "mlp",
                                            {"op": "attention", "n_heads": 4}, "mlp"]},
        "seq_len": 128, "batch_size": 16, "steps": 40, "comm_steps": 8, "comm_rounds": 3}
SMOKE = {"spec": {"d_model": 32, "layers": [{"op": "attention", "n_heads": 2}, "mlp"]},
         "seq_len": 32, "batch_size": 4, "steps": 4, "comm_steps": 2, "comm_rounds": 1}


def throughput(plan: dict, data: str | None, threads: int, workers: int) -> dict:
    from composer.trainer import train

    task = text_task(data, seq_len=plan["seq_len"])
    result = train(plan["spec"], task.pop("name"), task_params=task, steps=plan["steps"],
                   batch_size=plan["batch_size"], eval_every=plan["steps"], eval_batch_size=plan["batch_size"],
                   warmup_steps=1, threads=threads, workers=workers, memory_check=False)
    m = result.metrics
    return {"threads": threads, "workers": workers, "tokens_per_s": m["tokens_per_s"],
            "train_time_s": m["train_time_s"], "step": result.step, "params": m["params"]}


def comm_loop(config: dict) -> None:
    """Ray Train's loop per worker: time steps with and without DDP's gradient all-reduce."""
    import ray.train
    import torch
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel

    from composer.model import build_model
    from composer.spec_parse import load_spec

    torch.set_num_threads(1)
    torch.manual_seed(0)
    spec = load_spec({**config["spec"], "vocab_size": 256, "max_seq_len": config["seq_len"]})
    model = build_model(spec)
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rows = config["batch_size"] // ray.train.get_context().get_world_size()
    tokens = torch.randint(0, 256, (rows, config["seq_len"] + 1))

    def step(sync: bool) -> None:
        optimizer.zero_grad(set_to_none=True)
        with contextlib.nullcontext() if sync else ddp.no_sync():
            logits = ddp(tokens[:, :-1]).logits
            F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
        optimizer.step()

    times = {"with_sync_s": [], "without_sync_s": []}
    step(True)
    step(False)
    for _ in range(config["comm_rounds"]):
        for sync, key in ((True, "with_sync_s"), (False, "without_sync_s")):
            torch.distributed.barrier()
            start = time.perf_counter()
            for _ in range(config["comm_steps"]):
                step(sync)
            times[key].append((time.perf_counter() - start) / config["comm_steps"])
    # Ray Train V2 keeps the metrics of a report that carries a checkpoint: rank 0's, a folder with them in it
    metrics = {key: min(values) for key, values in times.items()}
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "metrics.json").write_text(json.dumps(metrics))
        lead = ray.train.get_context().get_world_rank() == 0
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder) if lead else None)


def communication(plan: dict) -> dict:
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    storage = tempfile.mkdtemp(prefix="bench-ddp-")
    try:
        trainer = TorchTrainer(comm_loop, train_loop_config=plan, torch_config=TorchConfig(backend="gloo"),
                               scaling_config=ray.train.ScalingConfig(num_workers=2, use_gpu=False,
                                                                      resources_per_worker={"CPU": 1.0}),
                               run_config=ray.train.RunConfig(name="communication", storage_path=storage))
        with trainer.fit().checkpoint.as_directory() as folder:
            metrics = json.loads((Path(folder) / "metrics.json").read_text())
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    with_sync, without = metrics["with_sync_s"], metrics["without_sync_s"]
    return {"with_sync_s": with_sync, "without_sync_s": without,
            "communication_share": max(0.0, 1 - without / with_sync)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a few steps of a tiny model; writes nothing")
    parser.add_argument("--out", type=Path, default=None, help="the JSON file (default results/ddp.json; --smoke: "
                        "none)")
    add_data_argument(parser)
    args = parser.parse_args()
    if (os.cpu_count() or 1) < 2:
        print("bench_ddp needs 2 CPUs (two workers, one thread each)")
        return
    plan = SMOKE if args.smoke else FULL
    out = args.out or (None if args.smoke else RESULTS / "ddp.json")
    from composer.atomic import write_json
    from composer.ray_cluster import start_ray

    start_ray(None, verbose=False)
    report = {"machine": machine(), "plan": plan, "load_before": os.getloadavg(), "runs": []}

    def save() -> None:
        if out is not None:
            write_json(out, report)

    for threads, workers in ((1, 1), (2, 1), (1, 2)):
        row = throughput(plan, args.data, threads, workers)
        report["runs"].append(row)
        print(json.dumps(row), flush=True)
        save()
    report["communication"] = communication(plan)
    print(json.dumps(report["communication"]), flush=True)
    one = report["runs"][0]["tokens_per_s"]
    report["speedup_2_workers_vs_1"] = report["runs"][2]["tokens_per_s"] / one if one else None
    report["speedup_2_threads_vs_1"] = report["runs"][1]["tokens_per_s"] / one if one else None
    report["load_after"] = os.getloadavg()
    save()
    print(f"2 workers vs 1: x{report['speedup_2_workers_vs_1']:.2f} tokens/s; 2 threads vs 1: "
          f"x{report['speedup_2_threads_vs_1']:.2f}; communication share of a 2-worker step "
          f"{100 * report['communication']['communication_share']:.1f}%" + (f"; wrote {out}" if out else ""))


if __name__ == "__main__":
    main()
