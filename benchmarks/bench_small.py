"""How near the machine's fp32 peak the small models a search trains run: achieved GFLOP/s (the exact cost model's
training FLOPs per token x tokens per CPU second) as a fraction of the measured fp32 matmul peak of one core.

Models: the discovery space's proxy (search_spaces/discovery.yaml: d_model 16, 6 slots of mixer + MLP, text,
seq 64, batch 16) for three slot fillings (the transformer, the search's winner, one of each mixer), and each
fitted to 10x its non-embedding parameters (scaling.rules.fit_to_params, as confirm does). Each trains
`--steps` steps with one torch thread through the trainer's own set-up and step (composer/training/), timed by
this process's CPU time over the steps only (steadier than wall time on a shared machine).

`--base DIR` also runs every model on another checkout (e.g. `git archive <commit> | tar -x -C DIR`), in
alternating rounds with this one (separate processes, paired by round): the before/after of a change. `--layout`
adds the aggregate wall-clock tokens/s of two one-thread trainings at once against one two-thread training
(what cpus_per_trial 1 vs 2 gives a search on two cores). `--step-ab N` times the trainer's step with its fused
AdamW and multi-tensor clipping against torch's per-tensor forms, step by step in one process (the steadiest
before/after on a loaded machine). `--breakdown` splits the step into batch, forward, backward, clipping and
optimizer for one model per mixer (six slots of that mixer + MLP, and MLP alone) at the proxy width, the models
alternating step by step in one process: where a proxy trial's time goes. `--compile [MODEL ...]` measures
torch.compile: its first step (the compile) and its steps against eager. `--batch-sweep` trains the proxies to the
end of their token budget at several batch sizes, learning rates (`--sweep-lrs`) and seeds: quality per token
against tokens/s.

    .venv/bin/python benchmarks/bench_small.py [--steps 60 --rounds 3 --base /tmp/base --layout --batch-sweep]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "tinyshakespeare.txt"
SEQ, BATCH, PROXY_D = 64, 16, 16
FILLINGS = {  # six slots of (mixer + mlp)
    "transformer": ["attention"] * 6,
    "winner": ["short_conv", "short_conv", "gated_deltanet", "short_conv", "gated_deltanet", "short_conv"],
    "mixed": ["attention", "mamba2", "gated_deltanet", "gla", "short_conv", "attention"],
}


def proxy_spec(filling: str) -> dict[str, Any]:
    layers = [item for op in FILLINGS[filling] for item in (op, "mlp")]
    return {"d_model": PROXY_D, "vocab_size": 256, "max_seq_len": SEQ, "layers": layers}


def model_spec(model: str) -> dict[str, Any]:
    """`<filling>` (the proxy) or `<filling>@10x` (fitted to 10x its non-embedding parameters)."""
    filling, _, size = model.partition("@")
    spec = proxy_spec(filling)
    if not size:
        return spec
    from composer.spec_parse import load_spec
    from scaling.rules import fit_to_params, param_count

    fitted = fit_to_params(load_spec(spec), int(size.rstrip("x")) * param_count(load_spec(spec)))
    return fitted.to_dict()


def text_task():
    from composer.tasks import get_task

    params = {"data": str(DATA)} if DATA.is_file() else {}
    return get_task("text", val_fraction=0.1, seq_len=SEQ, **params)


def fp32_peak(seconds: float = 3.0) -> float:
    """GFLOP/s of one thread's best fp32 matmul (sizes 256-2048), by CPU time."""
    import torch

    torch.set_num_threads(1)
    best = 0.0
    for n in (256, 512, 1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        reps = max(1, int(2e9 / (2 * n ** 3)))
        start = time.process_time()
        while time.process_time() - start < seconds / 4:
            t = time.process_time()
            for _ in range(reps):
                a @ b
            best = max(best, 2 * n ** 3 * reps / (time.process_time() - t) / 1e9)
    return best


def worker(model: str, steps: int, batch_size: int, threads: int, compile: bool = False) -> dict[str, Any]:
    """Train `model` `steps` steps (after 5 untimed ones) with the checkout on sys.path; CPU and wall seconds.
    With `compile`, the model is torch.compile'd and the first step's wall and CPU seconds (with the compiler's
    worker processes) are reported apart."""
    import resource

    import torch

    from composer.costs import model_cost
    from composer.spec_parse import load_spec
    from composer.training.config import TrainConfig
    from composer.training.setup import set_up
    from composer.training.step import train_step

    torch.set_num_threads(threads)
    spec = model_spec(model)
    task = text_task()
    config = TrainConfig.from_dict({"steps": steps + 5, "batch_size": batch_size, "lr": 3e-3, "threads": threads,
                                     "compile": compile})
    state = set_up(spec, task, config, None)
    first = {}
    for i in range(5):
        wall, cpu = time.perf_counter(), time.process_time()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        train_step(state, 3e-3, batch_size, 1.0)
        if i == 0 and compile:
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            first = {"first_step_wall_s": time.perf_counter() - wall, "first_step_cpu_s": time.process_time() - cpu
                     + (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)}
    cpu, wall = time.process_time(), time.perf_counter()
    losses = [train_step(state, 3e-3, batch_size, 1.0) for _ in range(steps)]
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    costs = model_cost(load_spec(spec), seq_len=SEQ)
    return {"cpu_s": cpu, "wall_s": wall, "tokens": steps * batch_size * SEQ, "last_loss": losses[-1],
            "d_model": spec["d_model"], "non_embedding_params": costs.non_embedding_params,
            "train_flops_per_token": costs.train_flops_per_token, **first}


def compile_check(model: str, steps: int) -> dict[str, Any]:
    """torch.compile (inductor's CPU backend) against eager on one model: the compile's cost and the step's gain."""
    eager = run_worker(HERE.parent, model, steps)
    compiled = run_worker(HERE.parent, model, steps, compile=True)
    out = {"model": model, "eager_ms_per_step": 1e3 * eager["cpu_s"] / steps,
           "compiled_ms_per_step": 1e3 * compiled["cpu_s"] / steps,
           "first_step_wall_s": compiled["first_step_wall_s"], "first_step_cpu_s": compiled["first_step_cpu_s"],
           "load_1min": load()}
    out["speedup"] = out["eager_ms_per_step"] / out["compiled_ms_per_step"]
    gain = 1e-3 * (out["eager_ms_per_step"] - out["compiled_ms_per_step"])
    out["steps_to_repay_compile"] = round(out["first_step_cpu_s"] / gain) if gain > 0 else None
    print(f"compile {model}: {out['eager_ms_per_step']:.1f} -> {out['compiled_ms_per_step']:.1f} ms/step, first step "
          f"{out['first_step_wall_s']:.0f} s wall (load {load()})", flush=True)
    return out


def run_worker(tree: Path, model: str, steps: int, batch_size: int = BATCH, threads: int = 1,
               compile: bool = False) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", model, "--steps", str(steps),
                          "--batch-size", str(batch_size), "--threads", str(threads),
                          *(["--compile"] if compile else [])],
                         env=env, cwd=str(tree), capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def load() -> float:
    return round(os.getloadavg()[0], 2)


def measure(trees: dict[str, Path], models: list[str], steps: int, rounds: int, peak: float) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for model in models:
        samples: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        for _ in range(rounds):
            for name, tree in trees.items():
                samples[name].append({**run_worker(tree, model, steps), "load_1min": load()})
        row: dict[str, Any] = {}
        for name, runs in samples.items():
            cpu = statistics.median(r["tokens"] / r["cpu_s"] for r in runs)
            first = runs[0]
            gflops = first["train_flops_per_token"] * cpu / 1e9
            row[name] = {"tokens_per_cpu_s": round(cpu), "gflops_per_s": round(gflops, 2),
                         "fraction_of_peak": round(gflops / peak, 4),
                         "tokens_per_wall_s": round(statistics.median(r["tokens"] / r["wall_s"] for r in runs)),
                         "runs": runs}
        if "base" in row:
            ratios = [b["cpu_s"] / a["cpu_s"] for a, b in zip(samples["current"], samples["base"])]
            row["speedup_paired_median"] = round(statistics.median(ratios), 3)
        info = samples["current"][0]
        rows[model] = {"d_model": info["d_model"], "non_embedding_params": info["non_embedding_params"],
                       "train_flops_per_token": info["train_flops_per_token"], **row}
        summary = ", ".join(f"{n} {row[n]['tokens_per_cpu_s']:,} tok/CPU-s ({row[n]['fraction_of_peak']:.1%} of peak)"
                            for n in samples)
        extra = f", speedup {row['speedup_paired_median']}x" if "base" in row else ""
        print(f"{model:16s} d{info['d_model']:<3d} {info['non_embedding_params']:>7,} params: {summary}{extra} "
              f"(load {load()})", flush=True)
    return rows


def layout(tree: Path, model: str, steps: int) -> dict[str, Any]:
    """Aggregate tokens per wall second: two one-thread trainings at once vs one two-thread training."""
    out: dict[str, Any] = {"model": model, "load_1min_before": load()}
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", model, "--steps", str(steps), "--threads", "1"]
    procs = [subprocess.Popen(cmd, env=env, cwd=str(tree), stdout=subprocess.PIPE, text=True) for _ in range(2)]
    results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    out["two_trials_one_thread"] = {"tokens_per_wall_s_total": round(sum(r["tokens"] / r["wall_s"] for r in results)),
                                    "elapsed_s": round(time.perf_counter() - start, 1)}
    one = run_worker(tree, model, steps, threads=2)
    out["one_trial_two_threads"] = {"tokens_per_wall_s_total": round(one["tokens"] / one["wall_s"])}
    out["load_1min_after"] = load()
    print(f"layout {model}: 2 x 1 thread {out['two_trials_one_thread']['tokens_per_wall_s_total']:,} tok/s, "
          f"1 x 2 threads {out['one_trial_two_threads']['tokens_per_wall_s_total']:,} tok/s (load {load()})",
          flush=True)
    return out


def step_ab(model: str, steps: int) -> dict[str, Any]:
    """The trainer's step before and after its fused AdamW and multi-tensor clipping, alternating step by step in
    one process on two copies of one model (the same batches): CPU ms per step, median over the steps."""
    import torch
    import torch.nn.functional as F

    from composer import build_model
    from composer.training.setup import make_optimizer
    from composer.training.step import clip_grad_norm

    torch.set_num_threads(1)
    task = text_task()
    torch.manual_seed(0)
    models = {"before": build_model(model_spec(model)), "after": build_model(model_spec(model))}
    models["before"].load_state_dict(models["after"].state_dict())
    optimizers = {"after": make_optimizer(models["after"], 3e-3, 0.1)}
    groups = [{"params": list(g["params"]), "weight_decay": g["weight_decay"]}
              for g in make_optimizer(models["before"], 3e-3, 0.1).param_groups]
    optimizers["before"] = torch.optim.AdamW(groups, lr=3e-3, betas=(0.9, 0.95), fused=False)
    clips = {"before": torch.nn.utils.clip_grad_norm_, "after": clip_grad_norm}
    times: dict[str, list[float]] = {"before": [], "after": []}
    for i in range(steps + 4):
        x, y = task.train_batch(i, BATCH)
        for name in ("before", "after") if i % 2 else ("after", "before"):
            start = time.process_time()
            loss = F.cross_entropy(models[name](x).logits.flatten(0, 1), y.reshape(-1))
            optimizers[name].zero_grad(set_to_none=True)
            loss.backward()
            clips[name](models[name].parameters(), 1.0)
            loss.item()
            optimizers[name].step()
            if i >= 4:
                times[name].append(time.process_time() - start)
    before, after = (statistics.median(times[n]) * 1e3 for n in ("before", "after"))
    out = {"model": model, "before_ms": round(before, 2), "after_ms": round(after, 2),
           "speedup": round(before / after, 3), "load_1min": load()}
    print(f"step a/b {model}: {before:.2f} -> {after:.2f} ms/step ({before / after:.3f}x, load {load()})", flush=True)
    return out


BREAKDOWN_OPS = ("attention", "mamba2", "gated_deltanet", "gla", "short_conv", None)   # None: the MLPs alone
STEP_PARTS = ("batch", "forward", "backward", "clip", "optimizer")


def breakdown(steps: int) -> list[dict[str, Any]]:
    """CPU ms of each part of the trainer's step (median over `steps`) for six slots of one mixer + MLP at the
    proxy width, all models alternating step by step in one process (so a loaded machine slows them alike)."""
    import torch
    import torch.nn.functional as F

    from composer import build_model
    from composer.training.setup import make_optimizer
    from composer.training.step import clip_grad_norm

    torch.set_num_threads(1)
    task = text_task()
    names = [op or "mlp_only" for op in BREAKDOWN_OPS]
    models = {}
    for op, name in zip(BREAKDOWN_OPS, names):
        layers = [item for _ in range(6) for item in ((op, "mlp") if op else ("mlp",))]
        models[name] = build_model({"d_model": PROXY_D, "vocab_size": 256, "max_seq_len": SEQ, "layers": layers})
    optimizers = {name: make_optimizer(model, 3e-3, 0.1) for name, model in models.items()}
    times: dict[str, dict[str, list[float]]] = {name: {part: [] for part in STEP_PARTS} for name in names}
    for i in range(steps + 3):
        for name in names if i % 2 else names[::-1]:
            model, optimizer = models[name], optimizers[name]
            marks = [time.process_time()]
            x, y = task.train_batch(i, BATCH)
            marks.append(time.process_time())
            loss = F.cross_entropy(model(x).logits.flatten(0, 1), y.reshape(-1))
            marks.append(time.process_time())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            marks.append(time.process_time())
            clip_grad_norm(model.parameters(), 1.0)
            loss.item()
            marks.append(time.process_time())
            optimizer.step()
            marks.append(time.process_time())
            if i >= 3:
                for part, start, end in zip(STEP_PARTS, marks, marks[1:]):
                    times[name][part].append(end - start)
    rows = []
    for name in names:
        parts = {part: round(statistics.median(values) * 1e3, 3) for part, values in times[name].items()}
        rows.append({"model": name, "ms_per_step": round(sum(parts.values()), 2), "ms": parts, "load_1min": load()})
        print(f"breakdown {name:15s} {rows[-1]['ms_per_step']:6.2f} ms/step: "
              + ", ".join(f"{part} {ms:.2f}" for part, ms in parts.items()), flush=True)
    return rows


def sweep_worker(model: str, batch_size: int, lr: float, seed: int, tokens: int) -> dict[str, Any]:
    import torch

    from composer.trainer import train

    torch.set_num_threads(1)
    cpu = time.process_time()
    result = train(model_spec(model), text_task(), {"tokens": tokens}, lr=lr, batch_size=batch_size,
                   warmup_steps=20, eval_every=10**9, seed=seed, threads=1)
    return {"val_loss": result.metrics["val_loss"], "steps": result.step, "cpu_s": time.process_time() - cpu,
            "tokens_per_s": result.metrics["tokens_per_s"]}


def batch_sweep(fillings: list[str], batches: list[int], lrs: list[float], seeds: int,
                tokens: int) -> dict[str, Any]:
    """Each filling at each batch size and learning rate (a larger batch takes fewer steps over the same tokens,
    so it is only fairly judged at its own best lr), `seeds` seeds each."""
    out: dict[str, Any] = {"tokens": tokens, "seeds": seeds, "rows": []}
    for filling in fillings:
        for batch_size, lr in ((b, lr) for b in batches for lr in lrs):
            runs = [{**sweep_worker(filling, batch_size, lr, seed, tokens), "load_1min": load()}
                    for seed in range(seeds)]
            losses = [r["val_loss"] for r in runs]
            row = {"filling": filling, "batch_size": batch_size, "lr": lr, "val_loss_mean": statistics.mean(losses),
                   "val_loss_sd": statistics.stdev(losses) if len(losses) > 1 else None,
                   "tokens_per_s_median": statistics.median(r["tokens_per_s"] for r in runs), "runs": runs}
            out["rows"].append(row)
            print(f"batch {filling} {batch_size} lr {lr:g}: val_loss {row['val_loss_mean']:.4f} "
                  f"(sd {row['val_loss_sd'] or 0:.4f}), {row['tokens_per_s_median']:,.0f} tok/s (load {load()})",
                  flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=[f"{f}{s}" for s in ("", "@10x") for f in FILLINGS])
    parser.add_argument("--base", type=Path, help="another checkout, run in alternating rounds (before/after)")
    parser.add_argument("--step-ab", type=int, default=0, metavar="STEPS",
                        help="also the trainer step before/after in one process, alternating step by step")
    parser.add_argument("--breakdown", type=int, default=0, metavar="STEPS",
                        help="the step's parts (batch, forward, backward, clip, optimizer) per mixer, proxy width")
    parser.add_argument("--compile", nargs="*", metavar="MODEL",
                        help="torch.compile vs eager on these models (default mixed): compile time and step gain")
    parser.add_argument("--layout", action="store_true", help="2 trials x 1 thread vs 1 trial x 2 threads")
    parser.add_argument("--batch-sweep", action="store_true", help="quality per token against batch size and lr")
    parser.add_argument("--sweep-seeds", type=int, default=2)
    parser.add_argument("--sweep-lrs", type=float, nargs="+", default=[3e-3], help="learning rates of the batch sweep")
    parser.add_argument("--sweep-batches", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--sweep-fillings", nargs="+", default=["transformer", "winner"], metavar="MODEL",
                        help="models of the batch sweep: a filling (the proxy) or FILLING@Nx")
    parser.add_argument("--sweep-tokens", type=int, default=512_000, help="tokens each sweep run trains on")
    parser.add_argument("--out", default="small", help="results file name under benchmarks/results/")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=BATCH, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        compiled = args.compile is not None
        print(json.dumps(worker(args.worker, args.steps, args.batch_size, args.threads, compiled)))
        return
    sys.path.insert(0, str(HERE))
    from common import write_result

    current = HERE.parent
    trees = {"current": current, **({"base": args.base.resolve()} if args.base else {})}
    result: dict[str, Any] = {"benchmark": "bench_small", "steps": args.steps, "rounds": args.rounds, "seq_len": SEQ,
                              "batch_size": BATCH, "threads_per_run": 1, "clock": "process CPU time over the steps",
                              "base": str(args.base) if args.base else None, "load_1min_start": load(),
                              "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}
    result["fp32_peak_gflops_per_core"] = round(fp32_peak(), 1)
    print(f"fp32 matmul peak, one thread: {result['fp32_peak_gflops_per_core']} GFLOP/s (load {load()})", flush=True)
    if args.rounds:
        result["models"] = measure(trees, args.models, args.steps, args.rounds, result["fp32_peak_gflops_per_core"])
        write_result(args.out, result)       # each part is kept as soon as it is measured
    if args.step_ab:
        result["step_ab"] = [step_ab(model, args.step_ab) for model in args.models]
        write_result(args.out, result)
    if args.breakdown:
        result["breakdown"] = breakdown(args.breakdown)
        write_result(args.out, result)
    if args.compile is not None:
        result["compile"] = [compile_check(model, args.steps) for model in args.compile or ["mixed"]]
        write_result(args.out, result)
    if args.layout:
        result["layout"] = [layout(current, model, args.steps) for model in ("mixed", "mixed@10x")]
        write_result(args.out, result)
    if args.batch_sweep:
        result["batch_sweep"] = batch_sweep(args.sweep_fillings, args.sweep_batches, args.sweep_lrs,
                                          args.sweep_seeds, args.sweep_tokens)
    result["load_1min_end"] = load()
    print(f"-> {write_result(args.out, result)}")


if __name__ == "__main__":
    main()
