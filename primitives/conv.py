"""Short causal convolutions: the reusable `ShortConv` module and the gated `short_conv` mixer.

`ShortConv` is a depthwise causal convolution over time (kernel k, one filter per channel) that can
continue a sequence: its streaming state is the last k - 1 inputs, `[B, C, k - 1]`. Mamba, Mamba-2,
DeltaNet, Gated DeltaNet and Griffin's recurrent block use it before their recurrences.

This module also holds small helpers shared by the recurrent layers (`default_heads`, `head_rms_norm`,
`inverse_softplus_dt`).

`short_conv` mixer (d = d_model, E = round(expand * d), k = kernel_size):
    u, g = in_proj(x)            d * 2E
    y = out_proj(conv(u) * silu(g))
    conv                         E * k   (+ E with bias)
    out_proj                     E * d
    params = 3 E d + E k (+ E);  the default expand 1.5 gives 4.5 d^2 + 6 d (~1.1x attention's 4 d^2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from primitives.base import ConfigError, Cost, Primitive, State, positive, register


def default_heads(width: int, head_dim: int = 64, divides_also: int = 0) -> int:
    """The largest head count <= width // head_dim (at least 1) dividing `width` (and `divides_also`)."""
    heads = max(1, width // head_dim)
    while width % heads or divides_also % heads:
        heads -= 1
    return heads


def head_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm over the last dim of `x` [..., H, d] with weight [H * d] (one scale per channel)."""
    normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)
    return normed.to(x.dtype) * weight.view(x.shape[-2], x.shape[-1])


def inverse_softplus_dt(n: int, dt_min: float = 1e-3, dt_max: float = 0.1) -> torch.Tensor:
    """Biases b with softplus(b) log-uniform in [dt_min, dt_max] (the Mamba initialisation of dt)."""
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    return dt + torch.log(-torch.expm1(-dt))


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
        x = x.transpose(1, 2)
        if cache is None:
            padded = F.pad(x, (self.kernel_size - 1, 0))
        else:
            padded = torch.cat([cache.to(x.dtype), x], dim=-1)
        y = self.conv(padded).transpose(1, 2)
        if self.activation:
            y = F.silu(y)
        new_cache = None if cache is None else padded[..., padded.shape[-1] - (self.kernel_size - 1):]
        return y, new_cache


@dataclass
class ShortConvConfig:
    expand: float = 1.5
    kernel_size: int = 4
    conv_bias: bool = False


def inner_width(cfg: ShortConvConfig, d_model: int) -> int:
    return int(round(cfg.expand * d_model))


@register("short_conv")
class ShortConvMixer(Primitive):
    """Gated short convolution mixer: out_proj(conv(u) * silu(g)) with u, g = in_proj(x)."""

    kind = "token_mixer"
    Config = ShortConvConfig

    def __init__(self, d_model: int, cfg: ShortConvConfig):
        super().__init__(d_model, cfg)
        self.inner = inner_width(cfg, d_model)
        self.in_proj = nn.Linear(d_model, 2 * self.inner, bias=False)
        self.conv = ShortConv(self.inner, cfg.kernel_size, bias=cfg.conv_bias)
        self.out_proj = nn.Linear(self.inner, d_model, bias=False)

    @classmethod
    def check(cls, cfg: ShortConvConfig, d_model: int) -> None:
        positive("expand", cfg.expand)
        positive("kernel_size", cfg.kernel_size)
        if inner_width(cfg, d_model) < 1:
            raise ConfigError("expand", f"expand={cfg.expand} leaves no channels at d_model={d_model}")

    @classmethod
    def cost(cls, cfg: ShortConvConfig, d_model: int, seq_len: int, dtype_bytes: int = 2) -> Cost:
        """FLOPs: the two projections and the convolution (2 per multiply-add); the gate is not counted."""
        e, k = inner_width(cfg, d_model), cfg.kernel_size
        conv = ShortConv.param_count(e, k, cfg.conv_bias)
        params = 3 * e * d_model + conv
        flops = 2 * (3 * e * d_model + e * k)
        return Cost(params, float(flops), e * (k - 1) * dtype_bytes)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> State:
        return {"conv": self.conv.empty_cache(batch_size, device, dtype)}

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        u, g = self.in_proj(x).chunk(2, dim=-1)
        u, conv_cache = self.conv(u, None if state is None else state["conv"])
        y = self.out_proj(u * F.silu(g))
        return y, (None if state is None else {"conv": conv_cache})
