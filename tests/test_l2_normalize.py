"""The written-out L2 normalisation equals F.normalize (outputs and gradients, fp64)."""

import torch
import torch.nn.functional as F

from primitives.ops.l2_normalize import l2_normalize


def test_l2_normalize_matches_f_normalize_with_gradients():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 2, 16, generator=gen, dtype=torch.float64)
    x[0, 0, 0] = 0.0  # a zero vector: the norm is clamped to eps
    x[1, 2, 1] *= 1e-14
    dy = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    ours, ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    y, y_ref = l2_normalize(ours), F.normalize(ref, dim=-1)
    (grad,), (grad_ref,) = torch.autograd.grad(y, ours, dy), torch.autograd.grad(y_ref, ref, dy)
    assert torch.allclose(y, y_ref, rtol=1e-12, atol=1e-14)
    assert torch.allclose(grad, grad_ref, rtol=1e-10, atol=1e-12)


def test_l2_normalize_float32_rows_have_unit_norm():
    x = torch.randn(4, 7, 32)
    assert torch.allclose(l2_normalize(x).norm(dim=-1), torch.ones(4, 7), atol=1e-6)
