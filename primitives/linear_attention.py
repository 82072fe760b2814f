"""Linear-attention family: linear_attention, retnet, gla, hgrn2, deltanet, gated_deltanet.

All share one layout: H heads; queries/keys of total width K = round(expand_k d) (dk = K / H per head),
values of total width V = round(expand_v d) (dv = V / H); a matrix state S [B, H, dk, dv] per sequence,
computed by the chunked operators of `primitives.ops`. n_heads defaults to V // 64 (at least 1, lowered
until it divides K and V).
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
      Yang et al. 2025: g = -exp(A_log) softplus(W_a x + dt_bias) (Mamba-2 parametrisation).

Defaults: linear_attention and deltanet use K = V = d (4 d^2 + small); the gated layers use K = d / 2,
V = d (4 d^2 + small). FLOPs per token: projections and convolutions (2 per multiply-add) plus, per head,
2 (2 dk dv) for the state update and readout and 2 c (dk + dv) for the intra-chunk part (c = 64); the delta
rules add 2 dk dv for the k S product of the error term. Elementwise gates and norms are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from primitives.base import ConfigError, Cost, Primitive, State, divides, positive, register
from primitives.conv import ShortConv, default_heads, head_rms_norm, inverse_softplus_dt
from primitives.ops import (
    chunk_delta_rule,
    chunk_gated_delta_rule,
    chunk_gla,
    chunk_simple_gla,
    naive_delta_rule,
    naive_gated_delta_rule,
    naive_gla,
    naive_simple_gla,
)

CHUNK = 64
DECODE_MAX = 4  # pieces up to this length (decoding) run the step form: the chunked one pads a whole chunk


def by_length(chunked, stepwise):
    """An operator that runs `stepwise` on pieces of at most DECODE_MAX tokens, else `chunked`."""

    def run(q: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        op = stepwise if q.shape[1] <= DECODE_MAX else chunked
        return op(q, *args, chunk_size=CHUNK, **kwargs)

    return run


simple_gla = by_length(chunk_simple_gla, naive_simple_gla)
gla = by_length(chunk_gla, naive_gla)
delta_rule = by_length(chunk_delta_rule, naive_delta_rule)
gated_delta_rule = by_length(chunk_gated_delta_rule, naive_gated_delta_rule)


@dataclass
class HeadsConfig:
    n_heads: int | None = None
    expand_k: float = 0.5
    expand_v: float = 1.0


def head_sizes(cfg: HeadsConfig, d_model: int) -> tuple[int, int, int]:
    """(n_heads H, total key width K, total value width V)."""
    K, V = int(round(cfg.expand_k * d_model)), int(round(cfg.expand_v * d_model))
    return cfg.n_heads or default_heads(max(V, 1), divides_also=K), K, V


class HeadMixer(Primitive):
    """Shared plumbing: sizes, checks, the cost formula, state handling and the gated output norm.

    `features(cfg)` says what a layer has: a short conv over q, k, v (its kernel size, 0 for none), a swish
    output gate (g_proj, d -> V), the per-head norm, and extra value columns in the state.
    """

    kind = "token_mixer"
    uses_delta_rule = False

    @classmethod
    def features(cls, cfg: HeadsConfig) -> tuple[int, bool, bool, int]:
        """(kernel_size, output gate, norm, extra state value columns)."""
        return 0, True, True, 0

    @classmethod
    def extra_params(cls, cfg: HeadsConfig, d_model: int) -> int:
        """Parameters beyond q, k, v, conv, gate, norm and o (decay and beta projections)."""
        return 0

    def __init__(self, d_model: int, cfg: HeadsConfig):
        super().__init__(d_model, cfg)
        self.n_heads, self.key_width, self.value_width = head_sizes(cfg, d_model)
        self.kernel_size, self.has_gate, self.has_norm, self.extra_v = self.features(cfg)
        H, K, V = self.n_heads, self.key_width, self.value_width
        self.dk, self.dv = K // H, V // H
        self.qkv = nn.Linear(d_model, 2 * K + V, bias=False)
        if self.kernel_size:
            self.conv = ShortConv(2 * K + V, self.kernel_size, activation=True)
        if self.has_gate:
            self.g_proj = nn.Linear(d_model, V, bias=False)
        if self.has_norm:
            self.norm = nn.Parameter(torch.ones(V))
        self.o_proj = nn.Linear(V, d_model, bias=False)

    @classmethod
    def check(cls, cfg: HeadsConfig, d_model: int) -> None:
        positive("n_heads", cfg.n_heads)
        positive("expand_k", cfg.expand_k)
        positive("expand_v", cfg.expand_v)
        H, K, V = head_sizes(cfg, d_model)
        if K < 1 or V < 1:
            raise ConfigError("expand_k" if K < 1 else "expand_v", f"leaves no channels at d_model={d_model}")
        divides("n_heads", H, K, "key width round(expand_k * d_model)")
        divides("n_heads", H, V, "value width round(expand_v * d_model)")

    @classmethod
    def resolve(cls, cfg: HeadsConfig, d_model: int) -> HeadsConfig:
        return replace(cfg, n_heads=head_sizes(cfg, d_model)[0])

    @classmethod
    def cost(cls, cfg: HeadsConfig, d_model: int, seq_len: int, dtype_bytes: int = 2) -> Cost:
        H, K, V = head_sizes(cfg, d_model)
        k, gate, norm, extra_v = cls.features(cfg)
        dk, dv = K // H, V // H + extra_v
        matmul = d_model * (2 * K + V) + V * d_model + (d_model * V if gate else 0)
        conv = ShortConv.param_count(2 * K + V, k) if k else 0
        extra = cls.extra_params(cfg, d_model)
        params = matmul + conv + extra + (V if norm else 0)
        recurrence = H * (4 * dk * dv + 2 * CHUNK * (dk + dv) + (2 * dk * dv if cls.uses_delta_rule else 0))
        flops = 2 * matmul + 2 * extra + 2 * conv + recurrence
        state = (H * dk * dv + (2 * K + V) * max(k - 1, 0)) * dtype_bytes
        return Cost(params, float(flops), state)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> State:
        state = {"ssm": torch.zeros(batch_size, self.n_heads, self.dk, self.dv + self.extra_v,
                                    device=device, dtype=dtype)}
        if self.kernel_size:
            state["conv"] = self.conv.empty_cache(batch_size, device, dtype)
        return state

    def project(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, ...]:
        """q, k [B, T, H, dk], v [B, T, H, dv] (after the short conv when there is one) and the conv cache."""
        qkv, cache = self.qkv(x), None
        if self.kernel_size:
            qkv, cache = self.conv(qkv, None if state is None else state["conv"])
        q, k, v = qkv.split([self.key_width, self.key_width, self.value_width], dim=-1)
        B, T, H = x.shape[0], x.shape[1], self.n_heads
        return q.view(B, T, H, self.dk), k.view(B, T, H, self.dk), v.view(B, T, H, self.dv), cache

    def finish(self, x: torch.Tensor, o: torch.Tensor, ssm: torch.Tensor | None, cache: torch.Tensor | None,
               state: State) -> tuple[torch.Tensor, State]:
        """o [B, T, H, dv] -> norm -> swish gate -> o_proj; and the new state."""
        B, T = x.shape[:2]
        if self.has_norm:
            o = head_rms_norm(o, self.norm)
        o = o.reshape(B, T, self.value_width)
        if self.has_gate:
            o = o * F.silu(self.g_proj(x).to(o.dtype))
        y = self.o_proj(o.to(x.dtype))
        if state is None:
            return y, None
        new_state = {"ssm": ssm.to(state["ssm"].dtype)}
        if self.kernel_size:
            new_state["conv"] = cache
        return y, new_state

    @staticmethod
    def initial(state: State) -> tuple[torch.Tensor | None, bool]:
        return (None, False) if state is None else (state["ssm"], True)


# ----------------------------------------------------------------------------------------------


@dataclass
class LinearAttentionConfig(HeadsConfig):
    expand_k: float = 1.0
    feature_map: Literal["elu", "identity"] = "elu"


@register("linear_attention")
class LinearAttention(HeadMixer):
    """Linear attention without decay: elu+1 with sum normalisation, or identity with an output norm."""

    Config = LinearAttentionConfig

    @classmethod
    def features(cls, cfg: LinearAttentionConfig) -> tuple[int, bool, bool, int]:
        identity = cfg.feature_map == "identity"
        return 0, False, identity, int(not identity)

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
    gate_rank: int = 16
    gate_normalizer: float = 16.0


@register("gla")
class GLA(HeadMixer):
    """Gated linear attention with a low-rank data-dependent vector forget gate."""

    Config = GLAConfig

    def __init__(self, d_model: int, cfg: GLAConfig):
        super().__init__(d_model, cfg)
        self.gk = nn.Sequential(nn.Linear(d_model, cfg.gate_rank, bias=False),
                                nn.Linear(cfg.gate_rank, self.key_width, bias=True))

    @classmethod
    def check(cls, cfg: GLAConfig, d_model: int) -> None:
        super().check(cfg, d_model)
        positive("gate_rank", cfg.gate_rank)
        positive("gate_normalizer", cfg.gate_normalizer)

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
    expand_k: float = 1.0
    kernel_size: int = 4
    output_gate: bool = False


@register("deltanet")
class DeltaNet(HeadMixer):
    """DeltaNet: delta-rule memory with L2-normalised SiLU keys/queries and a sigmoid write strength."""

    Config = DeltaNetConfig
    uses_delta_rule = True

    def __init__(self, d_model: int, cfg: DeltaNetConfig):
        super().__init__(d_model, cfg)
        self.b_proj = nn.Linear(d_model, self.n_heads, bias=False)

    @classmethod
    def features(cls, cfg: DeltaNetConfig) -> tuple[int, bool, bool, int]:
        return cfg.kernel_size, cfg.output_gate, True, 0

    @classmethod
    def check(cls, cfg: DeltaNetConfig, d_model: int) -> None:
        super().check(cfg, d_model)
        positive("kernel_size", cfg.kernel_size)

    @classmethod
    def extra_params(cls, cfg: DeltaNetConfig, d_model: int) -> int:
        return d_model * head_sizes(cfg, d_model)[0]

    def qk_beta(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, ...]:
        q, k, v, cache = self.project(x, state)
        q, k = F.normalize(q.float(), dim=-1), F.normalize(k.float(), dim=-1)
        return q, k, v, torch.sigmoid(self.b_proj(x).float()), cache

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        q, k, v, beta, cache = self.qk_beta(x, state)
        initial, final = self.initial(state)
        o, ssm = delta_rule(q, k, v, beta, initial_state=initial, output_final_state=final)
        return self.finish(x, o, ssm, cache, state)


@dataclass
class GatedDeltaNetConfig(HeadsConfig):
    kernel_size: int = 4


@register("gated_deltanet")
class GatedDeltaNet(DeltaNet):
    """Gated DeltaNet: DeltaNet with a Mamba-2 style scalar decay per head, output gate and norm."""

    Config = GatedDeltaNetConfig

    def __init__(self, d_model: int, cfg: GatedDeltaNetConfig):
        super().__init__(d_model, cfg)
        H = self.n_heads
        self.a_proj = nn.Linear(d_model, H, bias=False)
        self.A_log = nn.Parameter(torch.log(torch.empty(H).uniform_(1, 16)))
        self.dt_bias = nn.Parameter(inverse_softplus_dt(H))

    @classmethod
    def features(cls, cfg: GatedDeltaNetConfig) -> tuple[int, bool, bool, int]:
        return cfg.kernel_size, True, True, 0

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
