"""xLSTM's mLSTM layer (Beck et al. 2024): a matrix memory with stabilised exponential gating.

Per head, with input gate pre-activation i~_t, forget gate f_t = sigmoid(f~_t) and k scaled by dk^-0.5:
    C_t = f_t C_{t-1} + exp(i~_t) k_t^T v_t,   n_t = f_t n_{t-1} + exp(i~_t) k_t
    h_t = q_t C_t / max(|q_t . n_t|, 1)
Stabilised (what is computed and stored): m_t = max(log f_t + m_{t-1}, i~_t), C' = C exp(-m), n' = n exp(-m),
h_t = q_t C'_t / max(|q_t . n'_t|, exp(-m_t)). The state is (C', n', m), starting from zeros.

Forms: `mlstm_recurrent` (the step loop, the reference) and `mlstm_chunked`, which walks the sequence in
chunks of `chunk_size` and inside a chunk uses the stabilised parallel form: with G the cumulative log
forget gate, log D_ts = G_t - G_s + i~_s (s <= t) and the carried state weighted by G_t + m_0, m_t is the
max of all of these, which is exactly the value the step recurrence reaches, so both forms agree.

Layer (xLSTM 7B style layout; d = d_model, K = expand_k d, V = expand_v d, H heads):
    q, k, v   d (2K + V);  igate, fgate  2 (d H + H);  output gate (swish)  d V;  per-head RMSNorm  V;
    out       V d
    params = d (2K + 2V) + V d + V + 2 d H + 2 H;  defaults K = d / 2, V = d: ~4 d^2.
FLOPs per token: projections (2 per multiply-add) and, per head, 2 (2 dk dv) for the state update and
readout, 2 c (dk + dv) for the intra-chunk part (c = chunk_size). State: C' [H, dk, dv], n' [H, dk], m [H].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from primitives.base import Cost, State, positive, register
from primitives.linear_attention import HeadMixer, HeadsConfig, head_sizes

Tensor = torch.Tensor
MLSTMState = tuple[Tensor, Tensor, Tensor]


def zero_state(q: Tensor, v: Tensor) -> MLSTMState:
    B, H, _, K = q.shape
    return (q.new_zeros(B, H, K, v.shape[-1]), q.new_zeros(B, H, K), q.new_zeros(B, H))


def mlstm_recurrent(q: Tensor, k: Tensor, v: Tensor, igate: Tensor, log_fgate: Tensor,
                    state: MLSTMState | None = None) -> tuple[Tensor, MLSTMState]:
    """Step-by-step mLSTM. q, k [B, H, T, dk] (k already scaled), v [B, H, T, dv], gates [B, H, T]."""
    C, n, m = state if state is not None else zero_state(q, v)
    outputs = []
    for t in range(q.shape[2]):
        m_new = torch.maximum(log_fgate[..., t] + m, igate[..., t])
        f = torch.exp(log_fgate[..., t] + m - m_new)[..., None]
        i = torch.exp(igate[..., t] - m_new)[..., None]
        C = f[..., None] * C + (i * k[:, :, t])[..., None] * v[:, :, t, None, :]
        n = f * n + i * k[:, :, t]
        m = m_new
        q_t = q[:, :, t]
        den = torch.maximum((q_t * n).sum(-1).abs(), torch.exp(-m))
        outputs.append(torch.einsum("bhk,bhkv->bhv", q_t, C) / den[..., None])
    return torch.stack(outputs, dim=2), (C, n, m)


def mlstm_parallel(q: Tensor, k: Tensor, v: Tensor, igate: Tensor, log_fgate: Tensor,
                   state: MLSTMState) -> tuple[Tensor, MLSTMState]:
    """The stabilised parallel form over one chunk [B, H, L, *], continuing `state`."""
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


def mlstm_chunked(q: Tensor, k: Tensor, v: Tensor, igate: Tensor, log_fgate: Tensor,
                  state: MLSTMState | None = None, chunk_size: int = 64) -> tuple[Tensor, MLSTMState]:
    """mLSTM over the sequence in chunks (linear in T); equals `mlstm_recurrent`."""
    state = state if state is not None else zero_state(q, v)
    outputs = []
    for start in range(0, q.shape[2], chunk_size):
        piece = slice(start, start + chunk_size)
        h, state = mlstm_parallel(q[:, :, piece], k[:, :, piece], v[:, :, piece], igate[..., piece],
                                  log_fgate[..., piece], state)
        outputs.append(h)
    return torch.cat(outputs, dim=2), state


@dataclass
class MLSTMConfig(HeadsConfig):
    chunk_size: int = 64


@register("mlstm")
class MLSTM(HeadMixer):
    """mLSTM layer: q, k, v and per-head exponential input / sigmoid forget gates, swish output gate."""

    Config = MLSTMConfig

    def __init__(self, d_model: int, cfg: MLSTMConfig):
        super().__init__(d_model, cfg)
        H = self.n_heads
        self.gates = nn.Linear(d_model, 2 * H, bias=True)
        with torch.no_grad():
            self.gates.weight.normal_(0.0, 0.02)
            self.gates.bias[:H].normal_(0.0, 0.1)                        # input gate
            self.gates.bias[H:].copy_(torch.linspace(3.0, 6.0, H))      # forget gate: remember at start

    @classmethod
    def check(cls, cfg: MLSTMConfig, d_model: int) -> None:
        super().check(cfg, d_model)
        positive("chunk_size", cfg.chunk_size)

    @classmethod
    def extra_params(cls, cfg: MLSTMConfig, d_model: int) -> int:
        H = head_sizes(cfg, d_model)[0]
        return 2 * d_model * H + 2 * H

    @classmethod
    def cost(cls, cfg: MLSTMConfig, d_model: int, seq_len: int, dtype_bytes: int = 2) -> Cost:
        base = super().cost(cfg, d_model, seq_len, dtype_bytes)
        H, K, V = head_sizes(cfg, d_model)
        dk, dv, c = K // H, V // H, cfg.chunk_size
        flops = base.flops_per_token + H * 2 * (c - 64) * (dk + dv)  # the base counts chunks of 64
        return Cost(base.params, float(flops), base.state_bytes + (K + H) * dtype_bytes)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> State:
        state = super().init_state(batch_size, device, dtype)
        state["n"] = torch.zeros(batch_size, self.n_heads, self.dk, device=device, dtype=dtype)
        state["m"] = torch.zeros(batch_size, self.n_heads, device=device, dtype=dtype)
        return state

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        q, k, v, _ = self.project(x, state)
        q, k, v = (t.float().transpose(1, 2) for t in (q, k, v))         # [B, H, T, d]
        igate, fgate = self.gates(x).float().transpose(1, 2).chunk(2, dim=1)
        carried = None if state is None else (state["ssm"].float(), state["n"].float(), state["m"].float())
        h, (C, n, m) = mlstm_chunked(q, k * self.dk**-0.5, v, igate, F.logsigmoid(fgate), carried,
                                     self.cfg.chunk_size)
        y, new_state = self.finish(x, h.transpose(1, 2), C, None, state)
        if new_state is not None:
            new_state["n"], new_state["m"] = n.to(state["n"].dtype), m.to(state["m"].dtype)
        return y, new_state
