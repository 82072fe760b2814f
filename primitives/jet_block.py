"""JetBlock (Jet-Nemotron, NVIDIA 2025; Gu et al., arXiv:2508.15884): Gated DeltaNet whose values pass through a
dynamic causal short convolution, its kernel generated per token from the input.

Layer, as NVlabs/Jet-Nemotron's `jet_block.py` and `dynamic_conv.py` (H heads, dk = head_dim, dv = dk * expand_v,
K = H dk, V = H dv, k = kernel_size, r = V // generator_reduction):

    q, k = silu(W_q x), silu(W_k x)           no short convolution on q, k; L2-normalised per head    2 d K
    w_t = W_2 silu(W_1 x_t) + b_2              the kernel generator: a k-tap kernel per value channel  d r + r V k + V k
    v = silu(dynamic_conv(W_v x, w))           y_t = sum_j w_t[j] (W_v x)_{t-k+1+j}  (ops.dynamic_conv)  d V
    g = -exp(A_log_h) softplus(W_a x + dt_bias_h),  beta = sigmoid(W_b x)                                2 d H + 2 H
    S_t = exp(g_t) S_{t-1} + beta_t k_t^T (v_t - exp(g_t) k_t S_{t-1});  o_t = dk^-0.5 q_t S_t  (gated delta rule)
    o = RMSNorm(o) * silu(W_g x) -> W_o        norm weight dv shared by the heads (eps 1e-5)             dv + 2 V d
    params = 2 d K + d V + d r + r V k + V k + 2 d H + 2 H + dv + 2 V d

Jet-Nemotron-2B: d = 1536, 12 heads, head_dim 96, expand_v 8/3 (dv = 256), kernel 4, generator_reduction 8.
Initialisation: Composer's (nn.Linear) for every matrix; the release zeroes the generator's matrices and draws its
bias (the static kernel) from N(0, 0.02), which would leave W_1 without a gradient at the first step. A_log and
dt_bias as `gated_deltanet`.

FLOPs per token: the projections and generator (2 per multiply-add), the dynamic convolution (2 V k) and the chunked
delta rule per head as `gated_deltanet` counts it, 4 dk dv + 2 c (dk + dv) + 2 dk dv (c = DELTA_RULE_CHUNK_SIZE);
elementwise gates and norms are not counted. State: S [H, dk, dv] and the last k - 1 value inputs [V, k - 1].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from composer.fields import option
from primitives.base import Cost, Primitive, State, register
from primitives.common import check_expanded_heads, expanded_heads, inverse_softplus_dt, rms_norm
from primitives.ops import DELTA_RULE_CHUNK_SIZE, dynamic_conv, gated_delta_rule

NORM_EPS = 1e-5


@dataclass
class JetBlockConfig:
    n_heads: int | None = option(None, "number of heads (null: derived from d_model, about one per 64 channels)", ge=1)
    head_dim: int | None = option(None, "query/key width of one head (null: d_model / n_heads)", ge=1)
    expand_v: float = option(1.0, "value width of a head as a multiple of head_dim (Jet-Nemotron: 8/3)", gt=0)
    kernel_size: int = option(4, "taps of the dynamic convolution on the values", ge=1)
    generator_reduction: int = option(8, "the kernel generator's hidden width is the value width / this", ge=1)


def jet_sizes(cfg: JetBlockConfig, d_model: int) -> tuple[int, int, int, int]:
    """(n_heads H, key head width dk, value head width dv, generator width r)."""
    H, dk, dv = expanded_heads(cfg.n_heads, cfg.head_dim, cfg.expand_v, d_model)
    return H, dk, dv, max(H * dv // cfg.generator_reduction, 1)


ConvForm = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


@register("jet_block")
class JetBlock(Primitive):
    """JetBlock: Gated DeltaNet with a per-token generated causal convolution on the values."""

    symbol = "JB"
    saved_values = 24  # tests/test_train_memory.py measures 38 per width in all (gated_deltanet: 28, counted 16)
    kind = "token_mixer"
    Config = JetBlockConfig
    width_scaled = ("n_heads",)  # head_dim, expand_v and the reduction kept: widening adds heads

    def __init__(self, d_model: int, cfg: JetBlockConfig):
        super().__init__(d_model, cfg)
        H, dk, dv, r = jet_sizes(cfg, d_model)
        self.n_heads, self.dk, self.dv, self.kernel_size = H, dk, dv, cfg.kernel_size
        K, V = H * dk, H * dv
        self.qkv = nn.Linear(d_model, 2 * K + V, bias=False)
        self.generator = nn.Sequential(nn.Linear(d_model, r, bias=False), nn.SiLU(),
                                       nn.Linear(r, V * cfg.kernel_size, bias=True))
        self.a_proj = nn.Linear(d_model, H, bias=False)
        self.b_proj = nn.Linear(d_model, H, bias=False)
        self.A_log = nn.Parameter(torch.log(torch.empty(H).uniform_(1, 16)))
        self.dt_bias = nn.Parameter(inverse_softplus_dt(H))
        self.g_proj = nn.Linear(d_model, V, bias=False)
        self.o_norm = nn.Parameter(torch.ones(dv))
        self.o_proj = nn.Linear(V, d_model, bias=False)

    @classmethod
    def check(cls, cfg: JetBlockConfig, d_model: int) -> None:
        check_expanded_heads(cfg.n_heads, cfg.head_dim, cfg.expand_v, d_model)

    @classmethod
    def resolve(cls, cfg: JetBlockConfig, d_model: int) -> JetBlockConfig:
        H, dk, _, _ = jet_sizes(cfg, d_model)
        return replace(cfg, n_heads=H, head_dim=dk)

    @classmethod
    def cost(cls, cfg: JetBlockConfig, d_model: int, seq_len: int, dtype_bytes: int = 2) -> Cost:
        H, dk, dv, r = jet_sizes(cfg, d_model)
        K, V, d, k, c = H * dk, H * dv, d_model, cfg.kernel_size, DELTA_RULE_CHUNK_SIZE
        matmul = d * (2 * K + V) + d * r + r * V * k + 2 * d * H + 2 * V * d
        params = matmul + V * k + 2 * H + dv
        recurrence = H * (6 * dk * dv + 2 * c * (dk + dv))
        flops = 2 * matmul + 2 * V * k + recurrence
        state = (H * dk * dv + V * (k - 1)) * dtype_bytes
        return Cost(params, float(flops), state)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> State:
        V = self.n_heads * self.dv
        return {"ssm": torch.zeros(batch_size, self.n_heads, self.dk, self.dv, device=device, dtype=dtype),
                "conv": torch.zeros(batch_size, V, self.kernel_size - 1, device=device, dtype=dtype)}

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        return self.mix(x, state, dynamic_conv, gated_delta_rule)

    def mix(self, x: torch.Tensor, state: State, conv: ConvForm, recurrence: Callable) -> tuple[torch.Tensor, State]:
        """The layer with the given forms of the convolution and the recurrence (tests pass the references)."""
        B, T, _ = x.shape
        H, dk, dv, k = self.n_heads, self.dk, self.dv, self.kernel_size
        q, key, v = self.qkv(x).split([H * dk, H * dk, H * dv], dim=-1)
        kernels = self.generator(x).view(B, T, H * dv, k)
        v, cache = conv(v, kernels, None if state is None else state["conv"])
        q = F.normalize(F.silu(q).float().view(B, T, H, dk), dim=-1)
        key = F.normalize(F.silu(key).float().view(B, T, H, dk), dim=-1)
        v = F.silu(v).float().view(B, T, H, dv)
        g = -self.A_log.float().exp() * F.softplus(self.a_proj(x).float() + self.dt_bias.float())
        beta = torch.sigmoid(self.b_proj(x).float())
        o, ssm = recurrence(q, key, v, g, beta, initial_state=None if state is None else state["ssm"],
                            output_final_state=state is not None)
        o = rms_norm(o, self.o_norm.float(), eps=NORM_EPS) * F.silu(self.g_proj(x).float().view(B, T, H, dv))
        y = self.o_proj(o.reshape(B, T, H * dv).to(x.dtype))
        if state is None:
            return y, None
        return y, {"ssm": ssm.to(state["ssm"].dtype), "conv": cache}
