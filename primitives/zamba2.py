"""Zamba2's shared transformer block and its per-application parts (Glorioso et al. 2024, "The Zamba2 Suite",
arXiv:2411.15242; transformers' models/zamba2: Zamba2AttentionDecoderLayer, Zamba2MLP, Zamba2HybridLayer).

One block's weights serve several hybrid layers; each application owns a LoRA on the MLP's gate_up projection and
a d x d output linear. With h the residual stream entering a hybrid layer and e the input embeddings:

    u = rmsnorm_2d(concat(h, e))                       2 d wide
    a = o_proj(attention(q_proj u, k_proj u, v_proj u))   H heads of 2 d / H; scores scaled by (head_dim / 2)^-1/2
    m = rmsnorm_d(a)
    g, v = split(gate_up(m) + lora_up(lora_down(m)))   per-application LoRA, rank r
    y = linear(down(gelu(g) * v))                      per-application d x d linear

No residual inside the block. The layer it belongs to feeds y into its Mamba-2 mixer's input, not into the
residual stream: h' = h + mamba2(rmsnorm(h + y)). As the primitive `zamba2_block` it `reads_embeddings` and
`feeds_next` (primitives.base): a spec writes a hybrid layer as `zamba2_block` followed by `mamba2`, and shares one
block's weights among its uses with `name:` / `share:`; each use owns its `Zamba2Application`.

Parameters (d = d_model, F = d_ff, r = lora_rank): shared 2 d + 3 (2 d)^2 + 2 d d + d + 2 d F + F d; per
application 2 F r + d r + d d. State: the keys and values, 2 x 2 d per position.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from composer.fields import option
from primitives.base import ConfigError, Cost, Primitive, State, register
from primitives.common import rms_norm
from primitives.ops.softmax_attention import mean_keys, softmax_attention


@dataclass
class Zamba2BlockConfig:
    n_heads: int = option(32, "attention heads over the 2 d_model wide input", ge=1)
    d_ff: int | None = option(None, "the MLP's inner width (null: 4 d_model)", ge=1)
    lora_rank: int = option(128, "rank of each application's LoRA on gate_up (0: none)", ge=0)
    eps: float = option(1e-5, "the RMSNorms' epsilon", gt=0)


def block_sizes(cfg: Zamba2BlockConfig, d_model: int) -> tuple[int, int]:
    """(attention width 2 d, d_ff)."""
    return 2 * d_model, cfg.d_ff or 4 * d_model


def check_block(cfg: Zamba2BlockConfig, d_model: int) -> None:
    width, _ = block_sizes(cfg, d_model)
    if width % cfg.n_heads:
        raise ConfigError("n_heads", f"n_heads={cfg.n_heads} must divide the attention width 2 x d_model={width}")


@register("zamba2_block")
class Zamba2SharedBlock(Primitive):
    """Zamba2's shared attention+MLP block: reads the stream and the input embeddings, feeds the next sub-layer's
    input; one block serves several layers through `name:` / `share:` (see the module docstring)."""

    symbol = "Z"
    Config = Zamba2BlockConfig
    reads_embeddings = True
    feeds_next = True

    def __init__(self, d_model: int, cfg: Zamba2BlockConfig):
        super().__init__(d_model, cfg)
        check_block(cfg, d_model)
        width, d_ff = block_sizes(cfg, d_model)
        self.heads, self.head_dim = cfg.n_heads, width // cfg.n_heads
        self.input_norm = nn.Parameter(torch.ones(width))
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(width, width, bias=False) for _ in range(3))
        self.o_proj = nn.Linear(width, d_model, bias=False)
        self.pre_ff_norm = nn.Parameter(torch.ones(d_model))
        self.gate_up = nn.Linear(d_model, 2 * d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)

    @classmethod
    def check(cls, cfg: Zamba2BlockConfig, d_model: int) -> None:
        check_block(cfg, d_model)

    @classmethod
    def resolve(cls, cfg: Zamba2BlockConfig, d_model: int) -> Zamba2BlockConfig:
        return dataclasses.replace(cfg, d_ff=block_sizes(cfg, d_model)[1])

    @classmethod
    def cost(cls, cfg: Zamba2BlockConfig, d_model: int, seq_len: int, dtype_bytes: int = 2) -> Cost:
        return shared_block_cost(cfg, d_model, seq_len, dtype_bytes)

    @classmethod
    def application_cost(cls, cfg: Zamba2BlockConfig, d_model: int) -> Cost:
        return application_cost(cfg, d_model)

    def new_application(self) -> Zamba2Application:
        return Zamba2Application(self.d_model, self.cfg)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> State:
        empty = torch.zeros(batch_size, self.heads, 0, self.head_dim, device=device, dtype=dtype)
        return {"k": empty, "v": empty.clone(), "pos": torch.zeros((), dtype=torch.long, device=device)}

    def forward(self, h: torch.Tensor, state: State = None, embeddings: torch.Tensor | None = None,
                application: Zamba2Application | None = None) -> tuple[torch.Tensor, State]:
        if embeddings is None or application is None:
            raise ValueError("zamba2_block needs the input embeddings and its application (see primitives.base)")
        e = embeddings
        B, T, _ = h.shape
        u = rms_norm(torch.cat([h, e], dim=-1), self.input_norm, self.cfg.eps)
        q, k, v = (p(u).view(B, T, self.heads, self.head_dim).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        start = int(state["pos"]) if state is not None else 0
        q_pos = torch.arange(start, start + T, device=h.device)
        k_pos = q_pos
        new_state = None
        if state is not None:
            k, v = torch.cat([state["k"], k], dim=2), torch.cat([state["v"], v], dim=2)
            k_pos = torch.arange(0, start + T, device=h.device)
            new_state = {"k": k, "v": v, "pos": state["pos"] + T}
        # softmax_attention scales by head_dim^-1/2; Zamba2 by (head_dim / 2)^-1/2
        a = softmax_attention(q * math.sqrt(2.0), k, v, q_pos, k_pos)
        a = self.o_proj(a.transpose(1, 2).reshape(B, T, self.heads * self.head_dim))
        m = rms_norm(a, self.pre_ff_norm, self.cfg.eps)
        gate_up = self.gate_up(m)
        if application.lora_down is not None:
            gate_up = gate_up + application.lora_up(application.lora_down(m))
        g, up = gate_up.chunk(2, dim=-1)
        return application.linear(self.down(F.gelu(g) * up)), new_state


class Zamba2Application(nn.Module):
    """One application's own parameters: the gate_up LoRA and the output linear."""

    def __init__(self, d_model: int, cfg: Zamba2BlockConfig):
        super().__init__()
        _, d_ff = block_sizes(cfg, d_model)
        self.lora_down = nn.Linear(d_model, cfg.lora_rank, bias=False) if cfg.lora_rank else None
        self.lora_up = nn.Linear(cfg.lora_rank, 2 * d_ff, bias=False) if cfg.lora_rank else None
        if self.lora_up is not None:
            nn.init.zeros_(self.lora_up.weight)  # every application starts as the plain shared block
        self.linear = nn.Linear(d_model, d_model, bias=False)


def shared_block_cost(cfg: Zamba2BlockConfig, d_model: int, seq_len: int, dtype_bytes: int = 2) -> Cost:
    """The shared weights' parameters; FLOPs per token and state bytes of one application's shared part."""
    width, d_ff = block_sizes(cfg, d_model)
    matmul = 3 * width * width + width * d_model + d_model * 2 * d_ff + d_ff * d_model
    params = matmul + width + d_model
    attention = 4 * width * mean_keys(seq_len, None, 0)  # QK^T and AV over the mean causal context
    return Cost(params, float(2 * matmul + attention), 2 * width * seq_len * dtype_bytes)


def application_cost(cfg: Zamba2BlockConfig, d_model: int) -> Cost:
    """One application's own parameters and their FLOPs per token (no state)."""
    _, d_ff = block_sizes(cfg, d_model)
    params = cfg.lora_rank * (d_model + 2 * d_ff) + d_model * d_model
    return Cost(params, 2.0 * params, 0)
