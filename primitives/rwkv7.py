"""RWKV-7 "Goose" time mixing (Peng et al. 2025): the generalised delta rule with a vector decay and a vector
in-context learning rate.

Layer, after flash-linear-attention's `fla/layers/rwkv7.py` (d = d_model = K = V, H heads of dh = d / H,
ranks r_w, r_a, r_g of the low-rank projections; LoRA(x) = B act(A x) (+ bias)):

    token shift     delta_t = x_{t-1} - x_t;  x_c = x + delta * mu_c  for c in r, w, k, v, a, g    6 d
    r, k, v         W_r x_r, W_k x_k, W_v x_v                                                    3 d^2
    decay           log w = -exp(-1/2) sigmoid(LoRA_w(x_w)),  tanh inside, bias                  2 d r_w + d
    learning rate   alpha = sigmoid(LoRA_a(x_a)),  bias                                           2 d r_a + d
    output gate     g = LoRA_g(x_g),  sigmoid inside, no bias                                    2 d r_g
    removal key     kappa^ = l2norm_head(k * k_k);   k <- k (1 + (alpha - 1) k_a)                2 d
    S_t = diag(w_t) S_{t-1} - kappa^T_t ((alpha kappa^)_t S_{t-1}) + k_t^T v_t,  o_t = r_t S_t     (ops.rwkv7,
                                                                                                  a = -kappa^,
                                                                                                  b = alpha kappa^)
    o = (GroupNorm_H(o) + ((r * k * r_k) summed per head) v) * g      GroupNorm weight + bias 2 d, eps 64e-5
                                                                     (dh * 1e-5); bonus r_k d
    y = W_o o                                                                                     d^2
    params = 4 d^2 + 2 d (r_w + r_a + r_g) + 13 d

Default ranks as the released RWKV-7 World checkpoints (BlinkDL's x070 code): r_w = r_a = max(32,
round(1.8 sqrt(d) / 32) 32), r_g = max(32, round(0.6 d^0.8 / 32) 32) (d 768: 64, 64, 128; d 2048: 96, 96, 256;
fla's layer suggests 2.5 sqrt(d) and 5 sqrt(d) instead: set the ranks to match it); 4 d^2 + ~0.4 d^2 at d = 256.

Not included: the value residual of layers after the first (v lerps towards the first layer's v, `v_first`), a
path between layers that a Composer sub-layer does not have: this is the first layer's form, everywhere.
RWKV-7's channel mix (its squared-ReLU MLP with a token shift) is not part of this token mixer. Initialisation
follows fla's for the first layer where it keeps every parameter trainable (its zero-initialised LoRA inputs
and output projection are small random instead).

FLOPs per token: the projections (2 per multiply-add) and the chunked form's matmuls per head,
2 (9 c dh + 4 dh^2 + dh^3 / c) (c = DELTA_RULE_CHUNK_SIZE: four score matrices and their products, the triangular solve,
the state hand-over); elementwise work is not counted.
State: S [H, dh, dh] and the previous input [d] (the token shift).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from composer.fields import option
from primitives.base import Cost, Primitive, State, divides, register
from primitives.common import default_heads
from primitives.ops import DELTA_RULE_CHUNK_SIZE, rwkv7
from primitives.ops.l2_normalize import l2_normalize

LOG_DECAY_SCALE = math.exp(-0.5)  # log w = -exp(-1/2) sigmoid(.): w in [exp(-0.607), 1]


@dataclass
class RWKV7Config:
    n_heads: int | None = option(None, "number of heads (null: derived from d_model, about one per 64 channels)", ge=1)
    decay_rank: int | None = option(None, "rank of the decay projection (null: as the released models)", ge=1)
    a_rank: int | None = option(None, "rank of the learning-rate projection (null: as the released models)", ge=1)
    gate_rank: int | None = option(None, "rank of the output-gate projection (null: as the released models)", ge=1)


def rwkv7_sizes(cfg: RWKV7Config, d_model: int) -> tuple[int, int, int, int]:
    """(n_heads H, decay rank, learning-rate rank, gate rank), the ranks defaulting as the released checkpoints."""
    H = cfg.n_heads or default_heads(d_model)
    low = max(32, int(round(1.8 * d_model**0.5 / 32) * 32))
    gate = max(32, int(round(0.6 * d_model**0.8 / 32) * 32))
    return H, cfg.decay_rank or low, cfg.a_rank or low, cfg.gate_rank or gate


def low_rank(d_in: int, rank: int, d_out: int, activation: nn.Module, bias: bool) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, rank, bias=False), activation, nn.Linear(rank, d_out, bias=bias))


@register("rwkv7")
class RWKV7(Primitive):
    """RWKV-7 time mixing: token shift, vector decay and learning rate, delta-rule state, bonus and gate."""

    symbol = "RW"
    saved_values = 53
    kind = "token_mixer"
    Config = RWKV7Config
    width_scaled = ("n_heads",)  # the ranks derive from d_model when left null

    def __init__(self, d_model: int, cfg: RWKV7Config):
        super().__init__(d_model, cfg)
        d = d_model
        H, r_w, r_a, r_g = rwkv7_sizes(cfg, d)
        self.n_heads, self.head_dim = H, d // H
        position = torch.arange(d, dtype=torch.float32)
        fraction = position / d
        linear = position / max(d - 1, 1) - 0.5
        centred = ((position % self.head_dim) - (self.head_dim - 1) / 2) / max((self.head_dim - 1) / 2, 1)
        zigzag = centred * centred.abs()
        # token-shift mixes of r, w, k, v, a, g (fla's first-layer init: 1 - (n / d)^p)
        self.mix = nn.Parameter(torch.stack([1 - fraction ** p for p in (0.2, 0.9, 0.7, 0.7, 0.9, 0.2)]))
        self.k_k = nn.Parameter(0.71 - 0.1 * linear)
        self.k_a = nn.Parameter(torch.full((d,), 1.02))
        self.r_k = nn.Parameter(torch.full((H, self.head_dim), -0.04))
        self.r_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.w_lora = low_rank(d, r_w, d, nn.Tanh(), bias=True)
        self.a_lora = low_rank(d, r_a, d, nn.Identity(), bias=True)
        self.g_lora = low_rank(d, r_g, d, nn.Sigmoid(), bias=False)
        self.norm_weight = nn.Parameter(torch.ones(d))
        self.norm_bias = nn.Parameter(torch.zeros(d))
        self.o_proj = nn.Linear(d, d, bias=False)
        with torch.no_grad():
            for lora in (self.w_lora, self.a_lora, self.g_lora):
                lora[0].weight.normal_(0.0, 0.01)
                lora[2].weight.mul_(0.1)
            self.w_lora[2].bias.copy_(-6 + 6 * (position / max(d - 1, 1)) + 0.5 + 2.5 * zigzag)
            self.a_lora[2].bias.copy_(-0.19 + 0.3 * zigzag + 0.4 * linear)

    @classmethod
    def check(cls, cfg: RWKV7Config, d_model: int) -> None:
        divides("n_heads", rwkv7_sizes(cfg, d_model)[0], d_model, "d_model")

    @classmethod
    def resolve(cls, cfg: RWKV7Config, d_model: int) -> RWKV7Config:
        H, r_w, r_a, r_g = rwkv7_sizes(cfg, d_model)
        return replace(cfg, n_heads=H, decay_rank=r_w, a_rank=r_a, gate_rank=r_g)

    @classmethod
    def cost(cls, cfg: RWKV7Config, d_model: int, seq_len: int, dtype_bytes: int = 2) -> Cost:
        d = d_model
        H, r_w, r_a, r_g = rwkv7_sizes(cfg, d)
        dh, c = d // H, DELTA_RULE_CHUNK_SIZE
        matmul = 4 * d * d + 2 * d * (r_w + r_a + r_g)
        params = matmul + 13 * d
        chunked = 9 * c * dh + 4 * dh * dh + dh**3 / c
        flops = 2 * matmul + 2 * H * chunked
        return Cost(params, float(flops), (H * dh * dh + d) * dtype_bytes)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> State:
        return {"ssm": torch.zeros(batch_size, self.n_heads, self.head_dim, self.head_dim, device=device, dtype=dtype),
                "shift": torch.zeros(batch_size, self.d_model, device=device, dtype=dtype)}

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        B, T, d = x.shape
        H, dh = self.n_heads, self.head_dim
        previous = x.new_zeros(B, 1, d) if state is None else state["shift"].to(x.dtype).unsqueeze(1)
        delta = torch.cat([previous, x[:, :-1]], dim=1) - x
        x_r, x_w, x_k, x_v, x_a, x_g = (x + delta * mu.to(x.dtype) for mu in self.mix)
        r, k, v = self.r_proj(x_r).float(), self.k_proj(x_k).float(), self.v_proj(x_v).float()
        log_w = -LOG_DECAY_SCALE * torch.sigmoid(self.w_lora(x_w).float())
        alpha = torch.sigmoid(self.a_lora(x_a).float())
        gate = self.g_lora(x_g).float()
        kappa = l2_normalize((k * self.k_k).view(B, T, H, dh))
        k = k * (1 + (alpha - 1) * self.k_a)
        heads = (B, T, H, dh)
        r, k, v, alpha = r.view(heads), k.view(heads), v.view(heads), alpha.view(heads)
        o, ssm = rwkv7(r, log_w.view(heads), k, v, -kappa, kappa * alpha, scale=1.0,
                       initial_state=None if state is None else state["ssm"], output_final_state=state is not None)
        o = F.group_norm(o.reshape(B * T, d), H, self.norm_weight.float(), self.norm_bias.float(),
                         eps=dh * 1e-5).view(heads)
        bonus = (r * k * self.r_k.float()).sum(-1, keepdim=True) * v
        y = self.o_proj(((o + bonus).reshape(B, T, d) * gate).to(x.dtype))
        if state is None:
            return y, None
        return y, {"ssm": ssm.to(state["ssm"].dtype), "shift": x[:, -1].to(state["shift"].dtype)}
