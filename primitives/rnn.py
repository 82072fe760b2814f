"""Gated linear RNNs with a diagonal (per-channel) state: minGRU and Griffin's RG-LRU block.

Both run their recurrence h_t = a_t h_{t-1} + b_t with `scan_diagonal`, the decay given in log space.

minGRU (Feng et al. 2024, "Were RNNs all we needed?"); d = d_model, E = round(expand d):
    z_t = sigmoid(W_z x_t), h~_t = W_h x_t,  h_t = (1 - z_t) h_{t-1} + z_t h~_t  (log(1 - z) = -softplus)
    y = W_out (h * silu(W_g x))   with `output_gate` (our addition, so that the layer is ~4 d^2), else W_out h
    params = d (2E + E if output_gate) + E d;  defaults (expand 1, gate): 4 d^2.

RG-LRU recurrent block (De et al. 2024, Griffin); E = round(expand d), H blocks, k = kernel_size, c = 8:
    gate branch  gelu(W_gate x)                          d E
    rnn branch   W_in x -> causal conv (bias) -> RG-LRU  d E + E k + E
    RG-LRU       r = sigmoid(W_a u + b_a), i = sigmoid(W_x u + b_x)   block-diagonal: 2 (E^2 / H + E)
                 log a = -c r softplus(-Lambda)  (a = sigmoid(Lambda)^(c r)),  Lambda: E
                 h_t = a_t h_{t-1} + sqrt(1 - a_t^2) (i_t u_t)
    out          W_out (h * gate)                        E d
    biases       2 E + d  with `bias` (RecurrentGemma's linear_y, linear_x, linear_out)
    params = 3 E d + E k + E + 2 E^2 / H + 2 E + E;  defaults (expand 1, H = E // 64): ~3.5 d^2 at d = 256.

FLOPs per token: projections and the convolution (2 per multiply-add) plus 2 E for the scan (one
multiply-add per channel); elementwise gates are not counted. State: h [E] (+ conv cache [E, k - 1]).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from composer.fields import option
from primitives.base import ConfigError, Cost, Primitive, State, divides, register
from primitives.common import ShortConv, default_heads
from primitives.ops import scan_diagonal


def inner_width(expand: float, d_model: int) -> int:
    return int(round(expand * d_model))


def check_width(expand: float, d_model: int) -> None:
    if inner_width(expand, d_model) < 1:
        raise ConfigError("expand", f"expand={expand} leaves no channels at d_model={d_model}")


@dataclass
class MinGRUConfig:
    expand: float = option(1.0, "inner width as a multiple of d_model", gt=0)
    output_gate: bool = option(True, "swish output gate")


@register("mingru")
class MinGRU(Primitive):
    """minGRU with input and output projections (and an optional swish output gate)."""

    symbol = "U"
    saved_values = 0
    kind = "token_mixer"
    Config = MinGRUConfig
    width_scaled = ()  # expand kept

    def __init__(self, d_model: int, cfg: MinGRUConfig):
        super().__init__(d_model, cfg)
        self.inner = inner_width(cfg.expand, d_model)
        self.in_proj = nn.Linear(d_model, (3 if cfg.output_gate else 2) * self.inner, bias=False)
        self.out_proj = nn.Linear(self.inner, d_model, bias=False)

    @classmethod
    def check(cls, cfg: MinGRUConfig, d_model: int) -> None:
        check_width(cfg.expand, d_model)

    @classmethod
    def cost(cls, cfg: MinGRUConfig, d_model: int, seq_len: int, dtype_bytes: int = 2) -> Cost:
        E = inner_width(cfg.expand, d_model)
        params = d_model * (3 if cfg.output_gate else 2) * E + E * d_model
        return Cost(params, float(2 * params + 2 * E), E * dtype_bytes)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> State:
        return {"h": torch.zeros(batch_size, self.inner, device=device, dtype=dtype)}

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        parts = self.in_proj(x).float().chunk(3 if self.cfg.output_gate else 2, dim=-1)
        z_logit, candidate = parts[0], parts[1]
        h, h_last = scan_diagonal(-F.softplus(z_logit), torch.sigmoid(z_logit) * candidate,
                                  None if state is None else state["h"])
        if self.cfg.output_gate:
            h = h * F.silu(parts[2])
        y = self.out_proj(h.to(x.dtype))
        return y, (None if state is None else {"h": h_last.to(state["h"].dtype)})


@dataclass
class RGLRUConfig:
    expand: float = option(1.0, "inner width as a multiple of d_model", gt=0)
    n_heads: int | None = option(None, "number of heads (null: derived from d_model, about one per 64 channels)", ge=1)
    kernel_size: int = option(4, "width of the short causal convolution", ge=1)
    c: float = option(8.0, "RG-LRU decay temperature (Griffin's c = 8)", gt=0)
    bias: bool = option(False, "biases on the gate and rnn branch projections and on out_proj (RecurrentGemma: true)")


def rglru_sizes(cfg: RGLRUConfig, d_model: int) -> tuple[int, int]:
    """(width E, number of gate blocks H)."""
    E = inner_width(cfg.expand, d_model)
    return E, cfg.n_heads or default_heads(max(E, 1))


class BlockDiagonalLinear(nn.Module):
    """y = x W + b with W block-diagonal: H independent [E/H, E/H] blocks."""

    def __init__(self, width: int, blocks: int):
        super().__init__()
        size = width // blocks
        self.blocks = blocks
        self.weight = nn.Parameter(torch.randn(blocks, size, size) * size**-0.5)
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        split = x.unflatten(-1, (self.blocks, -1))
        return torch.einsum("...hi,hij->...hj", split, self.weight).flatten(-2) + self.bias


@register("rglru")
class RGLRU(Primitive):
    """Griffin's recurrent block: GeLU gate branch times (conv -> RG-LRU) branch, then out projection."""

    symbol = "RG"
    saved_values = 8
    kind = "token_mixer"
    Config = RGLRUConfig
    width_scaled = ("n_heads",)  # expand, kernel_size and c kept

    def __init__(self, d_model: int, cfg: RGLRUConfig):
        super().__init__(d_model, cfg)
        E, H = rglru_sizes(cfg, d_model)
        self.inner = E
        self.in_proj = nn.Linear(d_model, 2 * E, bias=cfg.bias)       # gate branch, rnn branch
        self.conv = ShortConv(E, cfg.kernel_size, bias=True)
        self.recurrence_gate = BlockDiagonalLinear(E, H)
        self.input_gate = BlockDiagonalLinear(E, H)
        # a^c = sigmoid(Lambda)^c uniform in [0.9, 0.999] at r = 1 (the Griffin initialisation)
        a = torch.empty(E).uniform_(0.9, 0.999) ** (1.0 / cfg.c)
        self.Lambda = nn.Parameter(torch.log(a) - torch.log1p(-a))
        self.out_proj = nn.Linear(E, d_model, bias=cfg.bias)

    @classmethod
    def check(cls, cfg: RGLRUConfig, d_model: int) -> None:
        check_width(cfg.expand, d_model)
        E, H = rglru_sizes(cfg, d_model)
        divides("n_heads", H, E, "width round(expand * d_model)")

    @classmethod
    def resolve(cls, cfg: RGLRUConfig, d_model: int) -> RGLRUConfig:
        return replace(cfg, n_heads=rglru_sizes(cfg, d_model)[1])

    @classmethod
    def cost(cls, cfg: RGLRUConfig, d_model: int, seq_len: int, dtype_bytes: int = 2) -> Cost:
        (E, H), k = rglru_sizes(cfg, d_model), cfg.kernel_size
        matmul = 3 * E * d_model + 2 * E * E // H
        params = matmul + ShortConv.param_count(E, k, bias=True) + 2 * E + E + ((2 * E + d_model) if cfg.bias else 0)
        flops = 2 * matmul + 2 * E * k + 2 * E
        return Cost(params, float(flops), (E + E * (k - 1)) * dtype_bytes)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> State:
        return {"conv": self.conv.empty_cache(batch_size, device, dtype),
                "h": torch.zeros(batch_size, self.inner, device=device, dtype=dtype)}

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        gate, u = self.in_proj(x).chunk(2, dim=-1)
        u, conv_cache = self.conv(u, None if state is None else state["conv"])
        u = u.float()
        r = torch.sigmoid(self.recurrence_gate(u))
        i = torch.sigmoid(self.input_gate(u))
        log_a = -self.cfg.c * r * F.softplus(-self.Lambda.float())
        scale = torch.sqrt((-torch.expm1(2 * log_a)).clamp_min(1e-12))  # sqrt(1 - a^2)
        h, h_last = scan_diagonal(log_a, scale * i * u, None if state is None else state["h"])
        y = self.out_proj((h * F.gelu(gate.float())).to(x.dtype))
        if state is None:
            return y, None
        return y, {"conv": conv_cache, "h": h_last.to(state["h"].dtype)}
