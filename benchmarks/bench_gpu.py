"""The one GPU check: every CUDA path against the PyTorch reference, the mixers against SDPA, a 50M hybrid
trained on bf16, and a two-worker DDP step when two GPUs exist; in at most ~8 minutes on one GPU.

    pip install -e ".[cuda]"                          # flash-linear-attention's kernels (fla-core)
    timeout 540 python benchmarks/bench_gpu.py        # writes benchmarks/results/gpu.json as it goes

Without a CUDA device it says so and exits 0 without writing anything. Without fla installed the kernel checks
are recorded as skipped and the rest runs (the PyTorch forms, the training run).

1. checks: each fla kernel, through Composer's adapter (primitives/ops/kernels/fla_adapter.py), against the
   chunked PyTorch path run in float64 (`kernel_errors` of primitives/ops/kernels/verify.py): the output, the
   final state and every input's gradient; fp32 and bf16; T = 1, 100, 1000, 3001 (chunk counts 1, 2, 16, 47 of
   64, lengths that are not multiples of the chunk); with and without an initial state; B 2, H 4, head dims 64;
   then head dims 128/128 and 48/96 at T = 1000. A check passes within the auto path's tolerance.
2. auto_path: the auto path's first-use check (COMPOSER_KERNELS=check) on every kernel, fp32 and bf16, with
   grad: its verdicts, and the warnings of any fallback.
3. timing_ms: forward + backward of output.sum(), B 8, H 4, head dim 64, bf16 and fp32, T = 1K, 4K, 16K: fla vs
   chunked torch vs causal SDPA; median of timed repetitions (CUDA events) after warm-up, and the peak memory.
4. train: a ~50M-parameter hybrid (attention, gla, mamba2, gated_deltanet, each with an MLP) trained for 200
   steps by `composer.train` on CUDA (bf16 autocast, fp32 master weights, fused AdamW): tokens/s, MFU against
   the GPU's dense bf16 peak, the loss, and whether any kernel fell back.
5. ddp: with two or more GPUs, the same model on two data-parallel workers (Ray Train, nccl) for 20 steps.

The JSON is rewritten (atomically) after each part, so a run cut short keeps what it measured; each part has a
share of --budget-s and starts no new item past it. Exit status 1 when a check failed, else 0.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, machine  # noqa: E402
from primitives.ops import dispatch  # noqa: E402
from primitives.ops.kernels import FLA_AVAILABLE, kernel, verify  # noqa: E402

OPERATORS = list(dispatch.TORCH_FORMS)


@dataclass(frozen=True)
class Plan:
    """Sizes of the kernel checks and timings."""
    device: str
    chunk_size: int
    check_batch: int
    check_heads: int
    check_lengths: tuple[int, ...]
    check_head_dims: tuple[int, int]
    extra_head_dims: tuple[tuple[int, int], ...]
    extra_length: int
    time_batch: int
    time_heads: int
    time_head_dim: int
    time_lengths: tuple[int, ...]
    warmup: int
    reps: int


GPU_PLAN = Plan("cuda", dispatch.CHUNK_SIZE, 2, 4, (1, 100, 1000, 3001), (64, 64), ((128, 128), (48, 96)), 1000,
                8, 4, 64, (1024, 4096, 16384), 3, 10)
# the training run: ~50M parameters (embedding included), T 1024, 16 sequences a step
TRAIN_SPEC = {"d_model": 768, "layers": [{"op": "attention", "n_heads": 12}, "mlp", "gla", "mlp", "mamba2", "mlp",
                                         {"op": "attention", "n_heads": 12}, "mlp", "gated_deltanet", "mlp",
                                         "mamba2", "mlp", {"op": "attention", "n_heads": 12}, "mlp"]}
TRAIN = {"seq_len": 1024, "batch_size": 16, "steps": 200, "ddp_steps": 20}
# dense bf16 peak FLOP/s by GPU name (MFU's denominator)
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "L4": 121e12}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class Budget:
    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds
        self.skipped = 0

    def spent(self) -> bool:
        if time.monotonic() > self.deadline:
            self.skipped += 1
            return True
        return False


def one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())[:400]}"


def check_row(plan: Plan, operator: str, dtype_name: str, T: int, head_dims: tuple[int, int],
              with_state: bool) -> dict:
    dtype = DTYPES[dtype_name]
    row = {"operator": operator, "dtype": dtype_name, "T": T, "K": head_dims[0], "V": head_dims[1],
           "initial_state": with_state, "tolerance": verify.TOLERANCE[dtype]}
    n_inputs = len(verify.OPERATOR_INPUTS[operator])
    tensors, state = verify.sample_inputs(operator, plan.check_batch, T, plan.check_heads, head_dims,
                                          [dtype] * n_inputs, plan.device, dtype if with_state else None, seed=T)
    reason = dispatch.kernel_unsupported(operator, tuple(tensors))
    if reason is not None:                  # no fla kernel for it: the PyTorch form serves such calls
        row.update(ok=True, unsupported=reason)
        return row
    start = time.perf_counter()
    try:
        errors = verify.kernel_errors(operator, kernel(operator), dispatch.TORCH_FORMS[operator], tensors, state,
                                      None, True, plan.chunk_size, grad=True)
    except Exception as err:  # a compile or launch error is a result here
        row.update(ok=False, error=one_line(err))
    else:
        worst = max(errors, key=errors.__getitem__)
        row.update(ok=errors[worst] <= row["tolerance"], max_rel_err=errors[worst], worst=worst, rel_err=errors)
    row["seconds"] = round(time.perf_counter() - start, 3)  # the first of a variant includes its compile
    return row


def run_checks(plan: Plan, budget: Budget) -> list[dict]:
    todo = [(op, dt, T, plan.check_head_dims, s) for dt in DTYPES for op in OPERATORS
            for T in plan.check_lengths for s in (False, True)]
    todo += [(op, "fp32", plan.extra_length, dims, True) for dims in plan.extra_head_dims for op in OPERATORS]
    rows = []
    for args in todo:
        if budget.spent():
            continue
        row = check_row(plan, *args)
        rows.append(row)
        status = "ok " if row["ok"] else "FAIL"
        detail = row.get("unsupported") or row.get("error") or f"max rel err {row['max_rel_err']:.2e} ({row['worst']})"
        print(f"check {status} {row['operator']:<24} {row['dtype']} T={row['T']:<5} K={row['K']} V={row['V']} "
              f"state={row['initial_state']!s:<5} {detail} [{row.get('seconds', 0):.1f}s]", flush=True)
    return rows


def run_auto_path(plan: Plan, budget: Budget) -> list[dict]:
    """Each kernel through the public operator with backend="auto" and grad: the first-use check's verdict."""
    rows = []
    for dtype_name, dtype in DTYPES.items():
        for operator in OPERATORS:
            if budget.spent():
                continue
            n_inputs = len(verify.OPERATOR_INPUTS[operator])
            tensors, state = verify.sample_inputs(operator, plan.check_batch, 3 * plan.chunk_size + 5,
                                                  plan.check_heads, plan.check_head_dims, [dtype] * n_inputs,
                                                  plan.device, dtype)
            for t in tensors:
                t.requires_grad_()
            before = set(verify.VERDICTS)
            row = {"operator": operator, "dtype": dtype_name}
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    o, _ = getattr(dispatch, operator)(*tensors, initial_state=state, chunk_size=plan.chunk_size)
                    o.float().sum().backward()
                except Exception as err:
                    row["error"] = one_line(err)
            new = [verify.VERDICTS[c] for c in set(verify.VERDICTS) - before]
            fallbacks = [str(w.message) for w in caught if issubclass(w.category, verify.KernelFallbackWarning)]
            row.update(kernel_used=bool(new) and all(v.ok for v in new), verdicts=[v.reason for v in new],
                       warnings=fallbacks, unsupported=dispatch.kernel_unsupported(operator, tuple(tensors)))
            rows.append(row)
            print(f"auto {operator:<24} {dtype_name} kernel used: {row['kernel_used']} {row['verdicts']}", flush=True)
    return rows


def time_ms(fn: Callable[[], None], plan: Plan) -> tuple[float, float | None]:
    """Median milliseconds of `fn` over plan.reps after plan.warmup calls, and the peak MiB allocated (CUDA)."""
    for _ in range(plan.warmup):
        fn()
    cuda = plan.device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        events = []
        for _ in range(plan.reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            events.append((start, end))
        torch.cuda.synchronize()
        times = [start.elapsed_time(end) for start, end in events]
        return statistics.median(times), torch.cuda.max_memory_allocated() / 2**20
    times = []
    for _ in range(plan.reps):
        start_s = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start_s) * 1e3)
    return statistics.median(times), None


def operator_step(plan: Plan, operator: str, dtype: torch.dtype, T: int, backend: str) -> Callable[[], None]:
    D = plan.time_head_dim
    n_inputs = len(verify.OPERATOR_INPUTS[operator])
    tensors, _ = verify.sample_inputs(operator, plan.time_batch, T, plan.time_heads, (D, D), [dtype] * n_inputs,
                                      plan.device, None)
    # log gates in [-0.1, 0] per step, as bench_ops.py: in [-1, 0] chunk_gla's torch form takes its slow path
    tensors = [(t * 0.1 if name == "g" else t).detach().requires_grad_()
               for name, t in zip(verify.OPERATOR_INPUTS[operator], tensors)]
    fn = getattr(dispatch, operator)

    def run():
        for t in tensors:
            t.grad = None
        fn(*tensors, chunk_size=plan.chunk_size, backend=backend)[0].float().sum().backward()
    return run


def sdpa_step(plan: Plan, dtype: torch.dtype, T: int) -> Callable[[], None]:
    shape = (plan.time_batch, plan.time_heads, T, plan.time_head_dim)
    q, k, v = (torch.randn(shape, device=plan.device, dtype=dtype, requires_grad=True) for _ in range(3))

    def run():
        for t in (q, k, v):
            t.grad = None
        F.scaled_dot_product_attention(q, k, v, is_causal=True).float().sum().backward()
    return run


def measure(make: Callable[[], Callable[[], None]], plan: Plan) -> dict:
    try:
        ms, peak = time_ms(make(), plan)
    except Exception as err:  # e.g. out of memory: recorded, the rest goes on
        if plan.device == "cuda":
            torch.cuda.empty_cache()
        return {"error": one_line(err)}
    return {"ms": ms, "peak_mib": peak}


def run_timing(plan: Plan, budget: Budget) -> dict:
    results: dict = {}
    for dtype_name, dtype in DTYPES.items():
        for T in plan.time_lengths:
            if budget.spent():
                continue
            row = {"sdpa": measure(lambda d=dtype, t=T: sdpa_step(plan, d, t), plan)}
            for operator in OPERATORS:
                entry = {backend: measure(lambda o=operator, d=dtype, t=T, b=backend: operator_step(plan, o, d, t, b),
                                          plan)
                         for backend in (("fla", "torch") if FLA_AVAILABLE else ("torch",))}
                fla_ms = entry.get("fla", {}).get("ms")
                if fla_ms:
                    if "ms" in entry["torch"]:
                        entry["fla_speedup_vs_torch"] = entry["torch"]["ms"] / fla_ms
                    if "ms" in row["sdpa"]:
                        entry["fla_speedup_vs_sdpa"] = row["sdpa"]["ms"] / fla_ms
                row[operator] = entry
                print(f"time {dtype_name} T={T:<6} {operator:<24} fla {entry.get('fla', {}).get('ms', '-')} ms, "
                      f"torch {entry['torch'].get('ms', 'error')} ms, sdpa {row['sdpa'].get('ms', 'error')} ms",
                      flush=True)
            results.setdefault(dtype_name, {})[str(T)] = row
    return results


def peak_flops() -> float | None:
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in PEAK_BF16.items() if key in name), None)


def run_training(budget: Budget, workers: int = 1) -> dict:
    """TRAIN_SPEC for TRAIN's steps (20 with workers) on CUDA through composer.train; tokens/s, MFU, fallbacks."""
    from composer.trainer import train

    if budget.spent():
        return {"skipped": "time"}
    steps = TRAIN["steps"] if workers == 1 else TRAIN["ddp_steps"]
    started = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = train(TRAIN_SPEC, "text", task_params={"seq_len": TRAIN["seq_len"]}, steps=steps,
                           batch_size=TRAIN["batch_size"], eval_every=steps, eval_batch_size=8, warmup_steps=10,
                           lr=1e-3, device="cuda", workers=workers, log_every=50)
        except Exception as err:
            return {"error": one_line(err)}
    m = result.metrics
    peak = peak_flops()
    flops = m["tokens_per_s"] * m["train_flops_per_token"] * (1 if workers == 1 else 1 / workers)
    row = {"workers": workers, "status": result.status, "steps": result.step, "params": m["params"],
           "tokens_per_s": m["tokens_per_s"], "train_flops_per_token": m["train_flops_per_token"],
           "mfu": flops / peak if peak else None, "val_loss": m.get("val_loss"), "train_loss": m.get("train_loss"),
           "peak_memory_bytes": m.get("peak_memory_bytes"), "wall_s": round(time.monotonic() - started, 1),
           "kernel_fallbacks": [str(w.message) for w in caught if issubclass(w.category, verify.KernelFallbackWarning)]}
    print(f"train workers={workers}: {row['tokens_per_s']:,.0f} tok/s, MFU {row['mfu']}, loss {row['train_loss']}, "
          f"{len(row['kernel_fallbacks'])} fallbacks", flush=True)
    return row


def setup(plan: Plan) -> dict:
    import triton

    info = {"triton": triton.__version__, "fla": _fla_version(), "plan": plan.__dict__,
            "tolerance": {str(k): v for k, v in verify.TOLERANCE.items()}, "train": {**TRAIN, "spec": TRAIN_SPEC},
            "pass": "forward + backward of output.sum() (checks: a fixed random weighting of output and state)",
            "gpu": torch.cuda.get_device_name(), "gpus": torch.cuda.device_count(),
            "capability": ".".join(map(str, torch.cuda.get_device_capability()))}
    return info


def _fla_version() -> str | None:
    if not FLA_AVAILABLE:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fla-core")
    except PackageNotFoundError:
        return "unknown"


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"machine": machine(), **data}, indent=2, default=str))
    os.replace(tmp, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: benchmarks/results/gpu.json)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="the whole run's seconds: checks and the auto "
                        "path get 40%%, timing 20%%, training 30%%, DDP 10%%")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here; nothing checked, nothing written (run it on a GPU machine)")
        return 0
    plan = GPU_PLAN
    out = args.out or RESULTS / "gpu.json"
    started = time.monotonic()
    result: dict = {"setup": setup(plan), "summary": {}}

    def save(part: str) -> None:
        result["elapsed_s"] = round(time.monotonic() - started, 1)
        write_json(out, result)
        print(f"-- {part} done at {result['elapsed_s']} s, wrote {out}", flush=True)

    def share(fraction: float) -> Budget:
        return Budget(max(0.0, fraction * args.budget_s - (time.monotonic() - started)))

    failed: list[dict] = []
    if FLA_AVAILABLE:
        checks = share(0.35)
        result["checks"] = run_checks(plan, checks)
        failed = [row for row in result["checks"] if not row["ok"]]
        result["summary"].update(checks=len(result["checks"]), failed=len(failed), skipped=checks.skipped)
        save("checks")
        os.environ[dispatch.KERNELS_ENV] = "check"
        result["auto_path"] = run_auto_path(plan, share(0.4))
        result["summary"]["auto_path_fallbacks"] = sum(not row["kernel_used"] and not row["unsupported"]
                                                       for row in result["auto_path"])
        save("auto path")
    else:
        result["checks"] = "skipped: fla is not installed (pip install -e .[cuda])"
    result["timing_ms"] = run_timing(plan, share(0.6))
    save("timing")
    result["train"] = run_training(share(0.9))
    save("train")
    if torch.cuda.device_count() >= 2:
        result["ddp"] = run_training(share(1.0), workers=2)
    else:
        result["ddp"] = "skipped: one GPU"
    save("ddp")
    for row in failed:
        print(f"FAILED check: {row['operator']} {row['dtype']} T={row['T']} K={row['K']} V={row['V']} "
              f"state={row['initial_state']}: {row.get('error') or row['worst'] + ' ' + str(row['max_rel_err'])}")
    print(f"summary: {result['summary']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
