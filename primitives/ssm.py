"""Selective state-space layers: Mamba (S6) and Mamba-2 (SSD).

Mamba (Gu & Dao, 2023); d = d_model, E = round(expand * d), N = d_state, R = dt_rank, k = kernel_size:
    in_proj   d * 2E              x, z
    conv      E k + E             depthwise causal conv with bias, then SiLU
    x_proj    E (R + 2N)          dt (low rank), B, C
    dt_proj   R E + E             dt = softplus(dt_proj(dt_low))
    A_log     E N                 A = -exp(A_log)
    D         E                   skip
    out_proj  E d
    inner_norms  R + 2N           (Jamba, optional) RMSNorms on dt_low, B and C after x_proj
    h_t = exp(dt A) h_{t-1} + dt B_t x_t  (per channel, N states);  y = (C_t h_t + D x_t) * silu(z)
With expand 1.5, N = 16, R = ceil(d / 16): 4.5 d^2 + E (2R + 3N + k + 3), ~1.25x attention at d = 256.

Mamba-2 (Dao & Gu, 2024); H heads of P = E / H channels, G groups of B/C, N = d_state:
    in_proj   d (2E + 2GN + H)    z, x, B, C, dt
    conv      (E + 2GN)(k + 1)    over x, B, C, with bias, then SiLU
    dt_bias, A_log, D   3H        A = -exp(A_log) one scalar decay per head
    norm      E                   gated RMSNorm: norm(y * silu(z)) per group (`gated_norm: false`: none)
    out_proj  E d
    S_t = exp(dt A) S_{t-1} + B_t^T (dt x_t);  y_t = C_t S_t + D x_t  (chunk_simple_gla, scale 1)
With expand 1.5, N = 64, G = 1: 4.5 d^2 + d (2N + H) + ..., ~1.27x attention at d = 256.

FLOPs per token count projections and convolutions (2 per multiply-add) and the recurrence: Mamba's scan
4 E N (update and readout, one multiply-add each per state element); Mamba-2's chunked SSD per head
2 (2 N P) for the state update and readout plus 2 c (N + P) for the intra-chunk part (c = CHUNK_SIZE, 64).
Elementwise gates, the discretisation and norms are not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from composer.fields import option
from primitives.base import ConfigError, Cost, Primitive, State, divides, register
from primitives.common import ShortConv, add_selective_ssm, default_heads, head_rms_norm, inverse_softplus_dt, rms_norm
from primitives.ops import CHUNK_SIZE, selective_scan, simple_gla

# ----------------------------------------------------------------------------------------------
# Mamba-1


@dataclass
class MambaConfig:
    expand: float = option(1.5, "inner width as a multiple of d_model", gt=0)
    d_state: int = option(16, "state size N per channel", ge=1)
    dt_rank: int | None = option(None, "rank of the dt projection (null: ceil(d_model / 16))", ge=1)
    kernel_size: int = option(4, "width of the short causal convolution", ge=1)
    inner_norms: bool = option(False, "RMSNorms on dt (before dt_proj), B and C: Jamba's Mamba (R + 2N weights)")


def mamba_sizes(cfg: MambaConfig, d_model: int) -> tuple[int, int]:
    """(d_inner E, dt_rank R)."""
    return int(round(cfg.expand * d_model)), cfg.dt_rank or math.ceil(d_model / 16)


@register("mamba")
class Mamba(Primitive):
    """Mamba-1 block: selective scan over [B, T, E, N] with `selective_scan`."""

    symbol = "S"
    saved_values = 32  # CPU scan: dt, x, B, C and a state per block; CUDA keeps [B, T, E, N] (< WORKSPACE x this)
    kind = "token_mixer"
    Config = MambaConfig
    width_scaled = ("dt_rank",)  # expand and d_state kept

    def __init__(self, d_model: int, cfg: MambaConfig):
        super().__init__(d_model, cfg)
        E, R = mamba_sizes(cfg, d_model)
        N = cfg.d_state
        self.d_inner, self.dt_rank = E, R
        self.in_proj = nn.Linear(d_model, 2 * E, bias=False)
        add_selective_ssm(self, E, R, N, cfg.kernel_size, cfg.inner_norms)
        self.out_proj = nn.Linear(E, d_model, bias=False)

    @classmethod
    def check(cls, cfg: MambaConfig, d_model: int) -> None:
        if mamba_sizes(cfg, d_model)[0] < 1:
            raise ConfigError("expand", f"expand={cfg.expand} leaves no channels at d_model={d_model}")

    @classmethod
    def resolve(cls, cfg: MambaConfig, d_model: int) -> MambaConfig:
        return replace(cfg, dt_rank=mamba_sizes(cfg, d_model)[1])

    @classmethod
    def cost(cls, cfg: MambaConfig, d_model: int, seq_len: int, dtype_bytes: int = 2) -> Cost:
        (E, R), N, k = mamba_sizes(cfg, d_model), cfg.d_state, cfg.kernel_size
        matmul = 3 * E * d_model + E * (R + 2 * N) + R * E
        params = matmul + (E * k + E) + E + E * N + E + ((R + 2 * N) if cfg.inner_norms else 0)
        flops = 2 * matmul + 2 * E * k + 4 * E * N
        state = (E * (k - 1) + E * N) * dtype_bytes
        return Cost(params, float(flops), state)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> State:
        return {"conv": self.conv.empty_cache(batch_size, device, dtype),
                "ssm": torch.zeros(batch_size, self.d_inner, self.cfg.d_state, device=device, dtype=dtype)}

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        N, R = self.cfg.d_state, self.dt_rank
        u, z = self.in_proj(x).chunk(2, dim=-1)
        u, conv_cache = self.conv(u, None if state is None else state["conv"])
        dt_low, B, C = self.x_proj(u).split([R, N, N], dim=-1)
        if self.cfg.inner_norms:
            dt_low, B, C = rms_norm(dt_low, self.dt_norm), rms_norm(B, self.b_norm), rms_norm(C, self.c_norm)
        dt = F.softplus(self.dt_proj(dt_low)).float()                       # [B, T, E]
        A = -torch.exp(self.A_log.float())                                  # [E, N]
        y, h_last = selective_scan(dt, A, dt * u.float(), B.float(), C.float(),
                                   None if state is None else state["ssm"])
        y = y + self.D * u.float()
        y = self.out_proj((y * F.silu(z.float())).to(x.dtype))
        if state is None:
            return y, None
        return y, {"conv": conv_cache, "ssm": h_last.to(state["ssm"].dtype)}


# ----------------------------------------------------------------------------------------------
# Mamba-2


@dataclass
class Mamba2Config:
    expand: float = option(1.5, "inner width as a multiple of d_model", gt=0)
    n_heads: int | None = option(None, "number of heads (null: derived from d_model, about one per 64 channels)", ge=1)
    d_state: int = option(64, "state size N per head", ge=1)
    n_groups: int = option(1, "groups of heads sharing B and C", ge=1)
    kernel_size: int = option(4, "width of the short causal convolution", ge=1)
    gated_norm: bool = option(True, "the gated RMSNorm before out_proj (false: y * silu(z) goes straight to out_proj, "
                              "as Falcon-H1's mamba_rms_norm false)")


def mamba2_sizes(cfg: Mamba2Config, d_model: int) -> tuple[int, int, int]:
    """(d_inner E, n_heads H, head_dim P); H defaults to the head count giving P near 64."""
    E = int(round(cfg.expand * d_model))
    H = cfg.n_heads or default_heads(max(E, 1))
    return E, H, E // H


@register("mamba2")
class Mamba2(Primitive):
    """Mamba-2 block: SSD with one scalar decay per head, computed by `chunk_simple_gla`."""

    symbol = "S2"
    saved_values = 24
    kind = "token_mixer"
    Config = Mamba2Config
    width_scaled = ("n_heads", "n_groups")  # head dim (expand * d / n_heads) and d_state kept; heads per group kept

    def __init__(self, d_model: int, cfg: Mamba2Config):
        super().__init__(d_model, cfg)
        E, H, P = mamba2_sizes(cfg, d_model)
        GN = cfg.n_groups * cfg.d_state
        self.d_inner, self.n_heads, self.head_dim = E, H, P
        self.in_proj = nn.Linear(d_model, 2 * E + 2 * GN + H, bias=False)
        self.conv = ShortConv(E + 2 * GN, cfg.kernel_size, bias=True, activation=True)
        self.dt_bias = nn.Parameter(inverse_softplus_dt(H))
        self.A_log = nn.Parameter(torch.log(torch.empty(H).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(H))
        if cfg.gated_norm:
            self.norm = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, d_model, bias=False)

    @classmethod
    def check(cls, cfg: Mamba2Config, d_model: int) -> None:
        E, H, _ = mamba2_sizes(cfg, d_model)
        if E < 1:
            raise ConfigError("expand", f"expand={cfg.expand} leaves no channels at d_model={d_model}")
        divides("n_heads", H, E, "d_inner")
        if H % cfg.n_groups:
            raise ConfigError("n_groups", f"n_groups={cfg.n_groups} must divide n_heads={H}")

    @classmethod
    def resolve(cls, cfg: Mamba2Config, d_model: int) -> Mamba2Config:
        return replace(cfg, n_heads=mamba2_sizes(cfg, d_model)[1])

    @classmethod
    def cost(cls, cfg: Mamba2Config, d_model: int, seq_len: int, dtype_bytes: int = 2) -> Cost:
        (E, H, P), N, k = mamba2_sizes(cfg, d_model), cfg.d_state, cfg.kernel_size
        GN = cfg.n_groups * N
        matmul = d_model * (2 * E + 2 * GN + H) + E * d_model
        params = matmul + (E + 2 * GN) * (k + 1) + 3 * H + (E if cfg.gated_norm else 0)
        flops = 2 * matmul + 2 * (E + 2 * GN) * k + H * (4 * N * P + 2 * CHUNK_SIZE * (N + P))
        state = ((E + 2 * GN) * (k - 1) + H * N * P) * dtype_bytes
        return Cost(params, float(flops), state)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> State:
        return {"conv": self.conv.empty_cache(batch_size, device, dtype),
                "ssm": torch.zeros(batch_size, self.n_heads, self.cfg.d_state, self.head_dim,
                                   device=device, dtype=dtype)}

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        Bsz, T, _ = x.shape
        E, H, P, G, N = self.d_inner, self.n_heads, self.head_dim, self.cfg.n_groups, self.cfg.d_state
        z, xbc, dt = self.in_proj(x).split([E, E + 2 * G * N, H], dim=-1)
        xbc, conv_cache = self.conv(xbc, None if state is None else state["conv"])
        u, B, C = xbc.split([E, G * N, G * N], dim=-1)
        u = u.reshape(Bsz, T, H, P).float()
        B = B.reshape(Bsz, T, G, N).float()  # shared by the H // G heads of a group
        C = C.reshape(Bsz, T, G, N).float()
        dt = F.softplus(dt.float() + self.dt_bias)                          # [B, T, H]
        g = dt * -torch.exp(self.A_log.float())
        o, ssm = simple_gla(C, B, u * dt[..., None], g, scale=1.0,
                            initial_state=None if state is None else state["ssm"],
                            output_final_state=state is not None)
        y = o.float() + self.D[:, None] * u
        gated = y.reshape(Bsz, T, E) * F.silu(z.float())
        if self.cfg.gated_norm:
            gated = head_rms_norm(gated.reshape(Bsz, T, G, E // G), self.norm).reshape(Bsz, T, E)
        y = self.out_proj(gated.to(x.dtype))
        if state is None:
            return y, None
        return y, {"conv": conv_cache, "ssm": ssm.to(state["ssm"].dtype)}
