"""The dense MLP channel mixer: SwiGLU (default), GeGLU, GELU or squared ReLU.

Parameters (d = d_model, f = d_ff): SwiGLU and GeGLU 3 d f (gate, up, down), GELU and ReLU^2 2 d f (up, down), plus
biases when `bias` (the gated kinds 2 f + d, the others f + d). `d_ff` defaults to `round(expansion * d)` with
expansion 8/3 for the gated kinds and 4 for the others, so all cost about 8 d^2 parameters.

GeGLU is Gemma's MLP: y = W_down(gelu_tanh(W_gate x) * W_up x) (gelu_pytorch_tanh; RecurrentGemma's with biases).
ReLU^2 is Nemotron-H's MLP (Primer's squared ReLU, So et al. 2021): y = W_down(relu(W_up x)^2), no gate, no biases in
the released models (mlp_bias false).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from composer.fields import option
from primitives.base import ConfigError, Cost, Primitive, State, register


@dataclass
class MLPConfig:
    kind: Literal["swiglu", "geglu", "gelu", "relu2"] = option(
        "swiglu", "swiglu or geglu (gated, 3 matrices; geglu: tanh GELU gate, Gemma), gelu or relu2 (squared ReLU, "
        "Nemotron-H; 2 matrices)")
    expansion: float | None = option(None, "hidden width as a multiple of d_model (null: 8/3 for the gated kinds, 4 "
                                     "for the others)", gt=0)
    d_ff: int | None = option(None, "hidden width (null: from expansion)", ge=1)
    bias: bool = option(False, "biases on the projections")


def gated(cfg: MLPConfig) -> bool:
    return cfg.kind in ("swiglu", "geglu")


def hidden_size(cfg: MLPConfig, d_model: int) -> int:
    if cfg.d_ff is not None:
        return cfg.d_ff
    expansion = cfg.expansion if cfg.expansion is not None else (8 / 3 if gated(cfg) else 4.0)
    return max(1, int(round(expansion * d_model)))


@register("mlp")
class MLP(Primitive):
    """y = W_down(act(W_gate x) * W_up x) (SwiGLU: silu, GeGLU: tanh GELU), W_down(gelu(W_up x)) (GELU) or
    W_down(relu(W_up x)^2) (ReLU^2)."""

    symbol = "M"
    saved_values = 0
    kind = "channel_mixer"
    Config = MLPConfig
    width_scaled = ("d_ff",)  # `expansion` kept; an explicit d_ff scales

    def __init__(self, d_model: int, cfg: MLPConfig):
        super().__init__(d_model, cfg)
        f = hidden_size(cfg, d_model)
        self.gated = gated(cfg)
        self.up = nn.Linear(d_model, 2 * f if self.gated else f, bias=cfg.bias)
        self.down = nn.Linear(f, d_model, bias=cfg.bias)

    @classmethod
    def check(cls, cfg: MLPConfig, d_model: int) -> None:
        if cfg.d_ff is not None and cfg.expansion is not None:
            raise ConfigError("d_ff", "give either d_ff or expansion, not both")

    @classmethod
    def resolve(cls, cfg: MLPConfig, d_model: int) -> MLPConfig:
        return replace(cfg, d_ff=hidden_size(cfg, d_model), expansion=None)

    @classmethod
    def cost(cls, cfg: MLPConfig, d_model: int, seq_len: int, dtype_bytes: int = 2) -> Cost:
        f = hidden_size(cfg, d_model)
        n_in = 2 * f if gated(cfg) else f
        params = d_model * n_in + f * d_model
        if cfg.bias:
            params += n_in + d_model
        return Cost(params, float(2 * (d_model * n_in + f * d_model)), 0)

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        if self.gated:
            gate, up = self.up(x).chunk(2, dim=-1)
            act = F.silu(gate) if self.cfg.kind == "swiglu" else F.gelu(gate, approximate="tanh")
            return self.down(act * up), state
        if self.cfg.kind == "relu2":
            return self.down(F.relu(self.up(x)).square()), state
        return self.down(F.gelu(self.up(x))), state
