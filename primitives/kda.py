"""Kimi Delta Attention (KDA; Kimi Linear, Moonshot AI 2025): Gated DeltaNet with a decay per key channel.

Layer, as flash-linear-attention's `fla/layers/kda.py` and the Kimi Linear release (H heads, dk = head_dim,
dv = dk * expand_v, K = H dk, V = H dv, r = gate_rank, default dv as in both releases, k = kernel_size):

    q, k, v = silu(conv(W_q x)), silu(conv(W_k x)), silu(conv(W_v x))    d (2K + V) + (2K + V) k
        short depthwise causal convolutions without bias; q, k L2-normalised per head
    g = -exp(A_log_h) softplus(W_f2 W_f1 x + dt_bias)       per key channel: d r + r K, A_log H, dt_bias K
    beta = sigmoid(W_b x)                                     d H
    S_t = diag(exp(g_t)) S_{t-1};  S_t += beta_t k_t^T (v_t - k_t S_t);  o_t = dk^-0.5 q_t S_t   (ops.kda)
    o = RMSNorm(o) * sigmoid(W_g2 W_g1 x) -> W_o               norm weight dv (shared by the heads),
                                                               d r + r V (+ V with gate_bias), V d
    params = d (2K + V) + (2K + V) k + 2 d r + r (K + V) + d H + H + K + dv + V d  (+ V with gate_bias)

The low-rank output gate has no bias in the Kimi Linear release (`g_b_proj`) and one in fla's layer
(`gate_bias`). Kimi-Linear-48B-A3B: d = 2304, n_heads 32, head_dim 128, kernel 4. Defaults here: about one
head per 64 channels and K = V = d, ~4 d^2 + low-rank gates. Initialisation: A uniform in [1, 16] (as released);
dt_bias with softplus(dt_bias) log-uniform in [1e-3, 0.1] (the Mamba init, as `gated_deltanet` here).

FLOPs per token: the projections and convolution (2 per multiply-add) and the chunked form's matmuls per head,
2 [c (3 dk + dv) + c (dk + dv) / 2 + dk^2 + 2 dk dv + dk^2 dv / c] (c = DELTA_RULE_CHUNK_SIZE: scores, triangular solve,
intra-chunk products, state hand-over); elementwise gates and norms are not counted.
State: S [H, dk, dv] and the convolution cache [2K + V, k - 1].
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from composer.fields import option
from primitives.base import Cost, Primitive, State, register
from primitives.common import ShortConv, check_expanded_heads, expanded_heads, inverse_softplus_dt, rms_norm
from primitives.ops import DELTA_RULE_CHUNK_SIZE, kda
from primitives.ops.l2_normalize import l2_normalize


@dataclass
class KDAConfig:
    n_heads: int | None = option(None, "number of heads (null: derived from d_model, about one per 64 channels)", ge=1)
    head_dim: int | None = option(None, "query/key width of one head (null: d_model / n_heads)", ge=1)
    expand_v: float = option(1.0, "value width of a head as a multiple of head_dim", gt=0)
    kernel_size: int = option(4, "width of the short causal convolutions on q, k and v", ge=1)
    gate_rank: int | None = option(None, "rank of the low-rank decay and output-gate projections (null: the value "
                                   "head width, as released)", ge=1)
    gate_bias: bool = option(False, "bias on the output gate's second projection (fla's layer: true; Kimi Linear: "
                             "false)")


def kda_sizes(cfg: KDAConfig, d_model: int) -> tuple[int, int, int, int]:
    """(n_heads H, key head width dk, value head width dv, gate rank r)."""
    H, dk, dv = expanded_heads(cfg.n_heads, cfg.head_dim, cfg.expand_v, d_model)
    return H, dk, dv, cfg.gate_rank or dv


@register("kda")
class KimiDeltaAttention(Primitive):
    """Kimi Delta Attention: gated delta rule with per-channel decay, low-rank gates, sigmoid-gated RMSNorm."""

    symbol = "KD"
    saved_values = 34
    kind = "token_mixer"
    Config = KDAConfig
    width_scaled = ("n_heads",)  # head_dim, expand_v and the gate rank kept: widening adds heads

    def __init__(self, d_model: int, cfg: KDAConfig):
        super().__init__(d_model, cfg)
        H, dk, dv, r = kda_sizes(cfg, d_model)
        self.n_heads, self.dk, self.dv = H, dk, dv
        K, V = H * dk, H * dv
        self.qkv = nn.Linear(d_model, 2 * K + V, bias=False)
        self.conv = ShortConv(2 * K + V, cfg.kernel_size, activation=True)
        self.f_proj = nn.Sequential(nn.Linear(d_model, r, bias=False), nn.Linear(r, K, bias=False))
        self.b_proj = nn.Linear(d_model, H, bias=False)
        self.A_log = nn.Parameter(torch.log(torch.empty(H).uniform_(1, 16)))
        self.dt_bias = nn.Parameter(inverse_softplus_dt(K))
        self.g_proj = nn.Sequential(nn.Linear(d_model, r, bias=False), nn.Linear(r, V, bias=cfg.gate_bias))
        self.o_norm = nn.Parameter(torch.ones(dv))
        self.o_proj = nn.Linear(V, d_model, bias=False)

    @classmethod
    def check(cls, cfg: KDAConfig, d_model: int) -> None:
        check_expanded_heads(cfg.n_heads, cfg.head_dim, cfg.expand_v, d_model)

    @classmethod
    def resolve(cls, cfg: KDAConfig, d_model: int) -> KDAConfig:
        H, dk, dv, r = kda_sizes(cfg, d_model)
        return replace(cfg, n_heads=H, head_dim=dk, gate_rank=r)

    @classmethod
    def cost(cls, cfg: KDAConfig, d_model: int, seq_len: int, dtype_bytes: int = 2) -> Cost:
        H, dk, dv, r = kda_sizes(cfg, d_model)
        K, V, d, c = H * dk, H * dv, d_model, DELTA_RULE_CHUNK_SIZE
        matmul = d * (2 * K + V) + 2 * d * r + r * (K + V) + d * H + V * d
        conv = ShortConv.param_count(2 * K + V, cfg.kernel_size)
        params = matmul + conv + H + K + (V if cfg.gate_bias else 0) + dv
        chunked = c * (3 * dk + dv) + c * (dk + dv) / 2 + dk * dk + 2 * dk * dv + dk * dk * dv / c
        flops = 2 * matmul + 2 * conv + 2 * H * chunked
        state = (H * dk * dv + (2 * K + V) * (cfg.kernel_size - 1)) * dtype_bytes
        return Cost(params, float(flops), state)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> State:
        return {"ssm": torch.zeros(batch_size, self.n_heads, self.dk, self.dv, device=device, dtype=dtype),
                "conv": self.conv.empty_cache(batch_size, device, dtype)}

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        B, T, _ = x.shape
        H, dk, dv = self.n_heads, self.dk, self.dv
        qkv, cache = self.conv(self.qkv(x), None if state is None else state["conv"])
        q, k, v = qkv.split([H * dk, H * dk, H * dv], dim=-1)
        q = l2_normalize(q.float().view(B, T, H, dk))
        k = l2_normalize(k.float().view(B, T, H, dk))
        decay_in = self.f_proj(x).float().view(B, T, H, dk) + self.dt_bias.float().view(H, dk)
        g = -self.A_log.float().exp().view(H, 1) * F.softplus(decay_in)
        beta = torch.sigmoid(self.b_proj(x).float())
        o, ssm = kda(q, k, v.float().view(B, T, H, dv), g, beta,
                     initial_state=None if state is None else state["ssm"], output_final_state=state is not None)
        o = rms_norm(o, self.o_norm.float(), eps=1e-5) * torch.sigmoid(self.g_proj(x).float().view(B, T, H, dv))
        y = self.o_proj(o.reshape(B, T, H * dv).to(x.dtype))
        if state is None:
            return y, None
        return y, {"ssm": ssm.to(state["ssm"].dtype), "conv": cache}
