"""xLSTM's two layers (Beck et al. 2024): mLSTM (a matrix memory) and sLSTM (a scalar memory), both with
stabilised exponential gating.

mLSTM.

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

sLSTM, as the released `sLSTMLayer` (`xlstm/blocks/slstm/layer.py`; H heads of dh = d / H, k = kernel_size):
    x_c = silu(conv(x))                  causal depthwise conv with bias: d k + d  (none when kernel_size = 0)
    i~, f~ = W_i x_c, W_f x_c;  z~, o~ = W_z x, W_o x      block-diagonal per head, no bias: 4 d^2 / H
    + y_{t-1} R + b                      recurrent kernel R block-diagonal per head: 4 d^2 / H; bias 4 d
    the exponential-gating recurrence of `primitives/ops/slstm.py` (c, n, m per unit; y = sigmoid(o~) c / n)
    out = per-head LayerNorm(y)          weight d, no bias, eps 1e-5 (the layer has no output projection; the
                                         xLSTM block puts its gated MLP after it, a separate channel mixer here)
    params = 8 d^2 / H + d k + 6 d  (8 d^2 / H + 5 d without the conv); defaults (H = 4, k = 4): 2 d^2 + 10 d.
Initialisation as released: R = 0, the forget-gate bias 5 - 12 (j / (dh - 1))^0.3 over a head's units (its
first block's power law), the other biases 0, the input weights normal with std sqrt(2 / (5 d)).
The recurrence is nonlinear in y_{t-1}: training runs the step loop (`ops.slstm_scan`, input projections for all
steps at once). FLOPs per token: 2 (8 d^2 / H + d k) (projections, recurrent matmul and conv; the pointwise
gates are not counted). State: y, c, n, m [d] each, and the conv cache [d, k - 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from composer.fields import option
from primitives.base import Cost, Primitive, State, divides, register
from primitives.common import HeadMixer, HeadsConfig, ShortConv, head_sizes
from primitives.ops import CHUNK_SIZE, chunk_mlstm, slstm_scan


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


@dataclass
class SLSTMConfig:
    n_heads: int = option(4, "number of heads: the recurrence and the gate projections are block-diagonal per head",
                          ge=1)
    kernel_size: int = option(4, "width of the causal convolution feeding the input and forget gates (0: none)",
                              ge=0)


@register("slstm")
class SLSTM(Primitive):
    """sLSTM layer: scalar memory with exponential gating and head-wise recurrence, then a per-head LayerNorm."""

    symbol = "SL"
    saved_values = 14
    kind = "token_mixer"
    Config = SLSTMConfig
    width_scaled = ("n_heads",)

    def __init__(self, d_model: int, cfg: SLSTMConfig):
        super().__init__(d_model, cfg)
        H = cfg.n_heads
        dh = d_model // H
        self.n_heads, self.head_dim = H, dh
        if cfg.kernel_size:
            self.conv = ShortConv(d_model, cfg.kernel_size, bias=True, activation=True)
        std = (2 / (5 * d_model)) ** 0.5
        self.w_if = nn.Parameter(torch.randn(H, dh, 2 * dh) * std)      # i, f from the convolved input
        self.w_zo = nn.Parameter(torch.randn(H, dh, 2 * dh) * std)      # z, o from the input
        self.recurrent = nn.Parameter(torch.zeros(H, dh, 4, dh))       # gates i, f, z, o
        bias = torch.zeros(H, 4, dh)
        bias[:, 1] = 5 - 12 * (torch.arange(dh) / max(dh - 1, 1)) ** 0.3
        self.bias = nn.Parameter(bias)
        self.norm = nn.Parameter(torch.ones(d_model))

    @classmethod
    def check(cls, cfg: SLSTMConfig, d_model: int) -> None:
        divides("n_heads", cfg.n_heads, d_model, "d_model")

    @classmethod
    def cost(cls, cfg: SLSTMConfig, d_model: int, seq_len: int, dtype_bytes: int = 2) -> Cost:
        d, k = d_model, cfg.kernel_size
        matmul = 8 * d * d // cfg.n_heads
        conv = ShortConv.param_count(d, k, bias=True) if k else 0
        params = matmul + conv + 4 * d + d
        flops = 2 * matmul + 2 * d * k
        return Cost(params, float(flops), (4 * d + d * max(k - 1, 0)) * dtype_bytes)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> State:
        zeros = torch.zeros(batch_size, self.n_heads, self.head_dim, device=device, dtype=dtype)
        state = {"y": zeros, "c": zeros.clone(), "n": zeros.clone(), "m": zeros.clone()}
        if self.cfg.kernel_size:
            state["conv"] = self.conv.empty_cache(batch_size, device, dtype)
        return state

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        B, T, d = x.shape
        H, dh = self.n_heads, self.head_dim
        x_conv, cache = x, None
        if self.cfg.kernel_size:
            x_conv, cache = self.conv(x, None if state is None else state["conv"])
        # wx is laid out [T, H, B, 4 dh] in memory, the recurrence's layout, and viewed [B, T, H, 4, dh]
        w_if = torch.einsum("bthi,hio->thbo", x_conv.float().view(B, T, H, dh), self.w_if.float())
        w_zo = torch.einsum("bthi,hio->thbo", x.float().view(B, T, H, dh), self.w_zo.float())
        wx = torch.cat([w_if, w_zo], dim=-1).view(T, H, B, 4, dh).add_(self.bias.float()[:, None])
        wx = wx.permute(2, 0, 1, 3, 4)
        carried = None if state is None else tuple(state[key].float() for key in ("y", "c", "n", "m"))
        y, final = slstm_scan(wx, self.recurrent, carried)
        y = F.layer_norm(y, (dh,), eps=1e-5).reshape(B, T, d) * self.norm.float()
        out = y.to(x.dtype)
        if state is None:
            return out, None
        new_state = {key: value.to(state[key].dtype) for key, value in zip(("y", "c", "n", "m"), final)}
        if self.cfg.kernel_size:
            new_state["conv"] = cache
        return out, new_state
