"""Triton path of `chunk_simple_gla` (CUDA, or CPU tensors under TRITON_INTERPRET=1)."""

from __future__ import annotations

import torch

from primitives.ops.chunking import compute_dtype, from_chunks, resolve_scale, to_chunks
from primitives.ops.triton.chunk_recurrence import ChunkRecurrence

Tensor = torch.Tensor


def heads_layout(x: Tensor, chunk_size: int, dtype: torch.dtype) -> Tensor:
    """`[B, T, H, *]` -> `[B*H, N*C, *]` contiguous, zero-padded to whole chunks (see `to_chunks`)."""
    x = to_chunks(x, chunk_size, dtype)
    B, H, N, C = x.shape[:4]
    return x.reshape(B * H, N * C, *x.shape[4:]).contiguous()


def from_heads_layout(x: Tensor, B: int, H: int, T: int, chunk_size: int) -> Tensor:
    """`[B*H, N*C, D]` -> `[B, T, H, D]`."""
    N = x.shape[1] // chunk_size
    return from_chunks(x.reshape(B, H, N, chunk_size, x.shape[-1]), T)


def check_chunk_size(chunk_size: int) -> None:
    if chunk_size < 16 or chunk_size & (chunk_size - 1):
        raise ValueError(f"the Triton kernels need a power-of-two chunk_size >= 16, got {chunk_size}")


def dot_precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype in (torch.float32, torch.float64) else "tf32"


def chunk_simple_gla_triton(q: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: float | None = None,
                            initial_state: Tensor | None = None, output_final_state: bool = False,
                            chunk_size: int = 64) -> tuple[Tensor, Tensor | None]:
    B, T, H, K = q.shape
    check_chunk_size(chunk_size)
    dtype = torch.float32
    precision = "ieee" if compute_dtype(v) == torch.float64 else dot_precision(v.dtype)
    G = heads_layout(g.unsqueeze(-1), chunk_size, dtype).squeeze(-1)
    G = G.view(B * H, -1, chunk_size).cumsum(-1).view(B * H, -1)
    s0 = initial_state.to(dtype).reshape(B * H, K, -1).contiguous() if initial_state is not None else None
    o, final = ChunkRecurrence.apply(
        heads_layout(q, chunk_size, dtype), heads_layout(k, chunk_size, dtype), heads_layout(v, chunk_size, dtype),
        G, None, s0, resolve_scale(scale, K), chunk_size, precision)
    o = from_heads_layout(o, B, H, T, chunk_size).to(v.dtype)
    return o, (final.view(B, H, K, -1) if output_final_state else None)
