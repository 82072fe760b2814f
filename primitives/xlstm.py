"""xLSTM's mLSTM layer (Beck et al. 2024): a matrix memory with stabilised exponential gating.

Per head, with input gate pre-activation i~_t, forget gate f_t = sigmoid(f~_t) and k scaled by dk^-0.5:
    C_t = f_t C_{t-1} + exp(i~_t) k_t^T v_t,   n_t = f_t n_{t-1} + exp(i~_t) k_t
    h_t = q_t C_t / max(|q_t . n_t|, 1)
computed stabilised by `primitives.ops.chunk_mlstm` (the step reference is `naive_mlstm`; both documented in
`primitives/ops/chunked_mlstm.py`). The state is (C', n', m), starting from zeros.

Layer (xLSTM 7B style layout, `primitives.common.HeadMixer`; d = d_model, K = expand_k d, V = expand_v d,
H heads):
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

from composer.fields import option
from primitives.base import Cost, State, register
from primitives.common import HeadMixer, HeadsConfig, head_sizes
from primitives.ops import CHUNK_SIZE, chunk_mlstm


@dataclass
class MLSTMConfig(HeadsConfig):
    chunk_size: int = option(CHUNK_SIZE, "chunk length of the chunked parallel form", ge=1)


@register("mlstm")
class MLSTM(HeadMixer):
    """mLSTM layer: q, k, v and per-head exponential input / sigmoid forget gates, swish output gate."""

    symbol = "X"
    saved_values = 8
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
    def extra_params(cls, cfg: MLSTMConfig, d_model: int) -> int:
        H = head_sizes(cfg, d_model)[0]
        return 2 * d_model * H + 2 * H

    @classmethod
    def cost(cls, cfg: MLSTMConfig, d_model: int, seq_len: int, dtype_bytes: int = 2) -> Cost:
        base = super().cost(cfg, d_model, seq_len, dtype_bytes)
        H, K, V = head_sizes(cfg, d_model)
        dk, dv, c = K // H, V // H, cfg.chunk_size
        flops = base.flops_per_token + H * 2 * (c - CHUNK_SIZE) * (dk + dv)  # the base counts CHUNK_SIZE
        return Cost(base.params, float(flops), base.state_bytes + (K + H) * dtype_bytes)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> State:
        state = super().init_state(batch_size, device, dtype)
        state["n"] = torch.zeros(batch_size, self.n_heads, self.dk, device=device, dtype=dtype)
        state["m"] = torch.zeros(batch_size, self.n_heads, device=device, dtype=dtype)
        return state

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        q, k, v, _ = self.project(x, state)
        q, k, v = q.float(), k.float(), v.float()                         # [B, T, H, d]
        igate, fgate = self.gates(x).float().chunk(2, dim=-1)              # [B, T, H]
        carried = None if state is None else (state["ssm"].float(), state["n"].float(), state["m"].float())
        h, final = chunk_mlstm(q, k * self.dk**-0.5, v, igate, F.logsigmoid(fgate), carried,
                               output_final_state=state is not None, chunk_size=self.cfg.chunk_size)
        y, new_state = self.finish(x, h, None if final is None else final[0], None, state)
        if new_state is not None:
            n, m = final[1:]
            new_state["n"], new_state["m"] = n.to(state["n"].dtype), m.to(state["m"].dtype)
        return y, new_state
