"""Layers and functions several primitive families share (the one module a family imports besides
`primitives.base` and `primitives.ops`).

* `default_heads`, `rms_norm`, `head_rms_norm`, `inverse_softplus_dt`: head counts, norms, the dt init.
* `ShortConv`: a depthwise causal convolution over time that can continue a sequence; its streaming state is
  the last k - 1 inputs, `[B, C, k - 1]`. Mamba, Mamba-2, DeltaNet, Gated DeltaNet, Griffin's recurrent
  block and the `short_conv` mixer use it.
* `HeadMixer` (with `HeadsConfig`, `head_sizes`): the multi-head matrix-state layout of the linear-attention
  family and mLSTM (q, k, v heads, optional short conv, swish output gate, per-head norm, output projection).
  H heads; queries/keys of total width K = round(expand_k d) (dk = K / H per head), values of total width
  V = round(expand_v d) (dv = V / H); a state S [B, H, dk, dv] per sequence. n_heads defaults to V // 64
  (at least 1, lowered until it divides K and V). With `key_heads` Hk < H (grouped value heads, Qwen3-Next's Gated
  DeltaNet) the queries and keys have Hk heads of K / Hk, each serving H / Hk value heads. Its cost formula counts
  the projections and the chunked recurrence: per head 2 (2 dk dv) for the state update and readout, 2 c (dk + dv)
  for the intra-chunk part (c = the chunk its operator runs, `operator_chunk_size`: CHUNK_SIZE,
  DELTA_RULE_CHUNK_SIZE for the delta rules) and, for the delta rules, 2 dk dv for the k S product of the error term.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from composer.fields import option
from primitives.base import ConfigError, Cost, Primitive, State, divides
from primitives.ops import CHUNK_SIZE, causal_conv1d


def default_heads(width: int, head_dim: int = 64, divides_also: int = 0) -> int:
    """The largest head count <= width // head_dim (at least 1) dividing `width` (and `divides_also`)."""
    limit = max(1, width // head_dim)
    common = math.gcd(width, divides_also)      # gcd(w, 0) = w: no second constraint
    # The divisors of `common` come in pairs (d, common // d) with d <= sqrt(common): O(sqrt(width)) steps, where
    # counting down from the limit took O(width) for a width with few divisors (a fuzzed d_model of 50,873,777).
    best = 1
    for small in range(1, math.isqrt(common) + 1):
        if common % small == 0:
            for heads in (small, common // small):
                if best < heads <= limit:
                    best = heads
    return best


def head_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm over the last dim of `x` [..., H, d] with weight [H * d] (one scale per channel)."""
    normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)
    return normed.to(x.dtype) * weight.view(x.shape[-2], x.shape[-1])


def inverse_softplus_dt(n: int, dt_min: float = 1e-3, dt_max: float = 0.1) -> torch.Tensor:
    """Biases b with softplus(b) log-uniform in [dt_min, dt_max] (the Mamba initialisation of dt)."""
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    return dt + torch.log(-torch.expm1(-dt))


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm over the last dim of `x`, in its own dtype."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


class ShortConv(nn.Module):
    """Depthwise causal conv over time: y_t = sum_j w_j x_{t-k+1+j} (+ bias), optional SiLU.

    `forward(x [B, T, C], cache [B, C, k-1] or None) -> (y [B, T, C], new cache or None)`; with a cache
    the convolution sees the previous k - 1 inputs, so pieces of a sequence equal the whole.
    """

    def __init__(self, channels: int, kernel_size: int = 4, bias: bool = False, activation: bool = False):
        super().__init__()
        self.channels, self.kernel_size, self.activation = channels, kernel_size, activation
        self.conv = nn.Conv1d(channels, channels, kernel_size, groups=channels, bias=bias)

    @staticmethod
    def param_count(channels: int, kernel_size: int, bias: bool = False) -> int:
        return channels * kernel_size + (channels if bias else 0)

    def empty_cache(self, batch_size: int, device=None, dtype=torch.float32) -> torch.Tensor:
        return torch.zeros(batch_size, self.channels, self.kernel_size - 1, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, cache: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        y, new_cache = causal_conv1d(x, self.conv.weight[:, 0], self.conv.bias, cache)
        return (F.silu(y) if self.activation else y), new_cache


@dataclass
class HeadsConfig:
    n_heads: int | None = option(None, "number of heads (null: derived from d_model, about one per 64 channels)", ge=1)
    expand_k: float = option(0.5, "query/key width as a multiple of d_model", gt=0)
    expand_v: float = option(1.0, "value width as a multiple of d_model", gt=0)


def head_sizes(cfg: HeadsConfig, d_model: int) -> tuple[int, int, int]:
    """(n_heads H, total key width K, total value width V)."""
    K, V = int(round(cfg.expand_k * d_model)), int(round(cfg.expand_v * d_model))
    return cfg.n_heads or default_heads(max(V, 1), divides_also=K), K, V


class HeadFeatures(NamedTuple):
    """What a HeadMixer layer has besides its q, k, v and output projections."""

    kernel_size: int = 0            # the short conv over q, k, v (0: none)
    output_gate: bool = True        # a swish output gate (g_proj, d -> V)
    norm: bool = True               # the per-head norm of the output
    extra_values: int = 0           # extra value columns in the state (linear attention's normaliser)
    key_heads: int = 0              # query/key heads, each shared by n_heads / key_heads value heads (0: n_heads)
    shared_norm: bool = False       # the output norm has one weight per head channel, shared by the heads


class HeadMixer(Primitive):
    """Shared plumbing: sizes, checks, the cost formula, state handling and the gated output norm.

    `features(cfg)` (a `HeadFeatures`) says what a layer has.
    """

    kind = "token_mixer"
    width_scaled = ("n_heads",)  # expansions kept (and GLA's gate_rank, a fixed low rank)
    uses_delta_rule = False
    operator_chunk_size = CHUNK_SIZE  # the chunk the layer's operator runs, which the cost formula counts

    @classmethod
    def features(cls, cfg: HeadsConfig) -> HeadFeatures:
        return HeadFeatures()

    @classmethod
    def extra_params(cls, cfg: HeadsConfig, d_model: int) -> int:
        """Parameters beyond q, k, v, conv, gate, norm and o (decay and beta projections)."""
        return 0

    def __init__(self, d_model: int, cfg: HeadsConfig):
        super().__init__(d_model, cfg)
        self.n_heads, self.key_width, self.value_width = head_sizes(cfg, d_model)
        features = self.features(cfg)
        self.kernel_size, self.has_gate, self.has_norm = features.kernel_size, features.output_gate, features.norm
        self.extra_v = features.extra_values
        H, K, V = self.n_heads, self.key_width, self.value_width
        self.key_heads = features.key_heads or H
        self.dk, self.dv = K // self.key_heads, V // H
        self.qkv = nn.Linear(d_model, 2 * K + V, bias=False)
        if self.kernel_size:
            self.conv = ShortConv(2 * K + V, self.kernel_size, activation=True)
        if self.has_gate:
            self.g_proj = nn.Linear(d_model, V, bias=False)
        if self.has_norm:
            self.norm = nn.Parameter(torch.ones(self.dv if features.shared_norm else V))
        self.o_proj = nn.Linear(V, d_model, bias=False)

    @classmethod
    def check(cls, cfg: HeadsConfig, d_model: int) -> None:
        H, K, V = head_sizes(cfg, d_model)
        if K < 1 or V < 1:
            raise ConfigError("expand_k" if K < 1 else "expand_v", f"leaves no channels at d_model={d_model}")
        key_heads = cls.features(cfg).key_heads
        divides("key_heads" if key_heads else "n_heads", key_heads or H, K, "key width round(expand_k * d_model)")
        divides("n_heads", H, V, "value width round(expand_v * d_model)")
        if key_heads and H % key_heads:
            raise ConfigError("key_heads", f"key_heads={key_heads} must divide n_heads={H} (each key head serves "
                                           "n_heads / key_heads value heads)")

    @classmethod
    def resolve(cls, cfg: HeadsConfig, d_model: int) -> HeadsConfig:
        return replace(cfg, n_heads=head_sizes(cfg, d_model)[0])

    @classmethod
    def cost(cls, cfg: HeadsConfig, d_model: int, seq_len: int, dtype_bytes: int = 2) -> Cost:
        H, K, V = head_sizes(cfg, d_model)
        features = cls.features(cfg)
        k = features.kernel_size
        dk, dv = K // (features.key_heads or H), V // H + features.extra_values
        matmul = d_model * (2 * K + V) + V * d_model + (d_model * V if features.output_gate else 0)
        conv = ShortConv.param_count(2 * K + V, k) if k else 0
        extra = cls.extra_params(cfg, d_model)
        norm = (V // H if features.shared_norm else V) if features.norm else 0
        params = matmul + conv + extra + norm
        c = cls.operator_chunk_size
        recurrence = H * (4 * dk * dv + 2 * c * (dk + dv) + (2 * dk * dv if cls.uses_delta_rule else 0))
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
        B, T, H, Hk = x.shape[0], x.shape[1], self.n_heads, self.key_heads
        q, k = q.view(B, T, Hk, self.dk), k.view(B, T, Hk, self.dk)
        if Hk != H:  # grouped value heads: each query/key head serves H / Hk consecutive value heads
            q, k = q.repeat_interleave(H // Hk, dim=2), k.repeat_interleave(H // Hk, dim=2)
        return q, k, v.view(B, T, H, self.dv), cache

    def finish(self, x: torch.Tensor, o: torch.Tensor, ssm: torch.Tensor | None, cache: torch.Tensor | None,
               state: State) -> tuple[torch.Tensor, State]:
        """o [B, T, H, dv] -> norm -> swish gate -> o_proj; and the new state."""
        B, T = x.shape[:2]
        if self.has_norm:
            weight = self.norm if self.norm.numel() == self.value_width else self.norm.repeat(self.n_heads)
            o = head_rms_norm(o, weight)
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


def add_selective_ssm(module: nn.Module, E: int, R: int, N: int, kernel_size: int, inner_norms: bool) -> None:
    """Mamba-1's selective-SSM parts on `module` (shared by Mamba and Hymba's SSM heads): the short conv over the
    E inner channels, x_proj to (dt rank R, B, C), dt_proj with its softplus-inverse bias, A_log (S4D-real init),
    D, and with `inner_norms` the dt / B / C norm weights."""
    module.conv = ShortConv(E, kernel_size, bias=True, activation=True)
    module.x_proj = nn.Linear(E, R + 2 * N, bias=False)
    module.dt_proj = nn.Linear(R, E, bias=True)
    nn.init.uniform_(module.dt_proj.weight, -R**-0.5, R**-0.5)
    with torch.no_grad():
        module.dt_proj.bias.copy_(inverse_softplus_dt(E))
    module.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))
    module.D = nn.Parameter(torch.ones(E))
    if inner_norms:
        module.dt_norm, module.b_norm, module.c_norm = (nn.Parameter(torch.ones(n)) for n in (R, N, N))


def expanded_heads(n_heads: int | None, head_dim: int | None, expand_v: float, d_model: int) -> tuple[int, int, int]:
    """(n_heads H, key head width dk, value head width dv) of a layer whose heads set their own key width
    (default d_model / H) and values expand_v times as wide (KDA, JetBlock)."""
    H = n_heads or default_heads(d_model)
    dk = head_dim or max(d_model // H, 1)
    return H, dk, int(round(dk * expand_v))


def check_expanded_heads(n_heads: int | None, head_dim: int | None, expand_v: float, d_model: int) -> None:
    """A ConfigError for `expanded_heads` sizes that do not make whole heads: n_heads must divide d_model when
    head_dim is derived, and head_dim * expand_v must be a whole number of channels."""
    H, dk, dv = expanded_heads(n_heads, head_dim, expand_v, d_model)
    if head_dim is None:
        divides("n_heads", H, d_model, "d_model")
    if abs(dk * expand_v - dv) > 1e-6 or dv < 1:
        raise ConfigError("expand_v", f"head_dim * expand_v = {dk * expand_v:g} is not a whole number of channels "
                                      f"(head_dim = {dk})")
