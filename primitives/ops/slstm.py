"""xLSTM's sLSTM recurrence: scalar memory, exponential gating, normaliser and stabiliser states (Beck et al. 2024).

Per head h (block-diagonal recurrence: each head's dh units see only their own previous outputs), with the input
pre-activations wx_t = W x_t + b `[B, T, H, 4, dh]` (gates i, f, z, o) and the recurrent kernel R `[H, dh, 4, dh]`:

    (i~, f~, z~, o~) = wx_t + y_{t-1} R
    m_t = max(i~, log sigmoid(f~) + m_{t-1})          (m_t = i~ while n_{t-1} = 0: the start of a sequence)
    i' = exp(i~ - m_t),  f' = exp(log sigmoid(f~) + m_{t-1} - m_t)
    c_t = f' c_{t-1} + i' tanh(z~),   n_t = f' n_{t-1} + i',   y_t = sigmoid(o~) c_t / n_t

as the released code's pointwise step (`xlstm/blocks/slstm/src/vanilla/slstm.py`, which starts from m = i~ when
the whole normaliser is zero; here that holds per element, which is the same on a fresh state). The state is
(y, c, n, m), each `[B, H, dh]`, zeros at the start.

The recurrence is nonlinear in y_{t-1}, so there is no parallel form: training runs the step loop. Two forms:
`naive_slstm` (the step written out, the reference) and `slstm_scan` (the training form: the caller computes the
input projections for all steps at once; each step here is one batched matmul `baddbmm` for the recurrent part
in a heads-first layout plus the pointwise update, which tests for a fresh state on a call's first step only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from primitives.ops.chunking import compute_dtype

Tensor = torch.Tensor
SLSTMState = tuple[Tensor, Tensor, Tensor, Tensor]


def slstm_pointwise(raw_i: Tensor, raw_f: Tensor, raw_z: Tensor, raw_o: Tensor, c: Tensor, n: Tensor,
                    m: Tensor, may_start: bool = True) -> SLSTMState:
    """One step's update from the gate pre-activations: (y, c, n, m) after it. `may_start=False` skips the test
    for a fresh state (n = 0), which only the first step of a call can meet: after any step n >= i' > 0 (or n is
    unchanged, when i' underflows and f' = 1)."""
    log_f = F.logsigmoid(raw_f) + m
    m_new = torch.maximum(raw_i, log_f)
    if may_start:
        m_new = torch.where(n == 0, raw_i, m_new)
    i, f = torch.exp(raw_i - m_new), torch.exp(log_f - m_new)
    c = f * c + i * torch.tanh(raw_z)
    n = f * n + i
    return torch.sigmoid(raw_o) * c / n, c, n, m_new


def zero_slstm_state(batch: int, heads: int, head_dim: int, like: Tensor) -> SLSTMState:
    zeros = like.new_zeros(batch, heads, head_dim)
    return zeros, zeros.clone(), zeros.clone(), zeros.clone()


def naive_slstm(wx: Tensor, R: Tensor, initial_state: SLSTMState | None = None
                ) -> tuple[Tensor, SLSTMState]:
    """wx `[B, T, H, 4, dh]`, R `[H, dh, 4, dh]` -> (y `[B, T, H, dh]`, final (y, c, n, m)); the step loop."""
    B, T, H, _, dh = wx.shape
    out_dtype, dtype = wx.dtype, compute_dtype(wx)
    wx, R = wx.to(dtype), R.to(dtype)
    state = zero_slstm_state(B, H, dh, wx) if initial_state is None else tuple(s.to(dtype) for s in initial_state)
    y, c, n, m = state
    outputs = []
    for t in range(T):
        raw = wx[:, t] + torch.einsum("bhd,hdge->bhge", y, R)
        y, c, n, m = slstm_pointwise(*raw.unbind(2), c, n, m)
        outputs.append(y)
    out = torch.stack(outputs, dim=1) if outputs else wx.new_zeros(B, 0, H, dh)
    return out.to(out_dtype), (y, c, n, m)


def slstm_scan(wx: Tensor, R: Tensor, initial_state: SLSTMState | None = None) -> tuple[Tensor, SLSTMState]:
    """Same inputs and outputs as `naive_slstm`; heads-first layout, one `baddbmm` per step."""
    B, T, H, _, dh = wx.shape
    out_dtype, dtype = wx.dtype, compute_dtype(wx)
    inputs = wx.to(dtype).permute(1, 2, 0, 3, 4).reshape(T, H, B, 4 * dh)      # [T, H, B, 4 dh]
    kernel = R.to(dtype).reshape(H, dh, 4 * dh)
    if initial_state is None:
        state = zero_slstm_state(H, B, dh, inputs)
    else:
        state = tuple(s.to(dtype).transpose(0, 1) for s in initial_state)    # [H, B, dh]
    y, c, n, m = state
    outputs = []
    for t, step in enumerate(inputs.unbind(0)):
        raw_i, raw_f, raw_z, raw_o = torch.baddbmm(step, y, kernel).split(dh, dim=-1)
        y, c, n, m = slstm_pointwise(raw_i, raw_f, raw_z, raw_o, c, n, m, may_start=t == 0)
        outputs.append(y)
    out = torch.stack(outputs, dim=0).permute(2, 0, 1, 3) if outputs else inputs.new_zeros(B, 0, H, dh)
    return out.to(out_dtype), tuple(s.transpose(0, 1) for s in (y, c, n, m))
