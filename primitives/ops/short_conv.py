"""Depthwise causal convolution over time in the channels-last layout `[B, T, C]` (a short conv):

    y_t = bias + sum_{j < k} w_j * x_{t - k + 1 + j}        (x before the sequence: the cache, else 0)

`nn.Conv1d` wants `[B, C, T]`, so a layer working in `[B, T, C]` pays two transposes per call, and on CPU its
depthwise backward is slow; worse, its output keeps the `[B, C, T]` strides, which slows every elementwise
op after it. Here the k taps are k fused multiply-adds over `[B, T, C]` slices, and the backward (a custom
autograd Function) is the same taps run against the gradient plus one reduction per tap for the weights:

    dx_t = sum_j w_j dy_{t + k - 1 - j};   dw_j = sum_{b, t} dy_t x_{t - k + 1 + j};   dbias = sum_{b, t} dy_t

The reference is `naive_causal_conv1d` (through `F.conv1d`); `causal_conv1d` picks this form on CPU and the
reference (cuDNN) on CUDA.
"""

from __future__ import annotations

import torch

from primitives.ops.naive import naive_causal_conv1d

Tensor = torch.Tensor

TILE_ELEMENTS = 1 << 19  # elements of one backward tile (2 MiB in fp32)


class _CausalConv1d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, head: Tensor) -> Tensor:
        """x `[B, T, C]`, weight `[C, k]`, bias `[C]` or None, head `[B, k - 1, C]` (the steps before x)."""
        T, k = x.shape[1], weight.shape[-1]
        padded = torch.cat([head, x], dim=1)
        w = weight.to(x.dtype).t()  # [k, C]
        y = x * w[k - 1] if bias is None else torch.addcmul(bias.to(x.dtype), x, w[k - 1])
        for j in range(k - 1):
            y.addcmul_(padded[:, j:j + T], w[j])
        ctx.save_for_backward(padded, weight)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        padded, weight = ctx.saved_tensors
        T, k = dy.shape[1], weight.shape[-1]
        dy = dy.contiguous()
        w = weight.to(dy.dtype).t()
        d_x = torch.empty_like(dy)
        want_weight = ctx.needs_input_grad[1]
        accumulate = torch.promote_types(dy.dtype, weight.dtype)
        d_weight = dy.new_zeros(k, dy.shape[2], dtype=accumulate) if want_weight else None
        # A few sequences at a time, so that each tile's gradient, input and products stay in cache across
        # the k taps (the whole [B, T, C] would stream from memory once per tap).
        rows = max(1, TILE_ELEMENTS // max(1, T * dy.shape[2]))
        product = dy.new_empty(min(rows, dy.shape[0]), T, dy.shape[2]) if want_weight else None
        for start in range(0, dy.shape[0], rows):
            tile = slice(start, min(start + rows, dy.shape[0]))
            g, g_x = dy[tile], d_x[tile]
            torch.mul(g, w[k - 1], out=g_x)
            for s in range(1, min(k, T + 1)):  # tap j = k - 1 - s reads x_{t - s}
                g_x[:, :T - s].addcmul_(g[:, s:], w[k - 1 - s])
            if want_weight:
                p = product[:tile.stop - start]
                for j in range(k):
                    d_weight[j] += torch.mul(g, padded[tile, j:j + T], out=p).sum((0, 1))
        if want_weight:
            d_weight = d_weight.t().to(weight.dtype)
        d_head = None
        if ctx.needs_input_grad[3]:  # padded step p < k - 1 feeds outputs t = p - j for taps j <= p
            d_head = dy.new_zeros(dy.shape[0], k - 1, dy.shape[2])
            for p in range(k - 1):
                for j in range(max(0, p - T + 1), p + 1):
                    d_head[:, p].addcmul_(dy[:, p - j], w[j])
        d_bias = dy.sum((0, 1)).to(weight.dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return d_x, d_weight, d_bias, d_head


def causal_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None = None,
                  cache: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Depthwise causal conv of x `[B, T, C]` with weight `[C, k]` (and bias `[C]`), continuing `cache`.

    cache `[B, C, k - 1]` holds the k - 1 inputs before x (None: zeros, and no cache comes back). Returns
    (y `[B, T, C]` in x's dtype, the cache after x or None). Equals `naive_causal_conv1d`.
    """
    if x.is_cuda:
        return naive_causal_conv1d(x, weight, bias, cache)
    B, _, C = x.shape
    k = weight.shape[-1]
    if cache is None:
        head = x.new_zeros(B, k - 1, C)
    else:
        head = cache.to(x.dtype).transpose(1, 2)
    y = _CausalConv1d.apply(x, weight, bias, head)
    if cache is None:
        return y, None
    tail = torch.cat([head, x], dim=1)[:, x.shape[1]:] if x.shape[1] < k - 1 else x[:, x.shape[1] - (k - 1):]
    return y, tail.transpose(1, 2)
