"""Dynamic causal short convolution (Jet-Nemotron's JetBlock, Gu et al. 2025): a depthwise causal convolution over
time whose kernel is a different one at every token, generated from the input by the caller.

    y_t[c] = sum_{j < k} w_t[c, j] * x_{t - k + 1 + j}[c]        (x before the sequence: the cache, else 0)

x `[B, T, C]`, kernels w `[B, T, C, k]` (tap k - 1 multiplies the current token), cache `[B, C, k - 1]` (the
inputs before x). Two forms: `naive_dynamic_conv` (one token at a time, the reference) and `dynamic_conv`
(the k taps as k fused multiply-adds over `[B, T, C]` slices, autograd through them).
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def _padded(x: Tensor, kernel_size: int, cache: Tensor | None) -> Tensor:
    """x `[B, T, C]` with the k - 1 inputs before it in front (the cache, else zeros): `[B, T + k - 1, C]`."""
    head = (x.new_zeros(x.shape[0], kernel_size - 1, x.shape[2]) if cache is None
            else cache.to(x.dtype).transpose(1, 2))
    return torch.cat([head, x], dim=1)


def _next_cache(padded: Tensor, kernel_size: int, cache: Tensor | None) -> Tensor | None:
    if cache is None:
        return None
    return padded[:, padded.shape[1] - (kernel_size - 1):].transpose(1, 2).to(cache.dtype)


def naive_dynamic_conv(x: Tensor, kernels: Tensor, cache: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """The convolution one token at a time; returns y `[B, T, C]` and, given a cache, the next one."""
    k = kernels.shape[-1]
    padded = _padded(x, k, cache)
    steps = [(padded[:, t:t + k].transpose(1, 2) * kernels[:, t]).sum(-1) for t in range(x.shape[1])]
    y = torch.stack(steps, dim=1) if steps else x.new_zeros(x.shape)
    return y, _next_cache(padded, k, cache)


def dynamic_conv(x: Tensor, kernels: Tensor, cache: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """The convolution as k shifted multiply-adds over the whole sequence (same result as the reference)."""
    T, k = x.shape[1], kernels.shape[-1]
    padded = _padded(x, k, cache)
    y = x * kernels[..., k - 1]
    for j in range(k - 1):
        y = y + padded[:, j:j + T] * kernels[..., j]
    return y, _next_cache(padded, k, cache)
