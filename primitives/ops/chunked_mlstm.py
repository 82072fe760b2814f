"""Chunked mLSTM (xLSTM's matrix memory, Beck et al. 2024) with stabilised exponential gating.

Per head, with input gate pre-activation i~_t and log forget gate log f_t (k scaled by the caller):
    C_t = f_t C_{t-1} + exp(i~_t) k_t^T v_t,   n_t = f_t n_{t-1} + exp(i~_t) k_t
    h_t = q_t C_t / max(|q_t . n_t|, 1)
Stabilised (what is computed and stored): m_t = max(log f_t + m_{t-1}, i~_t), C' = C exp(-m), n' = n exp(-m),
h_t = q_t C'_t / max(|q_t . n'_t|, exp(-m_t)). The state is (C', n', m), starting from zeros.

The sequence is walked in chunks of `chunk_size`; inside a chunk the stabilised parallel form runs: with G
the cumulative log forget gate, log D_ts = G_t - G_s + i~_s (s <= t) and the carried state weighted by
G_t + m_0, m_t is the max of all of these, which is exactly the value the step recurrence reaches, so this
form equals `naive_mlstm`. The last chunk is shorter rather than padded: a padded step would move m.
"""

from __future__ import annotations

import torch

from primitives.ops.chunking import compute_dtype

Tensor = torch.Tensor
MLSTMState = tuple[Tensor, Tensor, Tensor]


def mlstm_chunk_parallel(q: Tensor, k: Tensor, v: Tensor, igate: Tensor, log_fgate: Tensor,
                         state: MLSTMState) -> tuple[Tensor, MLSTMState]:
    """The stabilised parallel form over one chunk `[B, H, L, *]` (gates `[B, H, L]`), continuing `state`."""
    C0, n0, m0 = state
    L = q.shape[2]
    G = log_fgate.cumsum(-1)                                             # [B, H, L]
    causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
    log_d = (G[..., :, None] - G[..., None, :] + igate[..., None, :]).masked_fill(~causal, float("-inf"))
    log_carry = G + m0[..., None]                                        # weight of the carried state
    m = torch.maximum(log_d.amax(-1), log_carry)                         # [B, H, L]
    scores = (q @ k.transpose(-1, -2)) * torch.exp(log_d - m[..., None])
    carry = torch.exp(log_carry - m)[..., None]
    num = scores @ v + carry * (q @ C0)
    den = scores.sum(-1) + carry[..., 0] * (q @ n0[..., None])[..., 0]
    h = num / torch.maximum(den.abs(), torch.exp(-m))[..., None]
    # State after the chunk, stabilised by m at its last step.
    m_last = m[..., -1]
    weights = torch.exp(G[..., -1:] - G + igate - m_last[..., None])     # [B, H, L]
    decay = torch.exp(G[..., -1] + m0 - m_last)
    C = decay[..., None, None] * C0 + (k * weights[..., None]).transpose(-1, -2) @ v
    n = decay[..., None] * n0 + (k * weights[..., None]).sum(2)
    return h, (C, n, m_last)


def chunk_mlstm(q: Tensor, k: Tensor, v: Tensor, igate: Tensor, log_fgate: Tensor,
                initial_state: MLSTMState | None = None, output_final_state: bool = False,
                chunk_size: int = 64) -> tuple[Tensor, MLSTMState | None]:
    """mLSTM over q, k `[B, T, H, K]`, v `[B, T, H, V]`, gates `[B, T, H]`, linear in T; equals `naive_mlstm`.

    State (C', n', m): `[B, H, K, V]`, `[B, H, K]`, `[B, H]`. Computed in fp32 (fp64 stays fp64); the output
    comes back in v's dtype, the final state in the compute dtype.
    """
    dtype, out_dtype = compute_dtype(v), v.dtype
    B, T, H, K = q.shape
    q, k, v = (x.to(dtype).transpose(1, 2) for x in (q, k, v))          # [B, H, T, *]
    igate, log_fgate = (g.to(dtype).transpose(1, 2) for g in (igate, log_fgate))
    if initial_state is None:
        state = (q.new_zeros(B, H, K, v.shape[-1]), q.new_zeros(B, H, K), q.new_zeros(B, H))
    else:
        state = tuple(s.to(dtype) for s in initial_state)
    outputs = []
    for start in range(0, T, chunk_size):
        piece = slice(start, start + chunk_size)
        h, state = mlstm_chunk_parallel(q[:, :, piece], k[:, :, piece], v[:, :, piece], igate[..., piece],
                                        log_fgate[..., piece], state)
        outputs.append(h)
    o = torch.cat(outputs, dim=2).transpose(1, 2) if outputs else v.new_zeros(B, T, H, v.shape[-1])
    return o.to(out_dtype), (state if output_final_state else None)
