"""Lightning attention as MiniMax-Text-01 uses it (MiniMax 2025; Qin et al. 2024, "Lightning Attention-2").

Linear attention with a fixed decay per head, after transformers' `MiniMaxLightningAttention`
(`models/minimax/modular_minimax.py`). H heads of width h, P = H h (K = V = P, `primitives.common.HeadMixer`):

    q, k, v = silu(W_qkv x)                                   d 3P        (no bias, no short convolution)
    S_t = lambda_h S_{t-1} + k_t^T v_t,  o_t = q_t S_t         no query scaling (scale 1)
    lambda_h = exp(-s_h),  s_h = decay_scale * 2^(-8 (h + 1) / H)     h = 0 .. H - 1 (ALiBi's slopes)
    y = W_o (sigmoid(W_g x) * RMSNorm(o))                      RMSNorm over all P channels (one norm, eps 1e-6):
                                                               P; gate d P; out P d
    params = 3 d P + d P + P + P d = 5 d P + P              (5 d^2 + d at the default P = d)

MiniMax-Text-01 scales the slopes with depth: at layer l of L, decay_scale = 1 - l / (L - 1 + 1e-5) + 1e-5, so
the first layer forgets fastest and the last barely decays; a spec writes that value per layer (it changes no
parameter count). MiniMax-Text-01: d = 6144, 64 heads of 128 (expand_k = expand_v = 8192 / 6144).

Why not `retnet` or `linear_attention` with options: retnet's decay is 1 - 2^(-5-h), its queries are scaled by
dk^-0.5, its gate is swish and its norm per head; linear_attention has no decay. Lightning attention differs in
all four, so it is its own primitive on the same layout (the recurrence is `simple_gla` with g = -s_h, scale 1).

FLOPs per token: the projections (2 per multiply-add) and, per head, 2 (2 h h) for the state update and readout
plus 2 c (2 h) for the intra-chunk part (c = CHUNK_SIZE); the activation, gate and norm are not counted.
State: S [H, h, h].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from composer.fields import option
from primitives.base import State, register
from primitives.common import HeadMixer, HeadsConfig, rms_norm
from primitives.ops import simple_gla


@dataclass
class LightningConfig(HeadsConfig):
    expand_k: float = option(1.0, "query/key width as a multiple of d_model", gt=0)
    decay_scale: float = option(1.0, "multiplier of the per-head decay rates 2^(-8 (h+1) / H); MiniMax-Text-01: "
                                "1 - l / (L - 1 + 1e-5) + 1e-5 at layer l of L", gt=0)


def lightning_log_decay(n_heads: int, decay_scale: float, device=None) -> torch.Tensor:
    """-s_h for h = 0 .. H - 1: the log of each head's fixed decay (MiniMax's `get_slope_rate`)."""
    exponents = torch.arange(1, n_heads + 1, device=device, dtype=torch.float32)
    return -decay_scale * torch.exp2(-8.0 * exponents / n_heads)


@register("lightning_attention")
class LightningAttention(HeadMixer):
    """MiniMax lightning attention: silu q, k, v, fixed ALiBi-slope decays, sigmoid-gated RMSNorm output.

    Its HeadFeatures are the default ones (no short conv, an output gate, a norm): the gate is sigmoid here and the
    norm spans all heads, both applied in `forward`."""

    symbol = "LI"
    saved_values = 4
    Config = LightningConfig

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        q, k, v, _ = self.project(x, state)
        q, k, v = F.silu(q.float()), F.silu(k.float()), F.silu(v.float())
        B, T = x.shape[:2]
        g = lightning_log_decay(self.n_heads, self.cfg.decay_scale, x.device).expand(B, T, self.n_heads)
        initial, final = self.initial(state)
        o, ssm = simple_gla(q, k, v, g, scale=1.0, initial_state=initial, output_final_state=final)
        o = rms_norm(o.reshape(B, T, self.value_width), self.norm.float())
        y = self.o_proj((torch.sigmoid(self.g_proj(x).float()) * o).to(x.dtype))
        if state is None:
            return y, None
        return y, {"ssm": ssm.to(state["ssm"].dtype)}
