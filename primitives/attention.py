"""Softmax attention: MHA / GQA / MQA with RoPE, optional sliding window, QK-norm and forget gate.

Parameters (d = d_model, h = head_dim, H = n_heads, G = n_kv_heads):
    qkv projection  d * (H + 2G) * h     (+ bias (H + 2G) h)
    out projection  H h * d              (+ bias d)
    qk_norm         2 h                  (one RMSNorm weight for queries, one for keys)
    forget_gate     d * H + H            (Forgetting Transformer: per-head sigmoid gate from x)
With the defaults (H = max(1, d // 64), G = H, h = d / H) this is 4 d^2.

Decoding keeps a KV cache of at most `window` positions (all positions without a window).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from composer.fields import option
from primitives.base import ConfigError, Cost, Primitive, State, divides, register
from primitives.common import rms_norm


@dataclass
class AttentionConfig:
    n_heads: int | None = option(None, "number of heads (null: derived from d_model, about one per 64 channels)", ge=1)
    n_kv_heads: int | None = option(None, "key/value heads, fewer than n_heads for GQA / MQA (null: n_heads)", ge=1)
    head_dim: int | None = option(None, "width of one head (null: d_model / n_heads)", ge=1)
    window: int | None = option(None, "sliding window: attend to and cache at most this many positions (null: the "
                                "whole context)", ge=1)
    rope: bool = option(True, "rotary position embeddings on queries and keys")
    rope_base: float = option(10000.0, "RoPE frequency base", gt=1)
    qk_norm: bool = option(False, "RMSNorm on queries and keys")
    forget_gate: bool = option(False, "per-head sigmoid forget gate (Forgetting Transformer)")
    bias: bool = option(False, "biases on the projections")


def resolve_heads(cfg: AttentionConfig, d_model: int) -> tuple[int, int, int]:
    """(n_heads, n_kv_heads, head_dim) with defaults filled in."""
    n_heads = cfg.n_heads or max(1, d_model // 64)
    n_kv = cfg.n_kv_heads or n_heads
    head_dim = cfg.head_dim or d_model // n_heads
    return n_heads, n_kv, head_dim


def rope_angles(positions: torch.Tensor, dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the RoPE angles, [T, dim // 2], for integer positions [T]."""
    half = dim // 2
    inv_freq = base ** (-torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    return angles.cos(), angles.sin()


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half, second half) of the last dim of x [B, H, T, h] by the RoPE angles."""
    half = cos.shape[-1]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:2 * half]
    rotated = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    if 2 * half < x.shape[-1]:
        rotated = torch.cat([rotated, x[..., 2 * half:]], dim=-1)
    return rotated


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
        width = (self.n_heads + 2 * self.n_kv_heads) * self.head_dim
        self.qkv = nn.Linear(d_model, width, bias=cfg.bias)
        self.out = nn.Linear(self.n_heads * self.head_dim, d_model, bias=cfg.bias)
        if cfg.qk_norm:
            self.q_norm = nn.Parameter(torch.ones(self.head_dim))
            self.k_norm = nn.Parameter(torch.ones(self.head_dim))
        if cfg.forget_gate:
            self.forget = nn.Linear(d_model, self.n_heads, bias=True)
            nn.init.constant_(self.forget.bias, 4.0)  # start close to "remember everything"

    @classmethod
    def check(cls, cfg: AttentionConfig, d_model: int) -> None:
        n_heads, n_kv, _ = resolve_heads(cfg, d_model)
        if cfg.head_dim is None:
            divides("n_heads", n_heads, d_model, "d_model")
        if n_heads % n_kv:
            raise ConfigError("n_kv_heads", f"n_kv_heads={n_kv} must divide n_heads={n_heads}")
        if cfg.rope and (cfg.head_dim or d_model // n_heads) < 2:
            raise ConfigError("rope", "RoPE needs a head dimension of at least 2")

    @classmethod
    def resolve(cls, cfg: AttentionConfig, d_model: int) -> AttentionConfig:
        n_heads, n_kv, head_dim = resolve_heads(cfg, d_model)
        return replace(cfg, n_heads=n_heads, n_kv_heads=n_kv, head_dim=head_dim)

    @classmethod
    def cost(cls, cfg: AttentionConfig, d_model: int, seq_len: int, dtype_bytes: int = 2) -> Cost:
        n_heads, n_kv, h = resolve_heads(cfg, d_model)
        width = (n_heads + 2 * n_kv) * h
        params = d_model * width + n_heads * h * d_model
        if cfg.bias:
            params += width + d_model
        if cfg.qk_norm:
            params += 2 * h
        if cfg.forget_gate:
            params += d_model * n_heads + n_heads
        # keys attended per query, averaged over a causal sequence of seq_len tokens
        span = min(cfg.window, seq_len) if cfg.window else seq_len
        mean_keys = (span * (span + 1) / 2 + (seq_len - span) * span) / seq_len
        flops = 2 * (params - (d_model * n_heads + n_heads if cfg.forget_gate else 0))
        flops += 2 * 2 * n_heads * h * mean_keys  # QK^T and AV
        cached = min(cfg.window, seq_len) if cfg.window else seq_len
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
        if state is not None:
            k = torch.cat([state["k"], k], dim=2)
            v = torch.cat([state["v"], v], dim=2)
            if logf is not None:
                logf = torch.cat([state["logf"], logf], dim=2)
        y = self._attend(q, k, v, logf, start)
        y = self.out(y.transpose(1, 2).reshape(B, T, H * h))
        new_state = None
        if state is not None:
            keep = self.cfg.window or k.shape[2]
            new_state = {"k": k[:, :, -keep:], "v": v[:, :, -keep:],
                         "pos": state["pos"] + T}
            if logf is not None:
                new_state["logf"] = logf[:, :, -keep:]
        return y, new_state

    def _angles(self, start: int, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE angles for positions start..start+length-1, cached for the last training length."""
        if torch.compiler.is_compiling():  # never keep traced tensors in the cache
            return rope_angles(torch.arange(start, start + length, device=device), self.head_dim,
                               self.cfg.rope_base)
        key = (start, length, device)
        if getattr(self, "_rope_key", None) != key:
            positions = torch.arange(start, start + length, device=device)
            self._rope_cache = rope_angles(positions, self.head_dim, self.cfg.rope_base)
            self._rope_key = key
        return self._rope_cache

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                logf: torch.Tensor | None, start: int) -> torch.Tensor:
        T, S = q.shape[2], k.shape[2]
        gqa = self.n_heads != self.n_kv_heads
        if S == T and self.cfg.window is None and logf is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        # Explicit mask: query i sits at absolute position start+i; key j at start+T-S+j.
        q_pos = torch.arange(T, device=q.device)[:, None] + (S - T)
        k_pos = torch.arange(S, device=q.device)[None, :]
        allowed = k_pos <= q_pos
        if self.cfg.window is not None:
            allowed = allowed & (k_pos > q_pos - self.cfg.window)
        mask = torch.zeros(T, S, device=q.device, dtype=q.dtype).masked_fill(~allowed, -math.inf)
        if logf is not None:
            # Forgetting Transformer: score bias sum_{l=j+1}^{i} log f_l = c_i - c_j with c the cumsum.
            cum = logf.cumsum(-1)
            bias = cum[:, :, -T:, None] - cum[:, :, None, :]
            mask = (mask + bias.masked_fill(~allowed, 0.0)).to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
