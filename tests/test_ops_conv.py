"""The channels-last causal convolution equals `F.conv1d` (outputs, carried cache, every gradient)."""

import pytest
import torch

from primitives.ops import causal_conv1d, naive_causal_conv1d


def run(fn, x, w, b, cache, weights):
    y, new_cache = fn(x, w, b, cache)
    loss = (y * weights[0]).sum() + ((new_cache * weights[1]).sum() if new_cache is not None else 0)
    leaves = [t for t in (x, w, b, cache) if t is not None]
    return y, new_cache, torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("T", [1, 2, 7, 40])
@pytest.mark.parametrize("k", [1, 3, 4])
@pytest.mark.parametrize("with_cache", [True, False])
@pytest.mark.parametrize("with_bias", [True, False])
def test_causal_conv_matches_conv1d(T, k, with_cache, with_bias):
    gen = torch.Generator().manual_seed(T * 10 + k)
    B, C = 2, 5
    x = torch.randn(B, T, C, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(C, k, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(C, generator=gen, dtype=torch.float64, requires_grad=True) if with_bias else None
    cache = torch.randn(B, C, k - 1, generator=gen, dtype=torch.float64, requires_grad=True) if with_cache else None
    weights = (torch.randn(B, T, C, generator=gen, dtype=torch.float64),
               torch.randn(B, C, k - 1, generator=gen, dtype=torch.float64))
    y, new_cache, grads = run(causal_conv1d, x, w, b, cache, weights)
    y_ref, cache_ref, grads_ref = run(naive_causal_conv1d, x, w, b, cache, weights)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    assert (new_cache is None) == (not with_cache)
    if with_cache:
        torch.testing.assert_close(new_cache, cache_ref, rtol=0, atol=0)
    for grad, grad_ref in zip(grads, grads_ref):
        torch.testing.assert_close(grad, grad_ref, rtol=1e-12, atol=1e-12)


def test_causal_conv_fp32_and_split_sequence():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 50, 8, generator=gen)
    w, b = torch.randn(8, 4, generator=gen), torch.randn(8, generator=gen)
    whole, _ = causal_conv1d(x, w, b)
    torch.testing.assert_close(whole, naive_causal_conv1d(x, w, b)[0], rtol=1e-5, atol=1e-5)
    cache = torch.zeros(3, 8, 3)
    pieces = []
    for piece in (x[:, :1], x[:, 1:3], x[:, 3:30], x[:, 30:]):
        y, cache = causal_conv1d(piece, w, b, cache)
        pieces.append(y)
    torch.testing.assert_close(torch.cat(pieces, 1), whole, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(cache, x[:, -3:].transpose(1, 2), rtol=0, atol=0)


def test_causal_conv_backward_tiles_of_sequences_equal_the_whole_batch(monkeypatch):
    """The backward walks the batch in tiles: several tiles give the same gradients as one."""
    from primitives.ops import short_conv

    gen = torch.Generator().manual_seed(5)
    x = torch.randn(5, 12, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
    cache = torch.randn(5, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    weights = (torch.randn(5, 12, 3, generator=gen, dtype=torch.float64), torch.zeros(5, 3, 3, dtype=torch.float64))
    _, _, one_tile = run(causal_conv1d, x, w, b, cache, weights)
    monkeypatch.setattr(short_conv, "TILE_ELEMENTS", 2 * 12 * 3)  # tiles of two sequences: 2, 2, 1
    _, _, tiles = run(causal_conv1d, x, w, b, cache, weights)
    for grad, grad_one in zip(tiles, one_tile):
        torch.testing.assert_close(grad, grad_one, rtol=1e-12, atol=1e-12)
