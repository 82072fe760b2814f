"""Long causal depthwise convolution (Hyena's implicit filters): y_t = sum_{s=0}^{min(t, L-1)} h_s u_{t-s}.

u `[B, D, T]`, h `[D, L]` (one filter of L taps per channel) -> y `[B, D, T]`. Two forms of the same sum:

* `direct_causal_conv`: the sum itself, as a depthwise `conv1d` over the zero-padded input (the reference, and
  the decoding form: a few new tokens against the cached inputs);
* `fft_causal_conv`: the training form, O(T log T): both signals zero-padded to n >= T + L' - 1 points
  (L' = min(L, T) taps can reach an output), multiplied in the frequency domain (as safari's `fftconv_ref`).

`long_conv(u, h, history)` continues a sequence: `history` `[B, D, L - 1]` holds the previous L - 1 inputs
(zeros at the start, which is what no history means; its length must be L - 1), and the call returns the
outputs for the new inputs and the history after them. Pieces of at most DECODE_MAX tokens run the direct sum
(over the L - 1 + T inputs the T outputs see: O(T L) per channel), longer ones the FFT.
Both compute in fp32 (fp64 stays fp64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from primitives.ops.chunking import compute_dtype
from primitives.ops.dispatch import DECODE_MAX

Tensor = torch.Tensor


def direct_causal_conv(u: Tensor, h: Tensor) -> Tensor:
    """y_t = sum_s h_s u_{t-s}, summed directly (depthwise conv1d with the filter reversed)."""
    T, dtype = u.shape[-1], compute_dtype(u)
    taps = h[:, :T].to(dtype)
    padded = F.pad(u.to(dtype), (taps.shape[-1] - 1, 0))
    return F.conv1d(padded, taps.flip(-1).unsqueeze(1), groups=u.shape[1])


def fft_causal_conv(u: Tensor, h: Tensor) -> Tensor:
    """The same sum through real FFTs of n = T + L' points (L' = min(L, T) taps)."""
    T, dtype = u.shape[-1], compute_dtype(u)
    taps = h[:, :T].to(dtype)
    n = T + taps.shape[-1]
    with torch.autocast(u.device.type, enabled=False):
        spectrum = torch.fft.rfft(u.to(dtype), n=n) * torch.fft.rfft(taps, n=n)
        return torch.fft.irfft(spectrum, n=n)[..., :T]


def long_conv(u: Tensor, h: Tensor, history: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Outputs for `u` `[B, D, T]` and, given a history `[B, D, L - 1]`, the history after `u`."""
    if history is None:
        return (direct_causal_conv if u.shape[-1] <= DECODE_MAX else fft_causal_conv)(u, h), None
    T = u.shape[-1]
    full = torch.cat([history.to(u.dtype), u], dim=-1)           # L - 1 + T inputs: exactly what T outputs see
    if T <= DECODE_MAX:  # only the T new outputs, each a dot product of its L inputs with the reversed filter
        dtype = compute_dtype(u)
        windows = full.to(dtype).unfold(-1, h.shape[-1], 1)                # [B, D, T, L] (a view)
        y = (windows * h.to(dtype).flip(-1).unsqueeze(1)).sum(-1)          # 5x an einsum's bmm on CPU
    else:
        y = fft_causal_conv(full, h)[..., -T:]
    return y, full[..., full.shape[-1] - history.shape[-1]:]
