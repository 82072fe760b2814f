"""Step-by-step references of the sequence operators: a plain Python loop over time, obviously right.

Layout (as flash-linear-attention): q, k `[B, T, H, K]`, v `[B, T, H, V]`, state `[B, H, K, V]`, gates in
log space. Queries are scaled by `K ** -0.5` unless `scale` is given. The loop runs in fp32 (fp64 stays
fp64); outputs come back in the dtype of `v`, the final state in the compute dtype. `chunk_size` is
accepted only so that every form of an operator has the same signature.

`naive_mlstm` (xLSTM's matrix memory) keeps the stabilised state (C', n', m) described in `chunked_mlstm.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from primitives.ops.chunking import expand_groups

Tensor = torch.Tensor


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _start(q: Tensor, v: Tensor, scale: float | None, initial_state: Tensor | None) -> tuple[float, Tensor]:
    B, _, H, K = q.shape
    dtype = _compute_dtype(v)
    scale = K**-0.5 if scale is None else scale
    if initial_state is None:
        state = q.new_zeros(B, H, K, v.shape[-1], dtype=dtype)
    else:
        state = initial_state.to(dtype)
    return scale, state


def _recurrence(q, k, v, decay, beta, scale, initial_state, output_final_state):
    """Shared loop: S_t = d_t * S_{t-1}; S_t += beta_t k_t^T (v_t - k_t S_t); o_t = scale q_t S_t.

    `decay` is a per-step multiplier broadcastable to `[B, H, K, 1]` (or None); `beta` is `[B, T, H]` for
    the delta rule, None for plain linear attention (where the update is k_t^T v_t).
    """
    scale, state = _start(q, v, scale, initial_state)
    dtype = state.dtype
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    outputs = []
    for t in range(q.shape[1]):
        if decay is not None:
            state = decay[:, t].to(dtype) * state
        k_t, v_t = k[:, t], v[:, t]
        if beta is None:
            state = state + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
        else:
            error = v_t - torch.einsum("bhk,bhkv->bhv", k_t, state)
            state = state + beta[:, t].to(dtype)[..., None, None] * k_t.unsqueeze(-1) * error.unsqueeze(-2)
        outputs.append(scale * torch.einsum("bhk,bhkv->bhv", q[:, t], state))
    o = torch.stack(outputs, dim=1) if outputs else v.new_zeros(v.shape)
    return o.to(v.dtype), (state if output_final_state else None)


def naive_simple_gla(q: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: float | None = None,
                     initial_state: Tensor | None = None, output_final_state: bool = False,
                     chunk_size: int = 64) -> tuple[Tensor, Tensor | None]:
    """S_t = exp(g_t) S_{t-1} + k_t^T v_t ; o_t = scale q_t S_t, with g `[B, T, H]` (one decay per head).

    q, k may have fewer heads than v (groups of heads sharing them, see `chunked_simple_gla.py`)."""
    q, k = expand_groups(q, k, v.shape[2])
    decay = g.to(_compute_dtype(g)).exp()[..., None, None]
    return _recurrence(q, k, v, decay, None, scale, initial_state, output_final_state)


def naive_gla(q: Tensor, k: Tensor, v: Tensor, g: Tensor, scale: float | None = None,
              initial_state: Tensor | None = None, output_final_state: bool = False,
              chunk_size: int = 64) -> tuple[Tensor, Tensor | None]:
    """S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t ; o_t = scale q_t S_t, with g `[B, T, H, K]`."""
    decay = g.to(_compute_dtype(g)).exp()[..., None]
    return _recurrence(q, k, v, decay, None, scale, initial_state, output_final_state)


def naive_delta_rule(q: Tensor, k: Tensor, v: Tensor, beta: Tensor, scale: float | None = None,
                     initial_state: Tensor | None = None, output_final_state: bool = False,
                     chunk_size: int = 64) -> tuple[Tensor, Tensor | None]:
    """S_t = S_{t-1} + beta_t k_t^T (v_t - k_t S_{t-1}) ; o_t = scale q_t S_t.

    k is expected L2-normalised by the caller (not normalised here).
    """
    return _recurrence(q, k, v, None, beta, scale, initial_state, output_final_state)


def naive_gated_delta_rule(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor,
                           scale: float | None = None, initial_state: Tensor | None = None,
                           output_final_state: bool = False,
                           chunk_size: int = 64) -> tuple[Tensor, Tensor | None]:
    """S_t = exp(g_t) S_{t-1} + beta_t k_t^T (v_t - exp(g_t) k_t S_{t-1}) ; o_t = scale q_t S_t."""
    decay = g.to(_compute_dtype(g)).exp()[..., None, None]
    return _recurrence(q, k, v, decay, beta, scale, initial_state, output_final_state)


def naive_mlstm(q: Tensor, k: Tensor, v: Tensor, igate: Tensor, log_fgate: Tensor,
                initial_state: tuple[Tensor, Tensor, Tensor] | None = None, output_final_state: bool = False,
                chunk_size: int = 64) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor] | None]:
    """m_t = max(log f_t + m_{t-1}, i~_t); C'_t = f' C'_{t-1} + i' k_t^T v_t; n'_t = f' n'_{t-1} + i' k_t with
    f' = exp(log f_t + m_{t-1} - m_t), i' = exp(i~_t - m_t); o_t = q_t C'_t / max(|q_t . n'_t|, exp(-m_t)).

    q, k `[B, T, H, K]` (k scaled by the caller), v `[B, T, H, V]`, igate and log_fgate `[B, T, H]`.
    """
    dtype, out_dtype = _compute_dtype(v), v.dtype
    B, T, H, K = q.shape
    q, k, v, igate, log_fgate = (x.to(dtype) for x in (q, k, v, igate, log_fgate))
    if initial_state is None:
        C, n, m = q.new_zeros(B, H, K, v.shape[-1]), q.new_zeros(B, H, K), q.new_zeros(B, H)
    else:
        C, n, m = (s.to(dtype) for s in initial_state)
    outputs = []
    for t in range(T):
        m_new = torch.maximum(log_fgate[:, t] + m, igate[:, t])
        f = torch.exp(log_fgate[:, t] + m - m_new)[..., None]
        i = torch.exp(igate[:, t] - m_new)[..., None]
        C = f[..., None] * C + (i * k[:, t])[..., None] * v[:, t, :, None, :]
        n = f * n + i * k[:, t]
        m = m_new
        den = torch.maximum((q[:, t] * n).sum(-1).abs(), torch.exp(-m))
        outputs.append(torch.einsum("bhk,bhkv->bhv", q[:, t], C) / den[..., None])
    o = torch.stack(outputs, dim=1) if outputs else v.new_zeros(v.shape)
    return o.to(out_dtype), ((C, n, m) if output_final_state else None)


def naive_scan_diagonal(log_a: Tensor, b: Tensor,
                        initial_state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """h_t = exp(log_a_t) * h_{t-1} + b_t elementwise over `[B, T, *]`; returns (every h_t, the last h)."""
    dtype = _compute_dtype(b)
    h = b.new_zeros(b[:, 0].shape, dtype=dtype) if initial_state is None else initial_state.to(dtype)
    a = log_a.to(dtype).exp()
    states = []
    for t in range(b.shape[1]):
        h = a[:, t] * h + b[:, t].to(dtype)
        states.append(h)
    h_all = torch.stack(states, dim=1) if states else b.new_zeros(b.shape, dtype=dtype)
    return h_all.to(b.dtype), h


def naive_causal_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None = None,
                        cache: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Depthwise causal conv of x `[B, T, C]` (weight `[C, k]`, bias `[C]`) through `F.conv1d`, continuing
    `cache` `[B, C, k - 1]` (the inputs before x; None: zeros, and no cache comes back)."""
    k = weight.shape[-1]
    x = x.transpose(1, 2)
    padded = F.pad(x, (k - 1, 0)) if cache is None else torch.cat([cache.to(x.dtype), x], dim=-1)
    y = F.conv1d(padded, weight.unsqueeze(1), bias, groups=weight.shape[0]).transpose(1, 2)
    return y, (None if cache is None else padded[..., padded.shape[-1] - (k - 1):])


def naive_selective_scan(dt: Tensor, A: Tensor, x: Tensor, B: Tensor, C: Tensor,
                         initial_state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Mamba-1: h_t = exp(dt_t A) * h_{t-1} + x_t B_t, y_t = h_t C_t; dt, x `[B, T, E]`, A `[E, N]`, B, C
    `[B, T, N]`, h `[B, E, N]`. Returns (y `[B, T, E]` in x's dtype, the last h in the compute dtype)."""
    dtype = _compute_dtype(x)
    Bsz, T, E = x.shape
    h = x.new_zeros(Bsz, E, A.shape[-1], dtype=dtype) if initial_state is None else initial_state.to(dtype)
    dt, A, x, B, C = (t.to(dtype) for t in (dt, A, x, B, C))
    outputs = []
    for t in range(T):
        h = torch.exp(dt[:, t, :, None] * A) * h + x[:, t, :, None] * B[:, t, None, :]
        outputs.append(torch.einsum("ben,bn->be", h, C[:, t]))
    y = torch.stack(outputs, dim=1) if outputs else x.new_zeros(Bsz, 0, E)
    return y.to(x.dtype), h
