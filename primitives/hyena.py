"""Hyena (Poli et al. 2023): long implicit convolutions interleaved with data-controlled gating.

Operator of order N, after safari's `HyenaOperator` and `HyenaFilter` (`src/models/sequence/hyena.py`; one head,
inner factor 1; d = d_model, k = short_kernel, L = max_len, F = filter_order, e = emb_dim, D = (N - 1) d):

    x_0 .. x_{N-1}, v = split(short_conv(W_in x + b_in))     in_proj d (N + 1) d + (N + 1) d; depthwise causal
                                                              conv (N + 1) d k + (N + 1) d (bias, no activation)
    for n = 1 .. N - 1 (x_{N-1} first):  v <- h_n * (v x_n) + D_n (v x_n)   long causal convolution (ops.long_conv)
    y = W_out (v x_0) + b_out                                 d d + d

The filters h_n (L taps per channel) are implicit: h = MLP(z_t) * exp(-t |delta_c|) over the positions of the
filter, with the positional embedding z_t = [t, cos(2 pi f_b s / L), -sin(2 pi f_b s / L)] (t = s / (L - 1),
(e - 1) / 2 bands f_b = linspace(1e-4, bands - 1)), the MLP e -> F -> F -> F -> D with sin(w x) activations
(one trainable frequency vector, shared), and the exponential modulation delta_c = linspace(ln(1e-2) / 1.5,
ln(1e-2) / 0.3, D) (fixed, safari's modulation_lr = 0). Parameters:

    MLP        e F + F + 2 (F F + F) + F D    (last layer without bias),  frequencies F
    z          L e   when train_pos_emb (safari's Pile config trains it: lr_pos_emb = lr), else fixed
    D skip     D     (the filter's `bias`)
    params = (N + 1) d^2 + d^2 + (N + 1) d (k + 2) + d + e F + 4 F + 2 F^2 + F D + D (+ L e)

Defaults: safari's Pile Hyena (order 2, filter_order 64, emb_dim 33, w = 14, short filter 3); at d = 256 and
L = 1024: 4 d^2 + ~0.2 d^2. Sequences longer than max_len still work: the filter has L taps, so y_t sees the
last L inputs (safari only takes sequences up to l_max).

Training runs the convolution through the FFT; decoding sums it directly over the cached inputs. The state is
the input history of each long convolution, the last L - 1 inputs per channel (fixed size, zeros at the start:
(N - 1) d (L - 1) values), plus the short convolution's last k - 1 inputs ((N + 1) d (k - 1)).

FLOPs per token at context T: the projections and short convolution (2 per multiply-add); per long convolution
and channel (7.5 n log2 n + 3 n) / T for three real FFTs of n = T + min(T, L) points and the product of their
spectra; and the filter MLP over min(T, L) positions once per sequence, 2 (e F + 2 F^2 + F D) min(T, L) / T.
The gates, the activations and the modulation are not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from composer.fields import option
from primitives.base import ConfigError, Cost, Primitive, State, register
from primitives.common import ShortConv
from primitives.ops import long_conv

MODULATION_TARGET, FAST_DECAY_PCT, SLOW_DECAY_PCT = 1e-2, 0.3, 1.5  # safari's ExponentialModulation defaults
FILTER_INNER_LAYERS = 2  # safari's num_inner_mlps


@dataclass
class HyenaConfig:
    order: int = option(2, "depth of the recurrence: order - 1 long convolutions, order + 1 projections", ge=2)
    max_len: int = option(1024, "length L of the implicit filters (safari's l_max): taps per channel, and the "
                          "decoding history", ge=1)
    filter_order: int = option(64, "width of the implicit filter's MLP", ge=1)
    emb_dim: int = option(33, "width of the filter's positional embedding (odd: time, then cosine and sine bands)",
                          ge=3)
    sin_freq: float = option(14.0, "initial frequency w of the filter MLP's sin(w x) activations", gt=0)
    short_kernel: int = option(3, "width of the short causal convolution on the projections", ge=1)
    modulate: bool = option(True, "exponential decay modulation of the filters")
    train_pos_emb: bool = option(True, "train the positional embedding z (a parameter of max_len x emb_dim)")


class Sine(nn.Module):
    """sin(freq * x) with one trainable frequency per feature."""

    def __init__(self, width: int, freq: float):
        super().__init__()
        self.freq = nn.Parameter(torch.full((width,), freq))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.freq * x)


def hyena_positions(length: int, emb_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(z [L, emb_dim], t [L, 1]): safari's complex-exponential positional embedding of the filter taps."""
    t = torch.linspace(0, 1, length)[:, None]
    bands = (emb_dim - 1) // 2
    angle = 2 * math.pi * torch.linspace(0, length - 1, length)[:, None] / length
    f = torch.linspace(1e-4, bands - 1, bands)[None, :]
    return torch.cat([t, torch.cos(f * angle), -torch.sin(f * angle)], dim=-1), t


@register("hyena")
class Hyena(Primitive):
    """Hyena operator: gated long implicit convolutions (FFT in training, direct over the history in decoding)."""

    symbol = "HY"
    saved_values = 2
    kind = "token_mixer"
    Config = HyenaConfig
    width_scaled = ()  # order, filter width, embedding and lengths kept

    def __init__(self, d_model: int, cfg: HyenaConfig):
        super().__init__(d_model, cfg)
        d, N, F_, L = d_model, cfg.order, cfg.filter_order, cfg.max_len
        width = (N + 1) * d
        self.in_proj = nn.Linear(d, width)
        self.short_conv = ShortConv(width, cfg.short_kernel, bias=True)
        self.out_proj = nn.Linear(d, d)
        filters = (N - 1) * d
        sine = Sine(F_, cfg.sin_freq)
        layers: list[nn.Module] = [nn.Linear(cfg.emb_dim, F_), sine]
        for _ in range(FILTER_INNER_LAYERS):
            layers += [nn.Linear(F_, F_), sine]
        self.implicit_filter = nn.Sequential(*layers, nn.Linear(F_, filters, bias=False))
        self.skip = nn.Parameter(torch.randn(filters))
        z, t = hyena_positions(L, cfg.emb_dim)
        if cfg.train_pos_emb:
            self.z = nn.Parameter(z)
        else:
            self.register_buffer("z", z, persistent=False)
        self.register_buffer("t", t, persistent=False)
        log_target = math.log(MODULATION_TARGET)
        decay = torch.linspace(log_target / SLOW_DECAY_PCT, log_target / FAST_DECAY_PCT, filters)
        self.register_buffer("deltas", decay.abs(), persistent=False)
        self.filter_cache: tuple[int, list[torch.Tensor], torch.Tensor] | None = None

    @classmethod
    def check(cls, cfg: HyenaConfig, d_model: int) -> None:
        if cfg.emb_dim % 2 == 0:
            raise ConfigError("emb_dim", f"emb_dim={cfg.emb_dim} must be odd (time, then pairs of cosine and sine)")

    @classmethod
    def cost(cls, cfg: HyenaConfig, d_model: int, seq_len: int, dtype_bytes: int = 2) -> Cost:
        d, N, F_, e, L, k = d_model, cfg.order, cfg.filter_order, cfg.emb_dim, cfg.max_len, cfg.short_kernel
        filters = (N - 1) * d
        matmul = (N + 1) * d * d + d * d
        mlp = e * F_ + FILTER_INNER_LAYERS * F_ * F_ + F_ * filters
        params = (matmul + (N + 1) * d + d + ShortConv.param_count((N + 1) * d, k, bias=True)
                  + mlp + (1 + FILTER_INNER_LAYERS) * F_ + F_ + filters + (L * e if cfg.train_pos_emb else 0))
        T = max(seq_len, 1)
        taps = min(T, L)
        n = T + taps
        fft = (7.5 * n * math.log2(n) + 3 * n) / T
        flops = 2 * matmul + 2 * (N + 1) * d * k + filters * fft + 2 * mlp * taps / T
        state = ((N + 1) * d * (k - 1) + filters * (L - 1)) * dtype_bytes
        return Cost(params, float(flops), state)

    def init_state(self, batch_size: int, device=None, dtype=torch.float32) -> State:
        return {"conv": self.short_conv.empty_cache(batch_size, device, dtype),
                "history": torch.zeros(batch_size, self.cfg.order - 1, self.d_model, self.cfg.max_len - 1,
                                       device=device, dtype=dtype)}

    def filters(self, taps: int) -> torch.Tensor:
        """The implicit filters' first `taps` taps, `[order - 1, d, taps]`. Without gradients (decoding) the last
        result is reused while the tensors it was computed from are unchanged (compared exactly, which costs far
        less than the filter MLP over max_len positions, once per decoded token otherwise)."""
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return self.compute_filters(taps)
        inputs = [*self.implicit_filter.parameters(), self.z, self.t, self.deltas]
        cached = self.filter_cache
        if cached is not None and cached[0] == taps and all(
                a.device == b.device and a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(cached[1], inputs)):
            return cached[2]
        h = self.compute_filters(taps)
        self.filter_cache = (taps, [t.detach().clone() for t in inputs], h)
        return h

    def compute_filters(self, taps: int) -> torch.Tensor:
        """The filters, in fp32 (under autocast too: sin(w x) with w = 14 loses the filter's shape at bf16
        precision; the filters do not depend on the batch)."""
        with torch.autocast(self.z.device.type, enabled=False):
            h = self.implicit_filter(self.z[:taps].float())
            if self.cfg.modulate:
                h = h * torch.exp(-self.t[:taps] * self.deltas)
        return h.view(taps, self.d_model, self.cfg.order - 1).permute(2, 1, 0).contiguous()

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        d, N = self.d_model, self.cfg.order
        u, conv_cache = self.short_conv(self.in_proj(x), None if state is None else state["conv"])
        *gates, v = u.float().transpose(1, 2).split(d, dim=1)             # each [B, d, T]
        h = self.filters(self.cfg.max_len if state is not None else min(x.shape[1], self.cfg.max_len))
        skip = self.skip.float().view(d, N - 1).t().unsqueeze(-1)          # [N - 1, d, 1]
        histories = []
        for n, gate in enumerate(reversed(gates[1:])):
            v = v * gate
            conv, history = long_conv(v, h[n], None if state is None else state["history"][:, n])
            v = conv + v * skip[n]
            histories.append(history)
        y = self.out_proj((v * gates[0]).transpose(1, 2).to(x.dtype))
        if state is None:
            return y, None
        return y, {"conv": conv_cache, "history": torch.stack(histories, dim=1).to(state["history"].dtype)}
