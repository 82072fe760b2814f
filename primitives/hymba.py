"""Hymba's hybrid-head layer: attention heads and Mamba (SSM) heads fed in parallel by one input projection, each
branch's output RMS-normalised with its own learned per-channel scale, the two averaged, then one output projection
(Dong et al. 2024, "Hymba: A Hybrid-head Architecture for Small Language Models", arXiv:2411.13676; the released
nvidia/Hymba-1.5B-Base's HymbaBlock).

    [q, k, v, u, z] = in_proj(x)
    a = attention(q, k, v)                 H heads (G key/value heads), queries and keys of width h, values of E / H
    s = (scan(conv(u)) + D u) * silu(z)    Mamba-1 on E channels (x_proj -> dt, B, C; optional RMSNorms on them)
    y = out_proj((norm_a(a) + norm_s(s)) / 2)

Parameters (d = d_model, E = round(expand * d), R = dt_rank, N = d_state, k = kernel_size):
    in_proj     d (H h + G h + G E / H + 2 E)     (reuse_kv: d (H h + 2 E), no key/value columns)
    conv        E k + E
    x_proj      E (R + 2N);  dt_proj R E + E;  A_log E N;  D E
    inner_norms R + 2N (optional);  branch norms 2 E
    out_proj    E d

Cross-layer KV sharing (`reuse_kv`): the layer has no key/value projections and attends, with its own queries,
over the keys and values (RoPE applied, cache included) of the nearest earlier `hymba` layer that computes its own;
the model links them when it is built (`Primitive.follow`). Its decoding state holds no KV cache.

With a sliding window, `keep_prefix` (the model's `meta_tokens`) keeps the meta tokens visible, as Hymba does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from composer.fields import option
from primitives.base import ConfigError, Cost, Primitive, State, divides, register
from primitives.common import add_selective_ssm, rms_norm
from primitives.ops import selective_scan
from primitives.ops.softmax_attention import (
    cached_positions,
    kept_indices,
    mean_keys,
    rope_angles,
    rotary,
    softmax_attention,
)


@dataclass
class HymbaConfig:
    n_heads: int | None = option(None, "attention heads (null: about one per 64 channels)", ge=1)
    n_kv_heads: int | None = option(None, "key/value heads, fewer than n_heads for GQA (null: n_heads)", ge=1)
    head_dim: int | None = option(None, "query/key width of one head (null: d_model / n_heads); each head's "
                                  "values are inner width / n_heads wide", ge=1)
    expand: float = option(2.0, "inner width E of the SSM heads, and of the attention values, as a multiple of "
                           "d_model", gt=0)
    d_state: int = option(16, "SSM state size N per channel", ge=1)
    dt_rank: int | None = option(None, "rank of the dt projection (null: ceil(d_model / 16))", ge=1)
    kernel_size: int = option(4, "width of the SSM heads' short causal convolution", ge=1)
    inner_norms: bool = option(True, "RMSNorms on dt (before dt_proj), B and C (Hymba's mamba_inner_layernorms)")
    window: int | None = option(None, "sliding window of the attention heads (null: the whole context)", ge=1)
    keep_prefix: int = option(0, "with a window: the first N positions stay visible (Hymba's meta tokens)", ge=0)
    rope: bool = option(True, "rotary position embeddings on queries and keys")
    rope_base: float = option(10000.0, "RoPE frequency base", gt=1)
    reuse_kv: bool = option(False, "no key/value projections: attend over the keys and values of the nearest "
                            "earlier hymba layer (cross-layer KV sharing)")


@dataclass(frozen=True)
class HymbaSizes:
    heads: int       # H
    kv_heads: int    # G
    head_dim: int    # h, queries and keys
    value_dim: int   # E / H
    inner: int       # E
    dt_rank: int     # R


def hymba_sizes(cfg: HymbaConfig, d_model: int) -> HymbaSizes:
    heads = cfg.n_heads or max(1, d_model // 64)
    inner = int(round(cfg.expand * d_model))
    return HymbaSizes(heads, cfg.n_kv_heads or heads, cfg.head_dim or d_model // heads, inner // heads, inner,
                      cfg.dt_rank or math.ceil(d_model / 16))


@register("hymba")
class Hymba(Primitive):
    """The hybrid-head layer (see the module docstring)."""

    symbol = "HY"
    saved_values = 32  # the selective scan's, as Mamba's
    kind = "token_mixer"
    Config = HymbaConfig
    width_scaled = ("n_heads", "n_kv_heads", "dt_rank")  # head_dim, expand and d_state kept

    def __init__(self, d_model: int, cfg: HymbaConfig):
        super().__init__(d_model, cfg)
        s = self.sizes = hymba_sizes(cfg, d_model)
        E, R, N = s.inner, s.dt_rank, cfg.d_state
        kv = 0 if cfg.reuse_kv else s.kv_heads * (s.head_dim + s.value_dim)
        self.split_sizes = [s.heads * s.head_dim] + ([] if cfg.reuse_kv else [s.kv_heads * s.head_dim,
                                                                               s.kv_heads * s.value_dim]) + [E, E]
        self.in_proj = nn.Linear(d_model, s.heads * s.head_dim + kv + 2 * E, bias=False)
        add_selective_ssm(self, E, R, N, cfg.kernel_size, cfg.inner_norms)
        self.attn_norm = nn.Parameter(torch.ones(E))
        self.ssm_norm = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, d_model, bias=False)
        self._kv_source: list[Hymba] = []  # reuse_kv: the layer whose keys and values this one reads
        self.shared_kv: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # its last call's k, v, k_pos

    @classmethod
    def check(cls, cfg: HymbaConfig, d_model: int) -> None:
        s = hymba_sizes(cfg, d_model)
        if cfg.head_dim is None:
            divides("n_heads", s.heads, d_model, "d_model")
        if s.inner < 1:
            raise ConfigError("expand", f"expand={cfg.expand} leaves no channels at d_model={d_model}")
        divides("n_heads", s.heads, s.inner, "the inner width (expand x d_model)")
        if s.heads % s.kv_heads:
            raise ConfigError("n_kv_heads", f"n_kv_heads={s.kv_heads} must divide n_heads={s.heads}")
        if cfg.rope and s.head_dim < 2:
            raise ConfigError("rope", "RoPE needs a head dimension of at least 2")

    @classmethod
    def resolve(cls, cfg: HymbaConfig, d_model: int) -> HymbaConfig:
        s = hymba_sizes(cfg, d_model)
        return replace(cfg, n_heads=s.heads, n_kv_heads=s.kv_heads, head_dim=s.head_dim, dt_rank=s.dt_rank,
                       keep_prefix=cfg.keep_prefix if cfg.window is not None else 0)

    @classmethod
    def cost(cls, cfg: HymbaConfig, d_model: int, seq_len: int, dtype_bytes: int = 2) -> Cost:
        s = hymba_sizes(cfg, d_model)
        E, R, N, k = s.inner, s.dt_rank, cfg.d_state, cfg.kernel_size
        kv = 0 if cfg.reuse_kv else s.kv_heads * (s.head_dim + s.value_dim)
        matmul = d_model * (s.heads * s.head_dim + kv + 2 * E) + E * (R + 2 * N) + R * E + E * d_model
        params = matmul + (E * k + E) + E + E * N + E + 2 * E + ((R + 2 * N) if cfg.inner_norms else 0)
        keep_prefix = cfg.keep_prefix if cfg.window is not None else 0
        flops = 2 * matmul + 2 * E * k + 4 * E * N
        flops += 2 * s.heads * (s.head_dim + s.value_dim) * mean_keys(seq_len, cfg.window, keep_prefix)
        cached = min(cfg.window + keep_prefix, seq_len) if cfg.window else seq_len
        state = E * (k - 1) + E * N + (0 if cfg.reuse_kv else kv * cached)
        return Cost(params, float(flops), state * dtype_bytes)

    def follow(self, earlier: Primitive | None) -> None:
        if not self.cfg.reuse_kv:
            return
        if earlier is None:
            raise ConfigError("reuse_kv", "the first hymba layer has no earlier layer's keys and values to reuse")
        source = earlier._kv_source[0] if earlier._kv_source else earlier
        mine, theirs = self.sizes, source.sizes
        same = (mine.kv_heads, mine.head_dim, mine.value_dim, self.cfg.window, self.cfg.keep_prefix,
                self.cfg.rope, self.cfg.rope_base) == (theirs.kv_heads, theirs.head_dim, theirs.value_dim,
                                                       source.cfg.window, source.cfg.keep_prefix, source.cfg.rope,
                                                       source.cfg.rope_base)
        if not same:
            raise ConfigError("reuse_kv", "a layer reusing keys and values needs the key/value heads, head sizes, "
                                          "window, keep_prefix and RoPE of the layer it reads")
        self._kv_source = [source]

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> State:
        s = self.sizes
        state = {"conv": self.conv.empty_cache(batch_size, device, dtype),
                 "ssm": torch.zeros(batch_size, s.inner, self.cfg.d_state, device=device, dtype=dtype),
                 "pos": torch.zeros((), dtype=torch.long, device=device)}
        if not self.cfg.reuse_kv:
            state["k"] = torch.zeros(batch_size, s.kv_heads, 0, s.head_dim, device=device, dtype=dtype)
            state["v"] = torch.zeros(batch_size, s.kv_heads, 0, s.value_dim, device=device, dtype=dtype)
        return state

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        B, T, _ = x.shape
        s, cfg = self.sizes, self.cfg
        keep_prefix = cfg.keep_prefix if cfg.window is not None else 0
        parts = self.in_proj(x).split(self.split_sizes, dim=-1)
        q, (u, z) = parts[0], parts[-2:]
        start = int(state["pos"]) if state is not None else 0
        q_pos = torch.arange(start, start + T, device=x.device)
        q = q.view(B, T, s.heads, s.head_dim).transpose(1, 2)
        if cfg.rope:
            cos, sin = rope_angles(q_pos, 2 * (s.head_dim // 2), cfg.rope_base)
            q = rotary(q, cos, sin)
        new_state = None if state is None else {"pos": state["pos"] + T}
        if cfg.reuse_kv:
            k, v, k_pos = self._kv_source[0].shared_kv
        else:
            k = parts[1].view(B, T, s.kv_heads, s.head_dim).transpose(1, 2)
            v = parts[2].view(B, T, s.kv_heads, s.value_dim).transpose(1, 2)
            if cfg.rope:
                k = rotary(k, cos, sin)
            k_pos = q_pos
            if state is not None:
                k_pos = torch.cat([cached_positions(start, state["k"].shape[2], keep_prefix, x.device), q_pos])
                k, v = torch.cat([state["k"], k], dim=2), torch.cat([state["v"], v], dim=2)
                keep = kept_indices(k_pos, start + T, cfg.window, keep_prefix)
                new_state["k"] = k if keep is None else k.index_select(2, keep)
                new_state["v"] = v if keep is None else v.index_select(2, keep)
            self.shared_kv = (k, v, k_pos)
        attn = softmax_attention(q, k, v, q_pos, k_pos, cfg.window, keep_prefix)  # [B, H, T, E / H]
        attn = attn.transpose(1, 2).reshape(B, T, s.inner)
        ssm, conv_cache, h_last = self._ssm(u, z, state)
        y = self.out_proj((rms_norm(attn, self.attn_norm) + rms_norm(ssm.to(x.dtype), self.ssm_norm)) / 2)
        if state is None:
            return y, None
        new_state.update(conv=conv_cache, ssm=h_last.to(state["ssm"].dtype))
        return y, new_state

    def _ssm(self, u: torch.Tensor, z: torch.Tensor, state: State
             ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The Mamba heads: (gated output [B, T, E], conv cache, last SSM state)."""
        N, R = self.cfg.d_state, self.sizes.dt_rank
        u, conv_cache = self.conv(u, None if state is None else state["conv"])
        dt_low, b, c = self.x_proj(u).split([R, N, N], dim=-1)
        if self.cfg.inner_norms:
            dt_low, b, c = rms_norm(dt_low, self.dt_norm), rms_norm(b, self.b_norm), rms_norm(c, self.c_norm)
        dt = F.softplus(self.dt_proj(dt_low)).float()
        A = -torch.exp(self.A_log.float())
        y, h_last = selective_scan(dt, A, dt * u.float(), b.float(), c.float(),
                                   None if state is None else state["ssm"])
        return (y + self.D * u.float()) * F.silu(z.float()), conv_cache, h_last
