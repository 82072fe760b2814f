"""Multi-head latent attention (MLA; DeepSeek-V2, DeepSeek-V3, Kimi Linear): keys and values through a low-rank latent.

Per token (d = d_model, H = n_heads, r = kv_lora_rank, dn = qk_nope_head_dim, dr = qk_rope_head_dim, dv = v_head_dim):

    [c, k_r] = W_kv_a x                   c: the latent [r], k_r: one decoupled RoPE key [dr] shared by every head
    c        = RMSNorm(c)
    [k_n, v] = W_kv_b c                   per head: a key part [dn] and a value [dv]
    k        = [k_n, RoPE(k_r)]           per head [dn + dr]
    q        = W_q x   or   W_q_b RMSNorm(W_q_a x)  (low-rank queries, rank q_lora_rank), per head [dn + dr],
               its last dr dims rotated
    y        = W_o softmax(q k^T / sqrt(dn + dr)) v

Decoding caches only c and RoPE(k_r): (r + dr) values per token, whatever the head count, and recomputes k_n and v
from the cached latents (`cost().state_bytes` counts exactly that cache). `rope: false` is Kimi Linear's NoPE MLA
(mla_use_nope): the dr dims stay in queries and keys, unrotated. DeepSeek's released weights rotate interleaved
pairs (rope_interleave); here the pairs are (first half, second half) of the dr dims: the same model with those
weight rows permuted. YaRN's long-context rescaling of RoPE and of the softmax scale is not modelled.

Parameters: d r + d dr + r (latent norm) + r H (dn + dv) + H dv d, plus the queries: d H (dn + dr) at full rank,
or d rq + rq (norm) + rq H (dn + dr) with q_lora_rank rq; with `bias`, W_kv_a, W_q_a and W_o have biases
(DeepSeek's attention_bias; the full-rank W_q and the up-projections never do).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from composer.fields import option
from primitives.base import ConfigError, Cost, Primitive, State, divides, register
from primitives.common import rms_norm
from primitives.ops.softmax_attention import rope_angles, rotary, softmax_attention


@dataclass
class MLAConfig:
    n_heads: int | None = option(None, "number of heads (null: derived from d_model, about one per 64 channels)", ge=1)
    kv_lora_rank: int | None = option(None, "width of the key/value latent, what the cache holds per token (null: "
                                      "d_model // 4)", ge=1)
    q_lora_rank: int | None = option(None, "low-rank queries through a normed latent of this width (null: one "
                                     "full-rank query projection, as Kimi Linear and DeepSeek-V2-Lite)", ge=1)
    qk_nope_head_dim: int | None = option(None, "per-head query/key dims without position (null: d_model / n_heads)",
                                          ge=1)
    qk_rope_head_dim: int | None = option(None, "per-head query/key dims that carry RoPE, the key's shared by all "
                                          "heads; even (null: qk_nope_head_dim / 2, rounded down to even)", ge=0)
    v_head_dim: int | None = option(None, "per-head value dims (null: qk_nope_head_dim)", ge=1)
    rope: bool = option(True, "rotate the RoPE dims (false: NoPE, Kimi Linear's MLA; the dims stay, unrotated)")
    rope_base: float = option(10000.0, "RoPE frequency base", gt=1)
    bias: bool = option(False, "biases on the down-projections and the output projection (attention_bias)")


@dataclass(frozen=True)
class MLASizes:
    heads: int
    kv_rank: int
    q_rank: int | None
    nope: int
    rope: int
    value: int

    @property
    def qk(self) -> int:
        return self.nope + self.rope


def sizes(cfg: MLAConfig, d_model: int) -> MLASizes:
    """The sizes with the defaults filled in."""
    heads = cfg.n_heads or max(1, d_model // 64)
    nope = cfg.qk_nope_head_dim or max(1, d_model // heads)
    rope = cfg.qk_rope_head_dim if cfg.qk_rope_head_dim is not None else 2 * (nope // 4)
    return MLASizes(heads, cfg.kv_lora_rank or max(1, d_model // 4), cfg.q_lora_rank, nope, rope,
                    cfg.v_head_dim or nope)


@register("mla")
class MultiHeadLatentAttention(Primitive):
    """Multi-head latent attention (DeepSeek-V2/V3, Kimi Linear): a KV cache of one low-rank latent per token."""

    symbol = "ML"
    saved_values = 0  # beyond its projections it keeps what softmax attention keeps (nothing per width)
    kind = "token_mixer"
    Config = MLAConfig
    width_scaled = ("n_heads", "kv_lora_rank", "q_lora_rank")  # head dims kept: widening adds heads

    def __init__(self, d_model: int, cfg: MLAConfig):
        super().__init__(d_model, cfg)
        s = self.sizes = sizes(cfg, d_model)
        if s.q_rank is None:
            self.q_proj = nn.Linear(d_model, s.heads * s.qk, bias=False)
        else:
            self.q_a = nn.Linear(d_model, s.q_rank, bias=cfg.bias)
            self.q_norm = nn.Parameter(torch.ones(s.q_rank))
            self.q_b = nn.Linear(s.q_rank, s.heads * s.qk, bias=False)
        self.kv_a = nn.Linear(d_model, s.kv_rank + s.rope, bias=cfg.bias)
        self.kv_norm = nn.Parameter(torch.ones(s.kv_rank))
        self.kv_b = nn.Linear(s.kv_rank, s.heads * (s.nope + s.value), bias=False)
        self.out = nn.Linear(s.heads * s.value, d_model, bias=cfg.bias)

    @classmethod
    def check(cls, cfg: MLAConfig, d_model: int) -> None:
        s = sizes(cfg, d_model)
        if cfg.qk_nope_head_dim is None:
            divides("n_heads", s.heads, d_model, "d_model")
        if cfg.rope and s.rope % 2:
            raise ConfigError("qk_rope_head_dim", f"RoPE rotates pairs of dims: qk_rope_head_dim={s.rope} must be even")

    @classmethod
    def resolve(cls, cfg: MLAConfig, d_model: int) -> MLAConfig:
        s = sizes(cfg, d_model)
        return replace(cfg, n_heads=s.heads, kv_lora_rank=s.kv_rank, qk_nope_head_dim=s.nope,
                       qk_rope_head_dim=s.rope, v_head_dim=s.value)

    @classmethod
    def cost(cls, cfg: MLAConfig, d_model: int, seq_len: int, dtype_bytes: int = 2) -> Cost:
        s = sizes(cfg, d_model)
        if s.q_rank is None:
            queries, q_norm, q_bias = d_model * s.heads * s.qk, 0, 0
        else:
            queries, q_norm, q_bias = d_model * s.q_rank + s.q_rank * s.heads * s.qk, s.q_rank, s.q_rank
        matmul = queries + d_model * (s.kv_rank + s.rope) + s.kv_rank * s.heads * (s.nope + s.value)
        matmul += s.heads * s.value * d_model
        biases = q_bias + s.kv_rank + s.rope + d_model if cfg.bias else 0
        params = matmul + biases + q_norm + s.kv_rank
        mean_keys = (seq_len + 1) / 2  # keys attended per query over a causal sequence
        flops = 2 * (matmul + biases) + 2 * s.heads * (s.qk + s.value) * mean_keys  # projections, QK^T and AV
        state = (s.kv_rank + s.rope) * seq_len * dtype_bytes
        return Cost(params, float(flops), int(state))

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> State:
        s = self.sizes
        return {"latent": torch.zeros(batch_size, 0, s.kv_rank, device=device, dtype=dtype),
                "rope_key": torch.zeros(batch_size, 0, s.rope, device=device, dtype=dtype),
                "pos": torch.zeros((), dtype=torch.long, device=device)}

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        B, T, _ = x.shape
        s = self.sizes
        if s.q_rank is None:
            q = self.q_proj(x)
        else:
            q = self.q_b(rms_norm(self.q_a(x), self.q_norm))
        q = q.view(B, T, s.heads, s.qk).transpose(1, 2)
        latent, rope_key = self.kv_a(x).split([s.kv_rank, s.rope], dim=-1)
        latent = rms_norm(latent, self.kv_norm)
        start = int(state["pos"]) if state is not None else 0
        if self.cfg.rope and s.rope:
            cos, sin = rope_angles(torch.arange(start, start + T, device=x.device), s.rope, self.cfg.rope_base)
            q = torch.cat([q[..., :s.nope], rotary(q[..., s.nope:], cos, sin)], dim=-1)
            rope_key = rotary(rope_key[:, None], cos, sin)[:, 0]
        if state is not None:
            latent = torch.cat([state["latent"].to(latent.dtype), latent], dim=1)
            rope_key = torch.cat([state["rope_key"].to(rope_key.dtype), rope_key], dim=1)
        S = latent.shape[1]
        k_nope, v = self.kv_b(latent).view(B, S, s.heads, s.nope + s.value).transpose(1, 2).split(
            [s.nope, s.value], dim=-1)
        k = torch.cat([k_nope, rope_key[:, None].expand(B, s.heads, S, s.rope)], dim=-1)
        positions = torch.arange(S, device=x.device)
        y = softmax_attention(q, k, v, positions[S - T:], positions)
        y = self.out(y.transpose(1, 2).reshape(B, T, s.heads * s.value))
        if state is None:
            return y, None
        return y, {"latent": latent, "rope_key": rope_key, "pos": state["pos"] + T}
