"""Softmax attention: MHA / GQA / MQA with RoPE (whole or partial), sliding window, QK-norm, forget gate, attention
sinks and an output gate.

Parameters (d = d_model, h = head_dim, H = n_heads, G = n_kv_heads):
    qkv projection  d * (H + 2G) * h     (+ bias (H + 2G) h, with `bias` or `qkv_bias`)
    out projection  H h * d              (+ bias d, with `bias` or `out_bias`)
    qk_norm         2 h                  (one RMSNorm weight for queries, one for keys)
    forget_gate     d * H + H            (Forgetting Transformer: per-head sigmoid gate from x)
    sinks           H                    (gpt-oss: one learned logit per head in the softmax denominator)
    output_gate     d * H h (+ H h)      channel: y * sigmoid(W_g x) per channel, before the out projection
                    d * H   (+ H)        head:    one gate per head (Gated Attention, Qiu et al. 2025)
With the defaults (H = max(1, d // 64), G = H, h = d / H) this is 4 d^2.

Qwen3-Next's gated attention is `output_gate: channel` with `qk_norm` and `rope_fraction: 0.25` (its q_proj emits
the queries and the gate together; here the gate has its own matrix, the same parameters). gpt-oss's is `sinks`
with `bias` and an alternating `window: 128`. Hymba's sliding-window layers keep the meta tokens visible:
`keep_prefix` = the model's `meta_tokens`.

Decoding keeps a KV cache of at most `window` positions (all positions without a window), plus the first
`keep_prefix` positions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from composer.fields import option
from primitives.base import ConfigError, Cost, Primitive, State, divides, register
from primitives.common import rms_norm
from primitives.ops.softmax_attention import (
    cached_positions,
    kept_indices,
    mean_keys,
    rope_angles,
    rotary,
    softmax_attention,
)


@dataclass
class AttentionConfig:
    n_heads: int | None = option(None, "number of heads (null: derived from d_model, about one per 64 channels)", ge=1)
    n_kv_heads: int | None = option(None, "key/value heads, fewer than n_heads for GQA / MQA (null: n_heads)", ge=1)
    head_dim: int | None = option(None, "width of one head (null: d_model / n_heads)", ge=1)
    window: int | None = option(None, "sliding window: attend to and cache at most this many positions (null: the "
                                "whole context)", ge=1)
    keep_prefix: int = option(0, "with a window: the first N positions stay visible to every query and cached "
                              "(Hymba's meta tokens, StreamingLLM's sink tokens)", ge=0)
    rope: bool = option(True, "rotary position embeddings on queries and keys")
    rope_base: float = option(10000.0, "RoPE frequency base", gt=1)
    rope_dims: int | None = option(None, "partial RoPE: rotate only the first N dims of each head, an even number "
                                   "(null: all of them, or rope_fraction of them)", ge=2)
    rope_fraction: float | None = option(None, "partial RoPE: rotate the first int(fraction * head_dim) dims of each "
                                         "head, as partial_rotary_factor (null: rope_dims)", gt=0, le=1)
    qk_norm: bool = option(False, "RMSNorm on queries and keys")
    forget_gate: bool = option(False, "per-head sigmoid forget gate (Forgetting Transformer)")
    sinks: bool = option(False, "attention sinks: a learned logit per head joins the softmax denominator (gpt-oss)")
    output_gate: Literal["channel", "head"] | None = option(
        None, "sigmoid gate computed from x on the attention output before the out projection: one per channel "
        "(Qwen3-Next) or one per head")
    bias: bool = option(False, "biases on the projections (and on the output gate)")
    out_bias: bool = option(False, "a bias on the output projection alone (RecurrentGemma's o_proj)")
    qkv_bias: bool = option(False, "biases on the query, key and value projections alone (Qwen2)")


def resolve_heads(cfg: AttentionConfig, d_model: int) -> tuple[int, int, int]:
    """(n_heads, n_kv_heads, head_dim) with defaults filled in."""
    n_heads = cfg.n_heads or max(1, d_model // 64)
    n_kv = cfg.n_kv_heads or n_heads
    head_dim = cfg.head_dim or d_model // n_heads
    return n_heads, n_kv, head_dim


def rotated_dims(cfg: AttentionConfig, head_dim: int) -> int:
    """How many dims of each head RoPE rotates (0 without RoPE); the whole head rounds down to an even number."""
    if not cfg.rope:
        return 0
    if cfg.rope_dims is not None:
        return cfg.rope_dims
    if cfg.rope_fraction is not None:
        return int(head_dim * cfg.rope_fraction)
    return 2 * (head_dim // 2)


def gate_width(cfg: AttentionConfig, n_heads: int, head_dim: int) -> int:
    """Outputs of the output gate's projection: H h per channel, H per head, 0 without a gate."""
    return {"channel": n_heads * head_dim, "head": n_heads, None: 0}[cfg.output_gate]


@register("attention")
class Attention(Primitive):
    """Causal softmax attention built on `scaled_dot_product_attention`."""

    symbol = "A"
    saved_values = 0
    kind = "token_mixer"
    Config = AttentionConfig
    width_scaled = ("n_heads", "n_kv_heads")  # head_dim kept: widening adds heads

    def __init__(self, d_model: int, cfg: AttentionConfig):
        super().__init__(d_model, cfg)
        self.n_heads, self.n_kv_heads, self.head_dim = resolve_heads(cfg, d_model)
        self.rope_dims = rotated_dims(cfg, self.head_dim)
        width = (self.n_heads + 2 * self.n_kv_heads) * self.head_dim
        self.qkv = nn.Linear(d_model, width, bias=cfg.bias or cfg.qkv_bias)
        self.out = nn.Linear(self.n_heads * self.head_dim, d_model, bias=cfg.bias or cfg.out_bias)
        if cfg.qk_norm:
            self.q_norm = nn.Parameter(torch.ones(self.head_dim))
            self.k_norm = nn.Parameter(torch.ones(self.head_dim))
        if cfg.forget_gate:
            self.forget = nn.Linear(d_model, self.n_heads, bias=True)
            nn.init.constant_(self.forget.bias, 4.0)  # start close to "remember everything"
        if cfg.sinks:
            self.sinks = nn.Parameter(torch.zeros(self.n_heads))
        if cfg.output_gate is not None:
            self.gate = nn.Linear(d_model, gate_width(cfg, self.n_heads, self.head_dim), bias=cfg.bias)

    @classmethod
    def check(cls, cfg: AttentionConfig, d_model: int) -> None:
        n_heads, n_kv, head_dim = resolve_heads(cfg, d_model)
        if cfg.head_dim is None:
            divides("n_heads", n_heads, d_model, "d_model")
        if n_heads % n_kv:
            raise ConfigError("n_kv_heads", f"n_kv_heads={n_kv} must divide n_heads={n_heads}")
        if cfg.rope and head_dim < 2:
            raise ConfigError("rope", "RoPE needs a head dimension of at least 2")
        if cfg.rope_dims is not None and cfg.rope_fraction is not None:
            raise ConfigError("rope_dims", "give either rope_dims or rope_fraction, not both")
        field = "rope_dims" if cfg.rope_dims is not None else "rope_fraction"
        dims = rotated_dims(cfg, head_dim)
        if cfg.rope and (dims % 2 or dims < 2 or dims > head_dim):
            raise ConfigError(field, f"RoPE would rotate {dims} dims of a head of {head_dim}: it needs an even "
                                     "number from 2 to head_dim")
        if cfg.keep_prefix and cfg.forget_gate:
            raise ConfigError("keep_prefix", "cannot be combined with forget_gate (its decay needs every position "
                                             "between a key and its query)")

    @classmethod
    def resolve(cls, cfg: AttentionConfig, d_model: int) -> AttentionConfig:
        n_heads, n_kv, head_dim = resolve_heads(cfg, d_model)
        return replace(cfg, n_heads=n_heads, n_kv_heads=n_kv, head_dim=head_dim,
                       rope_dims=rotated_dims(cfg, head_dim) or None, rope_fraction=None,
                       keep_prefix=cfg.keep_prefix if cfg.window is not None else 0)

    @classmethod
    def cost(cls, cfg: AttentionConfig, d_model: int, seq_len: int, dtype_bytes: int = 2) -> Cost:
        n_heads, n_kv, h = resolve_heads(cfg, d_model)
        width = (n_heads + 2 * n_kv) * h
        gate = gate_width(cfg, n_heads, h)
        params = d_model * width + n_heads * h * d_model + d_model * gate
        if cfg.bias:
            params += width + d_model + gate
        else:
            params += (d_model if cfg.out_bias else 0) + (width if cfg.qkv_bias else 0)
        if cfg.qk_norm:
            params += 2 * h
        forget = d_model * n_heads + n_heads if cfg.forget_gate else 0
        params += forget + (n_heads if cfg.sinks else 0)
        keep_prefix = cfg.keep_prefix if cfg.window is not None else 0
        flops = 2 * (params - forget - (n_heads if cfg.sinks else 0))
        flops += 2 * 2 * n_heads * h * mean_keys(seq_len, cfg.window, keep_prefix)  # QK^T and AV
        cached = min(cfg.window + keep_prefix, seq_len) if cfg.window else seq_len
        state = 2 * n_kv * h * cached * dtype_bytes
        return Cost(params, float(flops), int(state))

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> State:
        empty = torch.zeros(batch_size, self.n_kv_heads, 0, self.head_dim, device=device, dtype=dtype)
        state = {"k": empty, "v": empty.clone(), "pos": torch.zeros((), dtype=torch.long, device=device)}
        if self.cfg.forget_gate:
            state["logf"] = torch.zeros(batch_size, self.n_heads, 0, device=device, dtype=torch.float32)
        return state

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        B, T, _ = x.shape
        H, G, h = self.n_heads, self.n_kv_heads, self.head_dim
        window, keep_prefix = self.cfg.window, self.cfg.keep_prefix if self.cfg.window is not None else 0
        q, k, v = self.qkv(x).split([H * h, G * h, G * h], dim=-1)
        q = q.view(B, T, H, h).transpose(1, 2)
        k = k.view(B, T, G, h).transpose(1, 2)
        v = v.view(B, T, G, h).transpose(1, 2)
        if self.cfg.qk_norm:
            q, k = rms_norm(q, self.q_norm), rms_norm(k, self.k_norm)
        start = int(state["pos"]) if state is not None else 0
        if self.cfg.rope:
            cos, sin = self._angles(start, T, x.device)
            q, k = rotary(q, cos, sin), rotary(k, cos, sin)
        logf = None
        if self.cfg.forget_gate:
            logf = F.logsigmoid(self.forget(x).float()).transpose(1, 2)  # [B, H, T]
        q_pos = torch.arange(start, start + T, device=x.device)
        k_pos = q_pos
        if state is not None:
            k_pos = torch.cat([cached_positions(start, state["k"].shape[2], keep_prefix, x.device), q_pos])
            k = torch.cat([state["k"], k], dim=2)
            v = torch.cat([state["v"], v], dim=2)
            if logf is not None:
                logf = torch.cat([state["logf"], logf], dim=2)
        bias = None
        if logf is not None:
            # Forgetting Transformer: score bias sum_{l=j+1}^{i} log f_l = c_i - c_j with c the cumsum (the cache
            # holds every position from its oldest key on: keep_prefix is refused with the forget gate).
            cum = logf.cumsum(-1)
            bias = cum[:, :, -T:, None] - cum[:, :, None, :]
        y = softmax_attention(q, k, v, q_pos, k_pos, window, keep_prefix,
                              self.sinks if self.cfg.sinks else None, bias)  # [B, H, T, h]
        if self.cfg.output_gate == "head":
            y = y * torch.sigmoid(self.gate(x)).transpose(1, 2)[..., None].to(y.dtype)
        y = y.transpose(1, 2).reshape(B, T, H * h)
        if self.cfg.output_gate == "channel":
            y = y * torch.sigmoid(self.gate(x)).to(y.dtype)
        y = self.out(y)
        new_state = None
        if state is not None:
            keep = kept_indices(k_pos, start + T, window, keep_prefix)
            new_state = {"k": k, "v": v, "pos": state["pos"] + T}
            if logf is not None:
                new_state["logf"] = logf
            if keep is not None:
                new_state = {name: value if name == "pos" else value.index_select(2, keep)
                             for name, value in new_state.items()}
        return y, new_state

    def _angles(self, start: int, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE angles for positions start..start+length-1, cached for the last training length."""
        if torch.compiler.is_compiling():  # never keep traced tensors in the cache
            return rope_angles(torch.arange(start, start + length, device=device), self.rope_dims,
                               self.cfg.rope_base)
        key = (start, length, device)
        if getattr(self, "_rope_key", None) != key:
            positions = torch.arange(start, start + length, device=device)
            self._rope_cache = rope_angles(positions, self.rope_dims, self.cfg.rope_base)
            self._rope_key = key
        return self._rope_cache
