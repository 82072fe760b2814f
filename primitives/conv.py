"""The gated `short_conv` mixer around `primitives.common.ShortConv` (a depthwise causal convolution).

`short_conv` mixer (d = d_model, E = round(expand * d), k = kernel_size), two gatings:

`gating: silu` (the default; an H3/Hyena-style output gate):
    u, g = in_proj(x)            d * 2E
    y = out_proj(conv(u) * silu(g))
    conv                         E * k   (+ E with conv_bias)
    out_proj                     E * d
    params = 3 E d + E k (+ E);  the default expand 1.5 gives 4.5 d^2 + 6 d (~1.1x attention's 4 d^2).

`gating: bcx` (LFM2's gated short convolution, Liquid AI 2025, after transformers' `Lfm2ShortConv`):
    B, C, u = in_proj(x)         d * 3E   (the three thirds of in_proj's output, in that order)
    y = out_proj(C * conv(B * u))         input-dependent gates around the convolution, no activation
    conv                         E * k   (+ E with conv_bias)
    out_proj                     E * d
    params = 4 E d + E k (+ E with conv_bias) (+ 3 E + d with proj_bias).
LFM2 uses E = d (expand 1.0) and k = 3 (`conv_L_cache`); its one `conv_bias` flag (false in the released
models) sets the bias of in_proj, the convolution and out_proj together: conv_bias and proj_bias here.

FLOPs per token: the projections and the convolution (2 per multiply-add); the gates are not counted.
State: the last k - 1 inputs of the convolution, [E, k - 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from composer.fields import option
from primitives.base import ConfigError, Cost, Primitive, State, register
from primitives.common import ShortConv


@dataclass
class ShortConvConfig:
    expand: float = option(1.5, "inner width as a multiple of d_model", gt=0)
    kernel_size: int = option(4, "width of the short causal convolution", ge=1)
    conv_bias: bool = option(False, "bias on the convolution")
    gating: Literal["silu", "bcx"] = option("silu", "silu: out_proj(conv(u) * silu(g)); bcx: LFM2's "
                                            "out_proj(C * conv(B * u))")
    proj_bias: bool = option(False, "biases on in_proj and out_proj")


def inner_width(cfg: ShortConvConfig, d_model: int) -> int:
    return int(round(cfg.expand * d_model))


def projections(cfg: ShortConvConfig) -> int:
    """How many E-wide projections in_proj makes: u, g (silu) or B, C, u (bcx)."""
    return 3 if cfg.gating == "bcx" else 2


@register("short_conv")
class ShortConvMixer(Primitive):
    """Gated short convolution: out_proj(conv(u) * silu(g)), or LFM2's out_proj(C * conv(B * u))."""

    symbol = "C"
    saved_values = 2
    kind = "token_mixer"
    Config = ShortConvConfig
    width_scaled = ()  # expand and kernel_size kept

    def __init__(self, d_model: int, cfg: ShortConvConfig):
        super().__init__(d_model, cfg)
        self.inner = inner_width(cfg, d_model)
        self.in_proj = nn.Linear(d_model, projections(cfg) * self.inner, bias=cfg.proj_bias)
        self.conv = ShortConv(self.inner, cfg.kernel_size, bias=cfg.conv_bias)
        self.out_proj = nn.Linear(self.inner, d_model, bias=cfg.proj_bias)

    @classmethod
    def check(cls, cfg: ShortConvConfig, d_model: int) -> None:
        if inner_width(cfg, d_model) < 1:
            raise ConfigError("expand", f"expand={cfg.expand} leaves no channels at d_model={d_model}")

    @classmethod
    def cost(cls, cfg: ShortConvConfig, d_model: int, seq_len: int, dtype_bytes: int = 2) -> Cost:
        """FLOPs: the two projections and the convolution (2 per multiply-add); the gates are not counted."""
        e, k = inner_width(cfg, d_model), cfg.kernel_size
        conv = ShortConv.param_count(e, k, cfg.conv_bias)
        matmul = (projections(cfg) + 1) * e * d_model
        params = matmul + conv + ((projections(cfg) * e + d_model) if cfg.proj_bias else 0)
        flops = 2 * (matmul + e * k)
        return Cost(params, float(flops), e * (k - 1) * dtype_bytes)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> State:
        return {"conv": self.conv.empty_cache(batch_size, device, dtype)}

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        cache = None if state is None else state["conv"]
        if self.cfg.gating == "bcx":
            b, c, u = self.in_proj(x).chunk(3, dim=-1)
            conv_out, conv_cache = self.conv(b * u, cache)
            y = self.out_proj(c * conv_out)
        else:
            u, g = self.in_proj(x).chunk(2, dim=-1)
            u, conv_cache = self.conv(u, cache)
            y = self.out_proj(u * F.silu(g))
        return y, (None if state is None else {"conv": conv_cache})
