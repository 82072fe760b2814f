"""Which form of an operator runs, and the constants every layer shares for that choice.

* The public `chunk_*` operators pick a form per call with `backend`:
  - "torch": the chunked PyTorch form (the reference, and the CPU path).
  - "fla": flash-linear-attention's Triton kernel through `primitives/ops/kernels/fla_adapter.py`, strictly (an
    error or a bad shape raises); CUDA only.
  - "auto" (default): the fla kernel for CUDA tensors when fla is installed (`pip install -e .[cuda]`) and has
    a kernel for the call (`fla_adapter.unsupported`: not fp32 delta rule), else PyTorch. How far the auto
    path trusts a kernel is set by the environment variable COMPOSER_KERNELS:
    `check` (default): before a kernel first serves a call class (operator, device, dtypes, head dims,
    chunk size and chunk-count class, initial/final state, grad), it runs once on a small input against the
    PyTorch path (forward, and backward when the call needs grad); on an error or a mismatch beyond the
    dtype's tolerance that class uses PyTorch for the rest of the process, with one `KernelFallbackWarning`
    naming the operator and the reason (`primitives/ops/kernels/verify.py`). `trust`: the kernel without
    the check. `off`: never a kernel. `kernel_device`, `kernel_unsupported` and `kernel_form` are the seams
    the CPU tests patch (tests/test_kernel_fallback.py); `benchmarks/bench_gpu.py` checks and times every
    kernel on a GPU.
* The length-dispatched operators the layers call (`simple_gla`, `gla`, `delta_rule`, `gated_delta_rule`):
  the step form for pieces of at most `DECODE_MAX` tokens (decoding), else the chunked form in chunks of
  `CHUNK_SIZE`, or `DELTA_RULE_CHUNK_SIZE` for the delta rules, KDA and RWKV-7 included (their intra-chunk
  work, the UT transform included, grows with the chunk: 32 measured a third faster than 64 on CPU). The
  layers' FLOP formulas count the chunk their operator runs.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Literal

import torch

from primitives.ops.chunked_delta_rule import chunk_delta_rule_torch, chunk_gated_delta_rule_torch
from primitives.ops.chunked_gla import chunk_gla_torch
from primitives.ops.chunked_simple_gla import chunk_simple_gla_torch
from primitives.ops.chunking import expand_groups
from primitives.ops.naive import naive_delta_rule, naive_gated_delta_rule, naive_gla, naive_simple_gla

Tensor = torch.Tensor
Backend = Literal["auto", "torch", "fla"]

CHUNK_SIZE = 64
DELTA_RULE_CHUNK_SIZE = 32
DECODE_MAX = 4  # pieces up to this length (decoding) run the step form: the chunked one pads a whole chunk

KERNELS_ENV = "COMPOSER_KERNELS"
KERNEL_MODES = ("off", "check", "trust")
TORCH_FORMS: dict[str, Callable] = {"chunk_simple_gla": chunk_simple_gla_torch, "chunk_gla": chunk_gla_torch,
                                    "chunk_delta_rule": chunk_delta_rule_torch,
                                    "chunk_gated_delta_rule": chunk_gated_delta_rule_torch}


def kernel_mode() -> str:
    """COMPOSER_KERNELS: "check" (default), "trust" or "off". Another value warns and means "check": a typo in
    the environment must not stop a run."""
    mode = os.environ.get(KERNELS_ENV, "").strip().lower() or "check"
    if mode not in KERNEL_MODES:
        warnings.warn(f"{KERNELS_ENV}={mode!r} is not one of {', '.join(KERNEL_MODES)}; using 'check'", stacklevel=2)
        return "check"
    return mode


def kernel_device(x: Tensor) -> bool:
    """Whether the auto path may run a kernel on `x`'s device: CUDA, with fla installed."""
    if not x.is_cuda:
        return False
    from primitives.ops.kernels import FLA_AVAILABLE

    return FLA_AVAILABLE


def kernel_unsupported(operator: str, tensors: tuple[Tensor, ...]) -> str | None:
    """Why the kernel does not serve this call (None: it does): the adapter's `unsupported`."""
    from primitives.ops.kernels.fla_adapter import unsupported

    return unsupported(operator, tensors)


def kernel_form(operator: str) -> Callable:
    """fla's kernel of `operator`, through the adapter (imports fla)."""
    from primitives.ops.kernels import kernel

    return kernel(operator)


def run_operator(operator: str, tensors: tuple[Tensor, ...], scale: float | None, initial_state: Tensor | None,
                 output_final_state: bool, chunk_size: int, backend: Backend) -> tuple[Tensor, Tensor | None]:
    """Run `operator` on (*tensors, scale, initial_state, output_final_state, chunk_size) in the form
    `backend` picks (see the module docstring)."""
    args = (*tensors, scale, initial_state, output_final_state, chunk_size)
    if backend not in ("auto", "torch", "fla"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'fla', got {backend!r}")
    if backend == "fla":
        from primitives.ops.kernels import FLA_AVAILABLE

        if not FLA_AVAILABLE:
            raise ValueError("backend='fla' needs flash-linear-attention (pip install -e .[cuda]), not installed here")
        return kernel_form(operator)(*args)
    if backend == "auto" and auto_uses_kernel(operator, args):
        return kernel_form(operator)(*args)
    return TORCH_FORMS[operator](*args)


def auto_uses_kernel(operator: str, args: tuple) -> bool:
    """The auto path's choice for one call: a kernel only on a kernel device, and (in "check" mode) only
    for a call class whose first-use check passed."""
    mode = kernel_mode()
    if mode == "off" or not kernel_device(args[0]):
        return False
    if kernel_unsupported(operator, args[:-4]) is not None:
        return False
    if mode == "trust":
        return True
    from primitives.ops.kernels.verify import kernel_passes

    return kernel_passes(operator, args, lambda: kernel_form(operator), TORCH_FORMS[operator])


def chunk_simple_gla(q: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: float | None = None,
                     initial_state: Tensor | None = None, output_final_state: bool = False,
                     chunk_size: int = CHUNK_SIZE, backend: Backend = "auto") -> tuple[Tensor, Tensor | None]:
    """S_t = exp(g_t) S_{t-1} + k_t^T v_t ; o_t = scale q_t S_t, with g `[B, T, H]` (log decay per head).

    q, k may have fewer heads than v (groups of heads sharing them); the kernels get them expanded."""
    if q.shape[2] != v.shape[2] and (backend == "triton" or (backend == "auto" and kernel_device(q))):
        q, k = expand_groups(q, k, v.shape[2])
    return run_operator("chunk_simple_gla", (q, k, v, g), scale, initial_state, output_final_state, chunk_size,
                        backend)


def chunk_gla(q: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: float | None = None,
              initial_state: Tensor | None = None, output_final_state: bool = False,
              chunk_size: int = CHUNK_SIZE, backend: Backend = "auto") -> tuple[Tensor, Tensor | None]:
    """S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t ; o_t = scale q_t S_t, with g `[B, T, H, K]` (log decay per
    key channel)."""
    return run_operator("chunk_gla", (q, k, v, g), scale, initial_state, output_final_state, chunk_size, backend)


def chunk_delta_rule(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, scale: float | None = None,
                     initial_state: Tensor | None = None, output_final_state: bool = False,
                     chunk_size: int = CHUNK_SIZE, backend: Backend = "auto") -> tuple[Tensor, Tensor | None]:
    """S_t = S_{t-1} + beta_t k_t^T (v_t - k_t S_{t-1}) ; o_t = scale q_t S_t (k L2-normalised by caller)."""
    return run_operator("chunk_delta_rule", (q, k, v, beta), scale, initial_state, output_final_state, chunk_size,
                        backend)


def chunk_gated_delta_rule(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor,
                           scale: float | None = None, initial_state: Tensor | None = None,
                           output_final_state: bool = False, chunk_size: int = CHUNK_SIZE,
                           backend: Backend = "auto") -> tuple[Tensor, Tensor | None]:
    """S_t = exp(g_t) S_{t-1} + beta_t k_t^T (v_t - exp(g_t) k_t S_{t-1}) ; o_t = scale q_t S_t."""
    return run_operator("chunk_gated_delta_rule", (q, k, v, g, beta), scale, initial_state, output_final_state,
                        chunk_size, backend)


def by_length(chunked, stepwise, chunk_size: int = CHUNK_SIZE):
    """An operator that runs `stepwise` on pieces of at most DECODE_MAX tokens, else `chunked` in chunks of
    `chunk_size`."""

    def run(q: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor | None]:
        if q.shape[1] <= DECODE_MAX:
            return stepwise(q, *args, **kwargs)
        return chunked(q, *args, chunk_size=chunk_size, **kwargs)

    return run


simple_gla = by_length(chunk_simple_gla, naive_simple_gla)
gla = by_length(chunk_gla, naive_gla)
delta_rule = by_length(chunk_delta_rule, naive_delta_rule, DELTA_RULE_CHUNK_SIZE)
gated_delta_rule = by_length(chunk_gated_delta_rule, naive_gated_delta_rule, DELTA_RULE_CHUNK_SIZE)
