"""RWKV-7's operator: the generalised delta rule, a diagonal-plus-rank-one state transition (Peng et al. 2025).

    S_t = diag(exp(w_t)) S_{t-1} + b_t^T (a_t S_{t-1}) + k_t^T v_t ;   o_t = scale r_t S_t

r, w, k, a, b `[B, T, H, K]` (w the log decay, <= 0), v `[B, T, H, V]`; state `[B, H, K, V]` (the transpose of
RWKV's [V, K] layout). The RWKV-7 layer calls it with a = -kappa^ and b = kappa^ * alpha (kappa^ the L2-normalised
removal key, alpha the in-context learning rate), so that the transition is diag(w_t) - kappa^T (alpha kappa):
the delta rule with a vector decay and a vector learning rate. The recurrence is flash-linear-attention's
`naive_recurrent_rwkv7` (`fla/ops/rwkv7/recurrent_naive.py`). Three forms: `naive_rwkv7` (step reference),
`chunk_rwkv7_torch` (chunked) and `rwkv7`, which runs the first on pieces of at most DECODE_MAX tokens.

Chunked form. Within a chunk starting from S_0, with G the chunk-local cumsum of w ([C, K]), G' = G - w (the
cumsum before each step) and the per-channel scores

    A^xy_ij = sum_c x_ic y_jc exp(G_ic - G_jc)  (j <= i),   A'^xy_ij = sum_c x_ic y_jc exp(G'_ic - G_jc)  (j < i),

the state is S_t = diag(exp(G_t)) S_0 + sum_{j <= t} diag(exp(G_t - G_j)) (b_j^T u_j + k_j^T v_j) with
u_t = a_t S_{t-1}, which solve the unit-lower-triangular system

    (I - A'^ab) U = (a exp(G')) S_0 + A'^ak V,     so U = W S_0 + U_0 (one triangular solve per chunk), and

    O = scale [ (r exp(G) + A^rb W) S_0 + A^rb U_0 + A^rk V ]
    S_C = (diag(exp(G_C)) + Bd^T W) S_0 + Bd^T U_0 + Kd^T V,     Bd, Kd = b, k times exp(G_C - G).

A'^xy is the inclusive score of the queries moved one step earlier (row t - 1 scores x_t against y_j with
G_{t-1} = G'_t), so all four score matrices come from one call of `paired_scores` (one matmul where the
decay allows; exact for any decay strength).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from primitives.ops.chunking import compute_dtype, from_chunk_major, initial_state_or_zeros, to_chunk_major
from primitives.ops.dispatch import DECODE_MAX, DELTA_RULE_CHUNK_SIZE
from primitives.ops.paired_scores import paired_scores
from primitives.ops.wy_chunk_scan import wy_chunk_scan

Tensor = torch.Tensor


def naive_rwkv7(r: Tensor, w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, scale: float = 1.0,
                initial_state: Tensor | None = None, output_final_state: bool = False,
                chunk_size: int = 64) -> tuple[Tensor, Tensor | None]:
    """The recurrence one step at a time (fp32; fp64 stays fp64). `chunk_size` is unused (same signature)."""
    B, T, H, K = r.shape
    out_dtype, dtype = v.dtype, compute_dtype(v)
    r, w, k, v, a, b = (x.to(dtype) for x in (r, w, k, v, a, b))
    state = initial_state_or_zeros(initial_state, B, H, K, v.shape[-1], r)
    outputs = []
    for t in range(T):
        removed = torch.einsum("bhk,bhkv->bhv", a[:, t], state)
        state = (w[:, t].exp().unsqueeze(-1) * state + b[:, t].unsqueeze(-1) * removed.unsqueeze(-2)
                 + k[:, t].unsqueeze(-1) * v[:, t].unsqueeze(-2))
        outputs.append(scale * torch.einsum("bhk,bhkv->bhv", r[:, t], state))
    o = torch.stack(outputs, dim=1) if outputs else v.new_zeros(v.shape)
    return o.to(out_dtype), (state if output_final_state else None)


def chunk_rwkv7_torch(r: Tensor, w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, scale: float = 1.0,
                      initial_state: Tensor | None = None, output_final_state: bool = False,
                      chunk_size: int = 64) -> tuple[Tensor, Tensor | None]:
    """The chunked form (module docstring): outputs `[B, T, H, V]` and, if asked, the final state. Computed in
    fp32 (fp64 stays fp64) without autocast, as the delta rule's chunked form."""
    with torch.autocast(r.device.type, enabled=False):
        return _chunk_rwkv7(r, w, k, v, a, b, scale, initial_state, output_final_state, chunk_size)


def _chunk_rwkv7(r: Tensor, w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, scale: float,
                 initial_state: Tensor | None, output_final_state: bool,
                 chunk_size: int) -> tuple[Tensor, Tensor | None]:
    B, T, H, K = r.shape
    V = v.shape[-1]
    out_dtype, dtype = v.dtype, compute_dtype(v)
    r, k, v, a, b = (to_chunk_major(x, chunk_size, dtype) for x in (r, k, v, a, b))   # [N, BH, C, D]
    w = to_chunk_major(w, chunk_size, dtype)
    G = w.cumsum(-2)

    a_next = F.pad(a[..., 1:, :], [0, 0, 0, 1])                  # row s holds a_{s+1}
    C = r.shape[-2]
    scores = paired_scores([a_next, r], [b, k], G)                # [[A^ab, A^ak], [A^rb, A^rk]]  [N, BH, 2C, 2C]
    a_ab, a_ak = (F.pad(s[..., :-1, :], [0, 0, 1, 0]) for s in scores[..., :C, :].split(C, dim=-1))  # row t - 1
    a_rb, a_rk = scores[..., C:, :].split(C, dim=-1)
    to_end = (G[..., -1:, :] - G).exp()
    extra = (k * to_end).transpose(-1, -2) @ v                                # Kd^T V  [N, BH, K, V]
    state = initial_state_or_zeros(initial_state, B, H, K, V, r).reshape(B * H, K, V)
    # (I - A'^ab) U = (a exp(G')) S_0 + A'^ak V: the scan's (I + A) U = R_v - R_k S_0, A = -A'^ab, R_k = -a exp(G')
    o, state = wy_chunk_scan(-a_ab, a_rb, -(a * (G - w).exp()), a_ak @ v, r * G.exp(), b * to_end,
                             G[..., -1, :].exp(), extra, state)
    o = from_chunk_major((o + a_rk @ v) * scale, B, T).to(out_dtype)
    return o, (state.view(B, H, K, V) if output_final_state else None)


def rwkv7(r: Tensor, w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, scale: float = 1.0,
          initial_state: Tensor | None = None, output_final_state: bool = False) -> tuple[Tensor, Tensor | None]:
    """The step form for pieces of at most DECODE_MAX tokens (decoding), else the chunked form in chunks of
    DELTA_RULE_CHUNK_SIZE (as `dispatch.by_length`; 32 measured faster than 64 on CPU, as for the delta rule)."""
    form = naive_rwkv7 if r.shape[1] <= DECODE_MAX else chunk_rwkv7_torch
    return form(r, w, k, v, a, b, scale, initial_state, output_final_state, chunk_size=DELTA_RULE_CHUNK_SIZE)
