"""The public `chunk_*` operators: Triton kernels for CUDA tensors (when triton imports), else chunked torch.

`backend` picks the path explicitly: "auto" (default), "torch" or "triton". "triton" also runs on CPU
tensors under TRITON_INTERPRET=1, which is how the kernels are tested without a GPU.
"""

from __future__ import annotations

from typing import Literal

import torch

from primitives.ops.chunked_delta_rule import chunk_delta_rule_torch, chunk_gated_delta_rule_torch
from primitives.ops.chunked_gla import chunk_gla_torch
from primitives.ops.chunked_simple_gla import chunk_simple_gla_torch

Tensor = torch.Tensor
Backend = Literal["auto", "torch", "triton"]


def _use_triton(backend: Backend, x: Tensor) -> bool:
    if backend == "torch":
        return False
    if backend not in ("auto", "triton"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'triton', got {backend!r}")
    from primitives.ops.triton import TRITON_AVAILABLE

    if backend == "triton" and not TRITON_AVAILABLE:
        raise ValueError("backend='triton' needs the triton package, which does not import here")
    return backend == "triton" or (x.is_cuda and TRITON_AVAILABLE)


def chunk_simple_gla(q: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: float | None = None,
                     initial_state: Tensor | None = None, output_final_state: bool = False,
                     chunk_size: int = 64, backend: Backend = "auto") -> tuple[Tensor, Tensor | None]:
    """S_t = exp(g_t) S_{t-1} + k_t^T v_t ; o_t = scale q_t S_t, with g `[B, T, H]` (log decay per head)."""
    if _use_triton(backend, q):
        from primitives.ops.triton.simple_gla import chunk_simple_gla_triton

        return chunk_simple_gla_triton(q, k, v, g, scale, initial_state, output_final_state, chunk_size)
    return chunk_simple_gla_torch(q, k, v, g, scale, initial_state, output_final_state, chunk_size)


def chunk_gla(q: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: float | None = None,
              initial_state: Tensor | None = None, output_final_state: bool = False,
              chunk_size: int = 64, backend: Backend = "auto") -> tuple[Tensor, Tensor | None]:
    """S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t ; o_t = scale q_t S_t, with g `[B, T, H, K]` (log decay per
    key channel)."""
    if _use_triton(backend, q):
        from primitives.ops.triton.gla import chunk_gla_triton

        return chunk_gla_triton(q, k, v, g, scale, initial_state, output_final_state, chunk_size)
    return chunk_gla_torch(q, k, v, g, scale, initial_state, output_final_state, chunk_size)


def chunk_delta_rule(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, scale: float | None = None,
                     initial_state: Tensor | None = None, output_final_state: bool = False,
                     chunk_size: int = 64, backend: Backend = "auto") -> tuple[Tensor, Tensor | None]:
    """S_t = S_{t-1} + beta_t k_t^T (v_t - k_t S_{t-1}) ; o_t = scale q_t S_t (k L2-normalised by caller)."""
    if _use_triton(backend, q):
        from primitives.ops.triton.gated_delta_rule import chunk_gated_delta_rule_triton

        g = torch.zeros_like(beta)
        return chunk_gated_delta_rule_triton(q, k, v, g, beta, scale, initial_state, output_final_state,
                                             chunk_size)
    return chunk_delta_rule_torch(q, k, v, beta, scale, initial_state, output_final_state, chunk_size)


def chunk_gated_delta_rule(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor,
                           scale: float | None = None, initial_state: Tensor | None = None,
                           output_final_state: bool = False, chunk_size: int = 64,
                           backend: Backend = "auto") -> tuple[Tensor, Tensor | None]:
    """S_t = exp(g_t) S_{t-1} + beta_t k_t^T (v_t - exp(g_t) k_t S_{t-1}) ; o_t = scale q_t S_t."""
    if _use_triton(backend, q):
        from primitives.ops.triton.gated_delta_rule import chunk_gated_delta_rule_triton

        return chunk_gated_delta_rule_triton(q, k, v, g, beta, scale, initial_state, output_final_state,
                                             chunk_size)
    return chunk_gated_delta_rule_torch(q, k, v, g, beta, scale, initial_state, output_final_state,
                                        chunk_size)
