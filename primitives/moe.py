"""Mixture of Experts channel mixer: token-choice top-k routing over SwiGLU experts.

    scores   = softmax(x W_r)  or  sigmoid(x W_r)                       router, [N, E]
    chosen   = top_k(scores);  w = scores[chosen] (/ their sum when renormalize)
    y        = sum_{e in chosen} w_e * SwiGLU_e(x)  +  sum_s SwiGLU_shared_s(x)

Dispatch is dropless by default: the (token, expert) assignments are sorted by expert and each expert
multiplies its contiguous slice of tokens (`primitives.ops.grouped_mm`: `torch._grouped_mm` where it
works, else a loop over experts). With `capacity_factor` each expert takes at most
`ceil(capacity_factor * N * top_k / E)` assignments of the N = B*T tokens in the call; the overflow is
dropped (contributes zero), keeping the earliest positions first (position-major, then batch row). Routing
then depends on what else is in the batch, so chunked or one-token decoding equals the full forward only
in the dropless default.

Auxiliary losses of the last forward (`aux_losses()`, already multiplied by their coefficients):
    moe_balance = E * sum_e f_e * P_e   (Switch; f_e: fraction of routed assignments to e before capacity
                                          dropping, P_e: mean router probability of e, sigmoid scores
                                          normalised per token; 1.0 for perfectly uniform routing)
    moe_z       = mean_tokens logsumexp(logits)^2

Parameters (d = d_model, h = round(expansion * d), E experts, S shared): router d E, experts 3 d h E,
shared experts 3 d h S. Active per token: d E + 3 d h (top_k + S). Options of the published MoEs:

    bias              biases on the router (E) and on every expert's projections (E (2h + d)): gpt-oss
    activation        clamped_swiglu: gpt-oss's (up + 1) * g sigmoid(1.702 g), g = min(gate, 7), up in [-7, 7]
    shared_gate       y_shared * sigmoid(w . x), one gate of d weights for the shared experts: Qwen3-Next
    score_correction  a learned bias (E) added to the scores only to choose the experts, the weights stay the scores
                      (DeepSeek-V3's e_score_correction_bias, Kimi Linear; a parameter without gradient, as
                      DeepSeek-V3 moves it by a balancing rule, not modelled); routed_scale multiplies the routed sum
                      (DeepSeek-V3 / Kimi Linear's routed_scaling_factor) The default expansion 11/8 makes an
8-expert top-2 layer activate 8.25 d^2 expert parameters (a dense SwiGLU MLP has 8 d^2) and keeps h a
multiple of 8 whenever d is a multiple of 64, as grouped GEMM kernels need 16-byte aligned rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from composer.fields import option
from primitives.base import ConfigError, Cost, Primitive, State, register
from primitives.ops.grouped_mm import Impl, grouped_mm


@dataclass
class MoEConfig:
    n_experts: int = option(8, "number of routed experts", ge=1)
    top_k: int = option(2, "experts chosen per token", ge=1)
    score: Literal["softmax", "sigmoid"] = option("softmax", "router scores: softmax or sigmoid")
    n_shared_experts: int = option(0, "experts every token goes through", ge=0)
    expansion: float = option(1.375, "hidden width of each expert as a multiple of d_model", gt=0)
    capacity_factor: float | None = option(None, "cap on each expert's tokens, the overflow dropped (null: dropless)",
                                           gt=0)
    aux_loss_coef: float = option(0.01, "weight of the load-balancing loss", ge=0)
    z_loss_coef: float = option(0.001, "weight of the router z-loss", ge=0)
    renormalize: bool = option(True, "rescale the chosen experts' weights to sum to 1")
    bias: bool = option(False, "biases on the router and on every expert's projections (gpt-oss)")
    activation: Literal["swiglu", "clamped_swiglu"] = option(
        "swiglu", "the experts' gated activation: swiglu, or gpt-oss's clamped_swiglu")
    shared_gate: bool = option(False, "a sigmoid gate from x on the shared experts' output (Qwen3-Next)")
    score_correction: bool = option(False, "a learned per-expert bias on the scores that only chooses the experts "
                                    "(DeepSeek-V3, Kimi Linear)")
    routed_scale: float = option(1.0, "factor on the routed experts' sum (routed_scaling_factor)", gt=0)


CLAMP_LIMIT, CLAMP_ALPHA = 7.0, 1.702    # gpt-oss's swiglu_limit and its sigmoid slope


def expert_hidden(cfg: MoEConfig, d_model: int) -> int:
    return int(round(cfg.expansion * d_model))


def expert_capacity(cfg: MoEConfig, n_tokens: int) -> int | None:
    """Assignments one expert may take from a call of `n_tokens` tokens (None: dropless)."""
    if cfg.capacity_factor is None:
        return None
    return math.ceil(cfg.capacity_factor * n_tokens * cfg.top_k / cfg.n_experts)


@register("moe")
class MoE(Primitive):
    """Top-k routed SwiGLU experts (stacked weights [E, d, 2h] and [E, h, d]) plus optional shared ones."""

    symbol = "E"
    saved_values = 16
    kind = "channel_mixer"
    Config = MoEConfig
    width_scaled = ()  # expert count, top_k and expert expansion kept

    def __init__(self, d_model: int, cfg: MoEConfig):
        super().__init__(d_model, cfg)
        h = expert_hidden(cfg, d_model)
        self.hidden = h
        self.impl: Impl = "auto"  # grouped-matmul implementation; not part of the architecture
        self.router = nn.Linear(d_model, cfg.n_experts, bias=cfg.bias)
        self.w_up = nn.Parameter(torch.empty(cfg.n_experts, d_model, 2 * h))  # [gate | up]
        self.w_down = nn.Parameter(torch.empty(cfg.n_experts, h, d_model))
        nn.init.uniform_(self.w_up, -d_model ** -0.5, d_model ** -0.5)
        nn.init.uniform_(self.w_down, -h ** -0.5, h ** -0.5)
        if cfg.bias:
            self.b_up = nn.Parameter(torch.zeros(cfg.n_experts, 2 * h))
            self.b_down = nn.Parameter(torch.zeros(cfg.n_experts, d_model))
        if cfg.score_correction:  # not learned by gradient: DeepSeek-V3 moves it by a balancing rule (not modelled)
            self.score_bias = nn.Parameter(torch.zeros(cfg.n_experts), requires_grad=False)
        if cfg.n_shared_experts:
            # S shared SwiGLU experts of hidden h sum to one SwiGLU of hidden S*h
            self.shared_up = nn.Linear(d_model, 2 * cfg.n_shared_experts * h, bias=False)
            self.shared_down = nn.Linear(cfg.n_shared_experts * h, d_model, bias=False)
            if cfg.shared_gate:
                self.shared_gate = nn.Linear(d_model, 1, bias=False)
        self._aux: dict[str, torch.Tensor] = {}

    # -- configuration and cost --------------------------------------------------------------------
    @classmethod
    def check(cls, cfg: MoEConfig, d_model: int) -> None:
        if cfg.top_k > cfg.n_experts:
            raise ConfigError("top_k", f"top_k={cfg.top_k} must be at most n_experts={cfg.n_experts}")
        if expert_hidden(cfg, d_model) < 1:
            raise ConfigError("expansion",
                              f"expansion={cfg.expansion} gives an empty expert at d_model={d_model}")
        if cfg.shared_gate and not cfg.n_shared_experts:
            raise ConfigError("shared_gate", "gates the shared experts: needs n_shared_experts >= 1")

    @classmethod
    def cost(cls, cfg: MoEConfig, d_model: int, seq_len: int, dtype_bytes: int = 2) -> Cost:
        """FLOPs count the router and top_k + shared experts per token (an upper bound with capacity)."""
        h = expert_hidden(cfg, d_model)
        router = d_model * cfg.n_experts
        expert = 3 * d_model * h
        flops = 2 * (router + expert * (cfg.top_k + cfg.n_shared_experts))
        own = (cfg.n_experts if cfg.bias else 0) + (cfg.n_experts if cfg.score_correction else 0)
        own += d_model if cfg.shared_gate else 0
        expert_bias = (2 * h + d_model) if cfg.bias else 0
        params = router + own + (expert + expert_bias) * cfg.n_experts + expert * cfg.n_shared_experts
        active = router + own + (expert + expert_bias) * cfg.top_k + expert * cfg.n_shared_experts
        return Cost(params, float(flops + (2 * d_model if cfg.shared_gate else 0)), 0, active)

    def aux_losses(self) -> dict[str, torch.Tensor]:
        return dict(self._aux)

    # -- forward -----------------------------------------------------------------------------------
    def route(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Router logits and scores [N, E] (fp32), routing weights [N, k] and chosen experts [N, k]."""
        logits = self.router(tokens).float()
        scores = logits.softmax(-1) if self.cfg.score == "softmax" else logits.sigmoid()
        if self.cfg.score_correction:
            experts = (scores + self.score_bias.float()).topk(self.cfg.top_k, dim=-1).indices
            weights = scores.gather(-1, experts)
        else:
            weights, experts = scores.topk(self.cfg.top_k, dim=-1)
        if self.cfg.renormalize:
            weights = weights / weights.sum(-1, keepdim=True)
        return logits, scores, weights * self.cfg.routed_scale, experts

    def dispatch(self, experts: torch.Tensor, batch: int, seq: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Kept assignments (indices into the flattened [N * k]) sorted by expert, and tokens per expert.

        Within an expert, assignments are ordered by (position, batch row): capacity keeps the earliest.
        """
        n_experts, k = self.cfg.n_experts, self.cfg.top_k
        n_assign = experts.numel()
        flat_experts = experts.reshape(-1)
        index = torch.arange(n_assign, device=experts.device)
        token = index // k
        priority = ((token % seq) * batch + token // seq) * k + index % k
        order = torch.argsort(flat_experts * n_assign + priority)
        counts = torch.bincount(flat_experts, minlength=n_experts)
        capacity = expert_capacity(self.cfg, batch * seq)
        if capacity is not None:
            starts = counts.cumsum(0) - counts
            rank = index - starts[flat_experts[order]]
            order = order[rank < capacity]
            counts = counts.clamp(max=capacity)
        return order, counts

    def experts_forward(self, tokens: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """SwiGLU of each expert over its contiguous slice of `tokens` (sorted by expert)."""
        hidden = grouped_mm(tokens, self.w_up, counts, self.impl)
        if self.cfg.bias:
            owner = torch.repeat_interleave(torch.arange(self.cfg.n_experts, device=tokens.device), counts)
            hidden = hidden + self.b_up[owner].to(hidden.dtype)
        out = grouped_mm(self.activate(hidden), self.w_down, counts, self.impl)
        return out + self.b_down[owner].to(out.dtype) if self.cfg.bias else out

    def activate(self, hidden: torch.Tensor) -> torch.Tensor:
        """The gated activation of [gate | up]: silu(gate) * up, or gpt-oss's clamped form."""
        gate, up = hidden.chunk(2, dim=-1)
        if self.cfg.activation == "clamped_swiglu":
            gate, up = gate.clamp(max=CLAMP_LIMIT), up.clamp(-CLAMP_LIMIT, CLAMP_LIMIT)
            return (up + 1) * gate * torch.sigmoid(CLAMP_ALPHA * gate)
        return F.silu(gate) * up

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        batch, seq, d = x.shape
        flat = x.reshape(-1, d)
        logits, scores, weights, experts = self.route(flat)
        order, counts = self.dispatch(experts, batch, seq)
        token = order // self.cfg.top_k
        out = self.experts_forward(flat[token], counts) * weights.reshape(-1)[order, None].to(x.dtype)
        y = torch.zeros_like(flat).index_add(0, token, out)
        if self.cfg.n_shared_experts:
            gate, up = self.shared_up(flat).chunk(2, dim=-1)
            shared = self.shared_down(F.silu(gate) * up)
            y = y + (shared * torch.sigmoid(self.shared_gate(flat)) if self.cfg.shared_gate else shared)
        self._aux = self.routing_losses(logits, scores, experts)
        return y.view(batch, seq, d), state

    def routing_losses(self, logits: torch.Tensor, scores: torch.Tensor,
                       experts: torch.Tensor) -> dict[str, torch.Tensor]:
        n_experts = self.cfg.n_experts
        probs = scores if self.cfg.score == "softmax" else scores / scores.sum(-1, keepdim=True)
        assigned = torch.bincount(experts.reshape(-1), minlength=n_experts).to(probs.dtype)
        balance = n_experts * (assigned / experts.numel() * probs.mean(0)).sum()
        z = torch.logsumexp(logits, dim=-1).square().mean()
        return {"moe_balance": self.cfg.aux_loss_coef * balance, "moe_z": self.cfg.z_loss_coef * z}
