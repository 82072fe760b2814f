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


class _SLSTMScan(torch.autograd.Function):
    """Heads-first: inputs `[T, H, B, 4 dh]`, kernel `[H, dh, 4 dh]`, state (y, c, n, m) each `[H, B, dh]` ->
    y `[T, H, B, dh]` and the state after the last step.

    The forward runs without a graph and writes each step's gates i', f', tanh(z~), sigmoid(o~) and states
    into per-sequence buffers; the backward walks time backwards with those as coefficients, so each step is
    one `baddbmm` (dy_{t-1} = draw_t R^T) and a dozen elementwise ops on `[H, B, dh]`, against autograd's
    graph of the forward's ~20 ops. With a = dy_t (including the recurrent part) and dc, dn, dm arriving from
    step t + 1:

        dc += a o / n_t,  dn -= a y_t / n_t,  do~ = a (c_t / n_t) o (1 - o),  dz~ = dc i' (1 - tanh(z~)^2)
        di' i' = dc i' tanh(z~) + dn i',  df' f' = dc f' c_{t-1} + dn f' n_{t-1}
        dm_t = dm - di' i' - df' f',  split between i~ and log f as torch.maximum's backward (halves on ties)
        di~ = di' i' + w_i dm_t,  dlog f = df' f' + w_f dm_t,  df~ = dlog f sigmoid(-f~)
        dm_{t-1} = dlog f,  dc_{t-1} = dc f',  dn_{t-1} = dn f'

    (on a fresh state's first step m_t = i~: w_i = 1). dR = sum_t y_{t-1}^T draw_t is one matmul at the end.
    """

    @staticmethod
    def forward(ctx, inputs: Tensor, kernel: Tensor, y0: Tensor, c0: Tensor, n0: Tensor, m0: Tensor):
        T, H, B, four_dh = inputs.shape
        dh = four_dh // 4
        ys, ms = (inputs.new_empty(T + 1, H, B, dh) for _ in range(2))
        cns = inputs.new_empty(T + 1, 2, H, B, dh)                    # c and n stacked: one update for both
        gates_if = inputs.new_empty(T, 2, H, B, dh)                   # i', f'
        z_one = inputs.new_empty(T, 2, H, B, dh)                      # tanh(z~) and 1: the inputs to c and n
        z_one[:, 1] = 1
        o_gate = inputs.new_empty(T, H, B, dh)
        ys[0], ms[0], cns[0, 0], cns[0, 1] = y0, m0, c0, n0
        fresh = n0 == 0
        raw = []                                                      # the gate pre-activations
        steps = zip(inputs.unbind(0), ys.unbind(0), ys[1:].unbind(0), ms.unbind(0), ms[1:].unbind(0),
                    cns.unbind(0), cns[1:].unbind(0), cns[1:, 0].unbind(0), cns[1:, 1].unbind(0),
                    gates_if.unbind(0), gates_if[:, 0].unbind(0), gates_if[:, 1].unbind(0), z_one.unbind(0),
                    z_one[:, 0].unbind(0), o_gate.unbind(0))
        for t, (step, y, y_new, m, m_new, cn, cn_new, c_new, n_new, i_f, i, f, z_1, z, o) in enumerate(steps):
            pre = torch.baddbmm(step, y, kernel)                          # (baddbmm_ runs head by head)
            raw.append(pre)
            raw_i, raw_f, raw_z, raw_o = pre.split(dh, dim=-1)
            log_f = F.logsigmoid(raw_f).add_(m)
            torch.maximum(raw_i, log_f, out=m_new)
            if t == 0:
                torch.where(fresh, raw_i, m_new, out=m_new)
            torch.sub(torch.stack([raw_i, log_f]), m_new, out=i_f).exp_()
            torch.tanh(raw_z, out=z)
            torch.sigmoid(raw_o, out=o)
            torch.mul(cn, f, out=cn_new).addcmul_(i, z_1)             # c = f' c + i' tanh(z~), n = f' n + i'
            torch.mul(o, c_new, out=y_new).div_(n_new)
        ctx.save_for_backward(kernel, torch.stack(raw), ys, ms, cns, gates_if, z_one, o_gate, fresh)
        return ys[1:], ys[T].clone(), cns[T, 0].clone(), cns[T, 1].clone(), ms[T].clone()

    @staticmethod
    def backward(ctx, d_out: Tensor, d_y: Tensor, d_c: Tensor, d_n: Tensor, d_m: Tensor):
        kernel, raw, ys, ms, cns, gates_if, z_one, o, fresh = ctx.saved_tensors
        T, H, B, four_dh = raw.shape
        dh = four_dh // 4
        i, f, z = gates_if[:, 0], gates_if[:, 1], z_one[:, 0]          # each [T, H, B, dh]
        raw_i, raw_f = raw[..., :dh], raw[..., dh:2 * dh]
        log_f = F.logsigmoid(raw_f).add_(ms[:-1])
        new_c, new_n, old_c, old_n, y = cns[1:, 0], cns[1:, 1], cns[:-1, 0], cns[:-1, 1], ys[1:]
        # coefficients of the step's linear backward for all steps at once, pairs and triples stacked on dim 1
        inv_n = new_n.reciprocal()
        to_c_n = raw.new_empty(T, 2, H, B, dh)                        # dc, dn += a * these
        torch.mul(o, inv_n, out=to_c_n[:, 0])
        torch.mul(y, inv_n, out=to_c_n[:, 1]).neg_()
        d_raw_o_coef = (new_c * to_c_n[:, 0]).mul_(1 - o)
        from_c, from_n = raw.new_empty(T, 3, H, B, dh), raw.new_empty(T, 3, H, B, dh)
        torch.mul(i, z, out=from_c[:, 0])                             # (di' i', df' f', -both) from dc ...
        torch.mul(f, old_c, out=from_c[:, 1])
        torch.add(from_c[:, 0], from_c[:, 1], out=from_c[:, 2]).neg_()
        from_n[:, 0] = i                                              # ... and from dn
        torch.mul(f, old_n, out=from_n[:, 1])
        torch.add(i, from_n[:, 1], out=from_n[:, 2]).neg_()
        d_raw_z_coef = torch.addcmul(i, from_c[:, 0], z, value=-1)    # i' (1 - tanh(z~)^2)
        split_m = raw.new_empty(T, 2, H, B, dh)                       # dm_t's shares to i~ and log f
        split_m[:, 0] = raw_i > log_f                                 # torch.maximum's backward: halves on ties
        split_m[:, 0].masked_fill_(raw_i == log_f, 0.5)
        split_m[0, 0].masked_fill_(fresh, 1.0)
        split_m[:, 1].fill_(1).sub_(split_m[:, 0])
        to_raw_if = raw.new_empty(T, 2, H, B, dh)
        to_raw_if[:, 0] = 1
        torch.sigmoid(raw_f.neg(), out=to_raw_if[:, 1])
        d_raw = torch.empty_like(raw)
        d_raw_gates = d_raw.view(T, H, B, 4, dh).permute(0, 3, 1, 2, 4)   # [T, 4, H, B, dh] views of d_raw
        d_outs = d_out.contiguous()
        kernel_t = kernel.transpose(1, 2).contiguous()
        a = d_outs[T - 1] + d_y
        dcn = torch.stack([d_c, d_n])
        dc, dn = dcn.unbind(0)
        dm = d_m.clone()
        steps = zip(d_raw.unbind(0), d_raw_gates[:, :2].unbind(0), d_raw_gates[:, 2].unbind(0),
                    d_raw_gates[:, 3].unbind(0), to_c_n.unbind(0), d_raw_z_coef.unbind(0), d_raw_o_coef.unbind(0),
                    from_c.unbind(0), from_n.unbind(0), split_m.unbind(0), to_raw_if.unbind(0), f.unbind(0))
        d_outs_before = [None, *d_outs[:-1].unbind(0)]
        for t, (d_pre, d_if, d_rz, d_ro, c_cn, c_rz, c_ro, c_from_c, c_from_n, w, c_if, f_t) in reversed(
                list(enumerate(steps))):
            dcn.addcmul_(a, c_cn)
            torch.mul(a, c_ro, out=d_ro)
            torch.mul(dc, c_rz, out=d_rz)
            direct = torch.mul(c_from_c, dc).addcmul_(c_from_n, dn)    # di' i', df' f', -(di' i' + df' f')
            dm.add_(direct[2])                                         # dm_t
            d_i_logf = direct[:2].addcmul_(w, dm)                      # di~ and dlog f
            torch.mul(d_i_logf, c_if, out=d_if)                        # di~ and df~ = dlog f sigmoid(-f~)
            dm = d_i_logf[1]                                           # dm_{t-1} = dlog f
            dcn.mul_(f_t)
            a = torch.baddbmm(d_outs_before[t], d_pre, kernel_t) if t else torch.bmm(d_pre, kernel_t)
        d_kernel = torch.bmm(ys[:-1].permute(1, 3, 0, 2).reshape(H, dh, T * B),
                             d_raw.transpose(0, 1).reshape(H, T * B, 4 * dh))
        return d_raw, d_kernel, a, dc, dn, dm.clone()


def _slstm_steps(inputs: Tensor, kernel: Tensor, state: SLSTMState) -> tuple[Tensor, SLSTMState]:
    """The forward alone (no graph needed: decoding, evaluation): the step loop without the saved buffers."""
    dh = kernel.shape[1]
    y, c, n, m = state
    outputs = []
    for t, step in enumerate(inputs.unbind(0)):
        raw_i, raw_f, raw_z, raw_o = torch.baddbmm(step, y, kernel).split(dh, dim=-1)
        y, c, n, m = slstm_pointwise(raw_i, raw_f, raw_z, raw_o, c, n, m, may_start=t == 0)
        outputs.append(y)
    return torch.stack(outputs, dim=0), (y, c, n, m)


def slstm_scan(wx: Tensor, R: Tensor, initial_state: SLSTMState | None = None) -> tuple[Tensor, SLSTMState]:
    """Same inputs and outputs as `naive_slstm`; heads-first layout, one `baddbmm` per step. With a graph to
    build, the backward is written out (`_SLSTMScan`)."""
    B, T, H, _, dh = wx.shape
    out_dtype, dtype = wx.dtype, compute_dtype(wx)
    inputs = wx.to(dtype).permute(1, 2, 0, 3, 4).reshape(T, H, B, 4 * dh)      # [T, H, B, 4 dh]
    kernel = R.to(dtype).reshape(H, dh, 4 * dh)
    if initial_state is None:
        state = zero_slstm_state(H, B, dh, inputs)
    else:
        state = tuple(s.to(dtype).transpose(0, 1) for s in initial_state)    # [H, B, dh]
    if T == 0:
        return wx.new_zeros(B, 0, H, dh), tuple(s.transpose(0, 1) for s in state)
    if torch.is_grad_enabled() and any(x.requires_grad for x in (inputs, kernel, *state)):
        out, *final = _SLSTMScan.apply(inputs, kernel, *(s.contiguous() for s in state))
    else:
        out, final = _slstm_steps(inputs, kernel, state)
    return out.permute(2, 0, 1, 3).to(out_dtype), tuple(s.transpose(0, 1) for s in final)
