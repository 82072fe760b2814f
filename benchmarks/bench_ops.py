"""Speed and memory of the sequence operators: naive loop vs chunked torch vs causal SDPA.

    python benchmarks/bench_ops.py            # CPU: writes benchmarks/results/ops.json
    python benchmarks/bench_ops.py --cuda     # also Triton vs chunked torch on a CUDA device

Time: forward + backward (sum of the output), B=8, H=4, head dim 64, fp32, median over rounds that
alternate between the contenders (so a busy machine slows them alike). The naive loop runs at the full
B, H, but for T > 1024 only over its first 1024 steps, scaled by T / 1024: every step of the loop does the
same work, so its time is linear in T (the JSON says which entries are scaled).

Memory: each measurement runs in a fresh subprocess, which builds the inputs, resets the kernel's
peak-RSS counter (/proc/self/clear_refs), runs one forward + backward and reads the peak (VmHWM) minus
the RSS before: the extra peak memory of the operator (activations, workspace, gradients).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import alternate, write_result  # noqa: E402
from primitives import ops  # noqa: E402

# gla_strong_decay: chunk_gla with log gates uniform in [-20, 0] per step, so every chunk's decay range is too
# wide for the one-matmul split and the operator takes its halving path (its worst case)
OPS = ["simple_gla", "gla", "gla_strong_decay", "delta_rule", "gated_delta_rule"]
B, H, D = 8, 4, 64


def operator(op: str, form: str):
    """`form` is "chunk" or "naive"."""
    return getattr(ops, f"{form}_{op.removesuffix('_strong_decay')}")


def make_inputs(op: str, batch: int, heads: int, T: int, device: str = "cpu") -> list[torch.Tensor]:
    q, k, v = (torch.randn(batch, T, heads, D, device=device) for _ in range(3))
    if "delta" in op:
        k = F.normalize(k, dim=-1)
    gates = {
        "simple_gla": [-0.1 * torch.rand(batch, T, heads, device=device)],
        "gla": [-0.1 * torch.rand(batch, T, heads, D, device=device)],
        "gla_strong_decay": [-20 * torch.rand(batch, T, heads, D, device=device)],
        "delta_rule": [torch.rand(batch, T, heads, device=device)],
        "gated_delta_rule": [-0.1 * torch.rand(batch, T, heads, device=device),
                             torch.rand(batch, T, heads, device=device)],
    }[op]
    return [x.requires_grad_() for x in (q, k, v, *gates)]


def step(fn, inputs: list[torch.Tensor], **kwargs):
    def run():
        for x in inputs:
            x.grad = None
        fn(*inputs, **kwargs)[0].sum().backward()
    return run


def sdpa_step(T: int, batch: int = B, heads: int = H, device: str = "cpu"):
    q, k, v = (torch.randn(batch, heads, T, D, device=device, requires_grad=True) for _ in range(3))

    def run():
        F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
    return run


def time_once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


NAIVE_MAX_STEPS = 1024


def bench_time(lengths: list[int]) -> dict:
    results = {}
    for T in lengths:
        rounds = 3 if T <= 1024 else 2
        naive_T = min(T, NAIVE_MAX_STEPS)
        sdpa = statistics.median(alternate({"sdpa": sdpa_step(T)}, rounds=rounds, steps=1, warmup=1)["sdpa"])
        row = {"sdpa_s": sdpa, "naive_timed_steps": naive_T}
        for op in OPS:
            chunk_fn = step(operator(op, "chunk"), make_inputs(op, B, H, T))
            naive_fn = step(operator(op, "naive"), make_inputs(op, B, H, naive_T))
            if T <= NAIVE_MAX_STEPS:
                times = alternate({"chunked": chunk_fn, "naive": naive_fn}, rounds=rounds, steps=1, warmup=1)
            else:  # the long naive loop once, unwarmed; the chunked form warmed up like SDPA
                times = {**alternate({"naive": naive_fn}, rounds=1, steps=1, warmup=0),
                         **alternate({"chunked": chunk_fn}, rounds=rounds, steps=1, warmup=1)}
            chunked = statistics.median(times["chunked"])
            naive = statistics.median(times["naive"]) * T / naive_T
            row[op] = {"chunked_s": chunked, "naive_s": naive, "speedup_vs_naive": naive / chunked,
                       "speedup_vs_sdpa": sdpa / chunked}
            print(f"T={T} {op}: chunked {chunked:.3f}s naive {naive:.2f}s sdpa {sdpa:.3f}s", flush=True)
        results[str(T)] = row
    return results


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_memory_child(what: str, T: int) -> None:
    """Extra peak RSS of one forward + backward: VmHWM after, minus VmRSS before, with the peak reset.

    Writing 5 to /proc/self/clear_refs resets VmHWM to the current RSS (Linux >= 4.0), so the import
    of torch and the inputs do not count.
    """
    torch.set_num_threads(2)
    run = sdpa_step(T) if what == "sdpa" else step(operator(what, "chunk"), make_inputs(what, B, H, T))
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    run()
    print(json.dumps({"extra_peak_rss_bytes": (_status_kib("VmHWM") - before) * 1024}))


def bench_memory(lengths: list[int], with_sdpa: bool) -> dict:
    results = {}
    for T in lengths:
        row = {}
        for what in OPS + (["sdpa"] if with_sdpa else []):
            out = subprocess.run([sys.executable, __file__, "--memory-child", what, str(T)], capture_output=True,
                                 text=True, check=True)
            row[what] = json.loads(out.stdout.strip().splitlines()[-1])["extra_peak_rss_bytes"] / 2**20
            print(f"T={T} {what}: {row[what]:.0f} MiB", flush=True)
        results[str(T)] = row
    return results


def bench_cuda(lengths: list[int]) -> dict:
    """fla (through the adapter) vs chunked torch on CUDA (fwd + bwd, ms), B=8, H=4, head dim 64."""
    results = {}
    for T in lengths:
        row = {}
        for op in ["simple_gla", "gla", "delta_rule", "gated_delta_rule"]:
            inputs = make_inputs(op, B, H, T, device="cuda")
            fn = getattr(ops, f"chunk_{op}")
            row[op] = {}
            for backend in ("torch", "fla"):
                run = step(fn, inputs, backend=backend)
                for _ in range(3):
                    run()
                torch.cuda.synchronize()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(10):
                    run()
                end.record()
                torch.cuda.synchronize()
                row[op][f"{backend}_ms"] = start.elapsed_time(end) / 10
            row[op]["fla_speedup"] = row[op]["torch_ms"] / row[op]["fla_ms"]
            print(f"cuda T={T} {op}: {row[op]}", flush=True)
        sdpa = sdpa_step(T, device="cuda")
        for _ in range(3):
            sdpa()
        torch.cuda.synchronize()
        start_time = time.perf_counter()
        for _ in range(10):
            sdpa()
        torch.cuda.synchronize()
        row["sdpa_ms"] = (time.perf_counter() - start_time) * 100
        results[str(T)] = row
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuda", action="store_true", help="also time Triton vs chunked torch on CUDA")
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--memory-lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--memory-child", nargs=2, metavar=("WHAT", "T"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        measure_memory_child(args.memory_child[0], int(args.memory_child[1]))
        return
    torch.set_num_threads(2)
    result = {
        "setup": {"B": B, "H": H, "head_dim": D, "dtype": "float32", "pass": "forward+backward of output.sum()",
                  "naive": f"full B, H; for T > {NAIVE_MAX_STEPS} timed over the first {NAIVE_MAX_STEPS} steps "
                           "and scaled by T / that (its time is linear in T)",
                  "memory": "extra peak RSS (MiB, VmHWM after reset minus VmRSS before) of one forward+backward, "
                            "fresh subprocess per entry",
                  "chunk_size": "defaults (64)"},
        "time_s": bench_time(args.lengths),
        "memory_mib": bench_memory(args.memory_lengths, with_sdpa=True),
    }
    if args.cuda:
        result["cuda_ms"] = bench_cuda([2048, 8192])
    print("wrote", write_result("ops", result))


if __name__ == "__main__":
    main()
