"""Check and time every Triton kernel on a CUDA GPU, in one command of a few minutes.

    timeout 500 python benchmarks/bench_gpu_kernels.py       # writes benchmarks/results/gpu_kernels.json
    python benchmarks/bench_gpu_kernels.py --cpu-interpret --out /tmp/k.json   # this script, tiny, on CPU

Needs only torch and triton (no install of Composer: it runs from the repository root). Without a CUDA
device (and without --cpu-interpret) it says so and exits 0 without writing anything.

1. checks: each kernel against the chunked PyTorch path run in float64 (`kernel_errors` of
   primitives/ops/triton/verify.py): the output, the final state and every input's gradient; fp32 and bf16;
   T = 1, 100, 1000, 3001 (chunk counts 1, 2, 16, 47 of 64: the chunk-count classes Triton compiles
   separately, lengths that are not multiples of the chunk); with and without an initial state; B 2, H 4,
   head dims 64. Then other head dims (128/128, and 48/96, not powers of two) at T = 1000. A check passes
   when the largest relative error is within the tolerance the auto path uses (verify.TOLERANCE).
2. auto_path: the auto path's first-use check (COMPOSER_TRITON=check) on every kernel, fp32 and bf16, with
   grad: its verdicts, and the warnings of any fallback.
3. timing_ms: forward + backward of output.sum(), B 8, H 4, head dim 64, bf16 and fp32, T = 1K, 4K, 16K:
   Triton vs chunked torch vs causal SDPA; median of timed repetitions (CUDA events) after warm-up, and
   the peak memory allocated (inputs included).

The JSON is rewritten (atomically) after each part, so a run cut short keeps what it measured; past
--budget-s seconds no new work starts. Exit status 1 when a check failed, else 0. With --cpu-interpret the
kernels run under TRITON_INTERPRET=1 on tiny shapes (it tests this script, not the kernels' speed), and the
CPU stands in as the auto path's kernel device; it writes only to --out.
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

if "--cpu-interpret" in sys.argv:  # before anything imports triton
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, machine  # noqa: E402
from primitives.ops import dispatch  # noqa: E402
from primitives.ops.triton import TRITON_AVAILABLE, kernel, verify  # noqa: E402

OPERATORS = list(dispatch.TORCH_FORMS)


@dataclass(frozen=True)
class Plan:
    """Sizes of one run: the full GPU plan, or the tiny interpreter one."""
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
CPU_PLAN = Plan("cpu", 16, 1, 2, (1, 37), (16, 16), ((16, 24),), 37, 1, 2, 16, (64,), 1, 1)
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
        detail = row.get("error") or f"max rel err {row['max_rel_err']:.2e} ({row['worst']})"
        print(f"check {status} {row['operator']:<24} {row['dtype']} T={row['T']:<5} K={row['K']} V={row['V']} "
              f"state={row['initial_state']!s:<5} {detail} [{row['seconds']:.1f}s]", flush=True)
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
                       warnings=fallbacks)
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
                         for backend in ("triton", "torch")}
                triton_ms = entry["triton"].get("ms")
                if triton_ms:
                    if "ms" in entry["torch"]:
                        entry["triton_speedup_vs_torch"] = entry["torch"]["ms"] / triton_ms
                    if "ms" in row["sdpa"]:
                        entry["triton_speedup_vs_sdpa"] = row["sdpa"]["ms"] / triton_ms
                row[operator] = entry
                print(f"time {dtype_name} T={T:<6} {operator:<24} triton {entry['triton'].get('ms', 'error')} ms, "
                      f"torch {entry['torch'].get('ms', 'error')} ms, sdpa {row['sdpa'].get('ms', 'error')} ms",
                      flush=True)
            results.setdefault(dtype_name, {})[str(T)] = row
    return results


def setup(plan: Plan) -> dict:
    import triton

    info = {"triton": triton.__version__, "plan": plan.__dict__, "tolerance": {str(k): v for k, v in
                                                                                verify.TOLERANCE.items()},
            "pass": "forward + backward of output.sum() (checks: a fixed random weighting of output and state)"}
    if plan.device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
    else:
        info["mode"] = "TRITON_INTERPRET=1 on CPU (tests this script; numbers mean nothing)"
    return info


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"machine": machine(), **data}, indent=2, default=str))
    os.replace(tmp, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: benchmarks/results/"
                                                                 "gpu_kernels.json; --cpu-interpret writes only here)")
    parser.add_argument("--budget-s", type=float, default=360.0, help="start no new work after this many seconds")
    parser.add_argument("--cpu-interpret", action="store_true", help="tiny run on CPU under TRITON_INTERPRET=1")
    parser.add_argument("--skip-timing", action="store_true", help="checks and the auto path only")
    args = parser.parse_args()

    if args.cpu_interpret:
        plan = CPU_PLAN
        dispatch.kernel_device = lambda x: True  # the CPU stands in as the auto path's kernel device
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    elif torch.cuda.is_available():
        plan = GPU_PLAN
    else:
        print("bench_gpu_kernels: no CUDA device here; nothing checked, nothing written "
              "(run it on a GPU machine, or with --cpu-interpret to test the script)")
        return 0
    if not TRITON_AVAILABLE:
        print("bench_gpu_kernels: triton is not installed; nothing checked, nothing written")
        return 0
    out = args.out or (None if args.cpu_interpret else RESULTS / "gpu_kernels.json")
    budget = Budget(args.budget_s)
    started = time.monotonic()
    result: dict = {"setup": setup(plan)}

    def save(part: str) -> None:
        result["elapsed_s"] = round(time.monotonic() - started, 1)
        result["budget"] = {"seconds": args.budget_s, "items_skipped": budget.skipped}
        if out is not None:
            write_json(out, result)
        print(f"-- {part} done at {result['elapsed_s']} s" + (f", wrote {out}" if out else ""), flush=True)

    result["checks"] = run_checks(plan, budget)
    failed = [row for row in result["checks"] if not row["ok"]]
    result["summary"] = {"checks": len(result["checks"]), "failed": len(failed)}
    save("checks")
    os.environ[dispatch.TRITON_ENV] = "check"
    result["auto_path"] = run_auto_path(plan, budget)
    result["summary"]["auto_path_fallbacks"] = sum(not row["kernel_used"] for row in result["auto_path"])
    save("auto path")
    if not args.skip_timing:
        result["timing_ms"] = run_timing(plan, budget)
        save("timing")
    for row in failed:
        print(f"FAILED check: {row['operator']} {row['dtype']} T={row['T']} K={row['K']} V={row['V']} "
              f"state={row['initial_state']}: {row.get('error') or row['worst'] + ' ' + str(row['max_rel_err'])}")
    print(f"summary: {result['summary']}, {budget.skipped} items skipped by the budget")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
