"""Linear-attention family: linear_attention, retnet, gla, hgrn2, deltanet, gated_deltanet.

All share one layout, `primitives.common.HeadMixer`: H heads; queries/keys of total width K = round(expand_k d)
(dk = K / H per head), values of total width V = round(expand_v d) (dv = V / H); a matrix state S
[B, H, dk, dv] per sequence, computed by the operators of `primitives.ops`. n_heads defaults to V // 64 (at
least 1, lowered until it divides K and V).
Parameters (d = d_model; "norm" is a per-head RMSNorm with one weight per value channel, V params):

  linear_attention  q, k, v, o                                d (2K + V) + V d        (+ V norm, identity map)
      Katharopoulos et al. 2020. feature_map "elu": phi = elu + 1 on q and k and the output is normalised by
      phi(q) . sum phi(k) (the running key sum rides along as an extra value column of the state, scale 1);
      feature_map "identity": q, k as they are, scale dk^-0.5, and the output goes through the norm.
  retnet            q, k, v, gate, o, norm                    d (2K + 2V) + V d + V
      Sun et al. 2023, multi-scale retention: fixed decay gamma_h = 1 - 2^(-5-h) per head, swish output
      gate, per-head RMS group norm (no xPos rotation).
  gla               q, k, v, gate, o, norm, low-rank gk       d (2K + 2V) + V d + V + d r + r K + K
      Yang et al. 2024: data-dependent vector decay g = logsigmoid(W2 W1 x + b) / 16 (rank r = gate_rank).
  hgrn2             q, f, i, gate, o, norm                    d (2K + 2V) + V d + V
      Qin et al. 2024: forget gate f = sigmoid(W_f x) is the vector decay, its complement 1 - f the key,
      i the value (chunk_gla, scale 1).
  deltanet          q, k, v, beta, conv(q,k,v), o, norm       d (2K + V) + d H + (2K + V) k + V d + V
      Yang et al. 2024 (Schlag et al. 2021): q, k = l2norm(silu(conv(.))), v = silu(conv(v)),
      beta = sigmoid(W_b x) per head; `output_gate` adds a swish gate (+ V d).
  gated_deltanet    deltanet + output gate + alpha decay      d (2K + 2V) + 2 d H + 2 H + (2K + V) k + V d + V
      Yang et al. 2025: g = -exp(A_log) softplus(W_a x + dt_bias) (Mamba-2 parametrisation). Qwen3-Next's layer:
      `key_heads` (grouped value heads: Hk query/key heads of K / Hk, each serving H / Hk value heads) and
      `shared_norm` (one norm weight per head channel, V / H instead of V).

Defaults: linear_attention and deltanet use K = V = d (4 d^2 + small); the gated layers use K = d / 2,
V = d (4 d^2 + small). FLOPs per token: projections and convolutions (2 per multiply-add) plus, per head,
2 (2 dk dv) for the state update and readout and 2 c (dk + dv) for the intra-chunk part (c = CHUNK_SIZE,
64; the delta rules run chunks of DELTA_RULE_CHUNK_SIZE, 32); the delta rules add 2 dk dv for the k S product
of the error term. Elementwise gates and norms are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from composer.fields import option
from primitives.base import State, register
from primitives.common import HeadFeatures, HeadMixer, HeadsConfig, head_sizes, inverse_softplus_dt
from primitives.ops import DELTA_RULE_CHUNK_SIZE, delta_rule, gated_delta_rule, gla, simple_gla
from primitives.ops.l2_normalize import l2_normalize


@dataclass
class LinearAttentionConfig(HeadsConfig):
    expand_k: float = option(1.0, "query/key width as a multiple of d_model", gt=0)
    feature_map: Literal["elu", "identity"] = option("elu", "elu: elu + 1 with sum normalisation; identity: scaled "
                                                     "q, k and an output norm")


@register("linear_attention")
class LinearAttention(HeadMixer):
    """Linear attention without decay: elu+1 with sum normalisation, or identity with an output norm."""

    symbol = "L"
    saved_values = 4
    Config = LinearAttentionConfig

    @classmethod
    def features(cls, cfg: LinearAttentionConfig) -> HeadFeatures:
        identity = cfg.feature_map == "identity"
        return HeadFeatures(output_gate=False, norm=identity, extra_values=int(not identity))

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        q, k, v, _ = self.project(x, state)
        initial, final = self.initial(state)
        if self.cfg.feature_map == "identity":
            o, ssm = simple_gla(q, k, v, torch.zeros_like(q[..., 0]), initial_state=initial,
                                output_final_state=final)
            return self.finish(x, o, ssm, None, state)
        q, k = F.elu(q.float()) + 1, F.elu(k.float()) + 1
        v = torch.cat([v.float(), torch.ones_like(v[..., :1], dtype=torch.float32)], dim=-1)
        o, ssm = simple_gla(q, k, v, torch.zeros_like(q[..., 0]), scale=1.0, initial_state=initial,
                            output_final_state=final)
        o = o[..., :-1] / (o[..., -1:] + 1e-6)
        return self.finish(x, o, ssm, None, state)


@register("retnet")
class RetNet(HeadMixer):
    """Multi-scale retention with fixed per-head decays, swish gate and group norm."""

    symbol = "R"
    saved_values = 2
    Config = HeadsConfig

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        q, k, v, _ = self.project(x, state)
        heads = torch.arange(self.n_heads, device=x.device, dtype=torch.float32)
        log_gamma = torch.log1p(-torch.exp2(-5.0 - heads))
        g = log_gamma.expand(x.shape[0], x.shape[1], self.n_heads)
        initial, final = self.initial(state)
        o, ssm = simple_gla(q, k, v, g, initial_state=initial, output_final_state=final)
        return self.finish(x, o, ssm, None, state)


@dataclass
class GLAConfig(HeadsConfig):
    gate_rank: int = option(16, "rank of the low-rank forget-gate projection", ge=1)
    gate_normalizer: float = option(16.0, "divisor of the log forget gate", gt=0)


@register("gla")
class GLA(HeadMixer):
    """Gated linear attention with a low-rank data-dependent vector forget gate."""

    symbol = "G"
    saved_values = 8
    Config = GLAConfig

    def __init__(self, d_model: int, cfg: GLAConfig):
        super().__init__(d_model, cfg)
        self.gk = nn.Sequential(nn.Linear(d_model, cfg.gate_rank, bias=False),
                                nn.Linear(cfg.gate_rank, self.key_width, bias=True))

    @classmethod
    def extra_params(cls, cfg: GLAConfig, d_model: int) -> int:
        K = head_sizes(cfg, d_model)[1]
        return d_model * cfg.gate_rank + cfg.gate_rank * K + K

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        q, k, v, _ = self.project(x, state)
        g = F.logsigmoid(self.gk(x).float()) / self.cfg.gate_normalizer
        initial, final = self.initial(state)
        o, ssm = gla(q, k, v, g.view_as(q), initial_state=initial, output_final_state=final)
        return self.finish(x, o, ssm, None, state)


@register("hgrn2")
class HGRN2(HeadMixer):
    """HGRN2: the forget gate is the vector decay and its complement the key (q, f, i = q, k, v slots)."""

    symbol = "H"
    saved_values = 8
    Config = HeadsConfig

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        q, f, v, _ = self.project(x, state)
        g = F.logsigmoid(f.float())
        k = -torch.expm1(g)                          # 1 - f, computed stably
        initial, final = self.initial(state)
        o, ssm = gla(q, k, v, g, scale=1.0, initial_state=initial, output_final_state=final)
        return self.finish(x, o, ssm, None, state)


@dataclass
class DeltaNetConfig(HeadsConfig):
    expand_k: float = option(1.0, "query/key width as a multiple of d_model", gt=0)
    kernel_size: int = option(4, "width of the short causal convolution", ge=1)
    output_gate: bool = option(False, "swish output gate")


@register("deltanet")
class DeltaNet(HeadMixer):
    """DeltaNet: delta-rule memory with L2-normalised SiLU keys/queries and a sigmoid write strength."""

    symbol = "D"
    saved_values = 16
    Config = DeltaNetConfig
    uses_delta_rule = True
    operator_chunk_size = DELTA_RULE_CHUNK_SIZE

    def __init__(self, d_model: int, cfg: DeltaNetConfig):
        super().__init__(d_model, cfg)
        self.b_proj = nn.Linear(d_model, self.n_heads, bias=False)

    @classmethod
    def features(cls, cfg: DeltaNetConfig) -> HeadFeatures:
        return HeadFeatures(kernel_size=cfg.kernel_size, output_gate=cfg.output_gate)

    @classmethod
    def extra_params(cls, cfg: DeltaNetConfig, d_model: int) -> int:
        return d_model * head_sizes(cfg, d_model)[0]

    def qk_beta(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, ...]:
        q, k, v, cache = self.project(x, state)
        q, k = l2_normalize(q.float()), l2_normalize(k.float())
        return q, k, v, torch.sigmoid(self.b_proj(x).float()), cache

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        q, k, v, beta, cache = self.qk_beta(x, state)
        initial, final = self.initial(state)
        o, ssm = delta_rule(q, k, v, beta, initial_state=initial, output_final_state=final)
        return self.finish(x, o, ssm, cache, state)


@dataclass
class GatedDeltaNetConfig(HeadsConfig):
    kernel_size: int = option(4, "width of the short causal convolution", ge=1)
    key_heads: int | None = option(None, "query/key heads, each shared by n_heads / key_heads value heads (grouped "
                                   "value heads; Qwen3-Next: 16 of 32; null: n_heads)", ge=1)
    shared_norm: bool = option(False, "one output-norm weight per head channel, shared by the heads (Qwen3-Next)")


@register("gated_deltanet")
class GatedDeltaNet(DeltaNet):
    """Gated DeltaNet: DeltaNet with a Mamba-2 style scalar decay per head, output gate and norm."""

    symbol = "GD"
    saved_values = 16
    Config = GatedDeltaNetConfig
    width_scaled = ("n_heads", "key_heads")

    def __init__(self, d_model: int, cfg: GatedDeltaNetConfig):
        super().__init__(d_model, cfg)
        H = self.n_heads
        self.a_proj = nn.Linear(d_model, H, bias=False)
        self.A_log = nn.Parameter(torch.log(torch.empty(H).uniform_(1, 16)))
        self.dt_bias = nn.Parameter(inverse_softplus_dt(H))

    @classmethod
    def features(cls, cfg: GatedDeltaNetConfig) -> HeadFeatures:
        return HeadFeatures(kernel_size=cfg.kernel_size, key_heads=cfg.key_heads or 0, shared_norm=cfg.shared_norm)

    @classmethod
    def extra_params(cls, cfg: GatedDeltaNetConfig, d_model: int) -> int:
        H = head_sizes(cfg, d_model)[0]
        return 2 * d_model * H + 2 * H

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        q, k, v, beta, cache = self.qk_beta(x, state)
        g = -torch.exp(self.A_log.float()) * F.softplus(self.a_proj(x).float() + self.dt_bias)
        initial, final = self.initial(state)
        o, ssm = gated_delta_rule(q, k, v, g, beta, initial_state=initial, output_final_state=final)
        return self.finish(x, o, ssm, cache, state)
