"""The chunked diagonal scan equals the step-by-step recurrence h_t = exp(log_a_t) h_{t-1} + b_t."""

import pytest
import torch

from primitives.ops import naive_scan_diagonal, scan_diagonal


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def grads(fn, log_a, b, h0, weights):
    h, last = fn(log_a, b, h0)
    leaves = [x for x in (log_a, b, h0) if x is not None]
    return h, last, torch.autograd.grad((h * weights[0]).sum() + (last * weights[1]).sum(), leaves)


@pytest.mark.parametrize("T", [1, 63, 200])
@pytest.mark.parametrize("with_state", [True, False])
def test_scan_matches_fp64_reference(T, with_state):
    shape = (2, T, 3, 5)
    log_a = (-2 * torch.rand(shape)).requires_grad_()
    b = torch.randn(shape, requires_grad=True)
    h0 = torch.randn(2, 3, 5, requires_grad=True) if with_state else None
    weights = (torch.randn(shape), torch.randn(2, 3, 5))
    h, last, g = grads(scan_diagonal, log_a, b, h0, weights)
    ref_inputs = [x.detach().double().requires_grad_() if x is not None else None for x in (log_a, b, h0)]
    h_ref, last_ref, g_ref = grads(naive_scan_diagonal, *ref_inputs, [w.double() for w in weights])
    assert h.dtype == torch.float32 and h.shape == shape and last.shape == (2, 3, 5)
    assert rel_err(h, h_ref) <= 1e-5 and rel_err(last, last_ref) <= 1e-5
    for grad, grad_ref in zip(g, g_ref):
        assert rel_err(grad, grad_ref) <= 1e-5


def test_scan_chunk_sizes_and_broadcast_log_a():
    b = torch.randn(2, 77, 4, 3, dtype=torch.float64)
    log_a = -torch.rand(2, 77, 4, 1, dtype=torch.float64)  # one decay per channel, shared over the last dim
    h_ref, last_ref = naive_scan_diagonal(log_a.expand_as(b), b)
    for chunk_size in (1, 5, 16, 64, 256):
        h, last = scan_diagonal(log_a, b, chunk_size=chunk_size)
        assert rel_err(h, h_ref) < 1e-12 and rel_err(last, last_ref) < 1e-12, chunk_size


def test_scan_split_sequence_equals_whole():
    log_a, b = -torch.rand(1, 90, 6), torch.randn(1, 90, 6)
    whole, last = scan_diagonal(log_a, b)
    first, mid = scan_diagonal(log_a[:, :40], b[:, :40])
    second, end = scan_diagonal(log_a[:, 40:], b[:, 40:], initial_state=mid)
    assert rel_err(torch.cat([first, second], 1), whole) <= 1e-6 and rel_err(end, last) <= 1e-6


def test_scan_strong_decay_long_sequence_is_stable():
    T = 4096
    log_a = torch.full((1, T, 8), -20.0, requires_grad=True)
    b = torch.randn(1, T, 8, requires_grad=True)
    h, last = scan_diagonal(log_a, b)
    h.sum().backward()
    assert torch.isfinite(h).all() and torch.isfinite(log_a.grad).all() and torch.isfinite(b.grad).all()
    with torch.no_grad():
        h_ref, _ = naive_scan_diagonal(log_a, b)
    assert rel_err(h, h_ref) <= 1e-5


def test_scan_bf16_inputs_and_autocast():
    """bf16 inputs: h is returned in bf16 (8 bits of mantissa: 1e-2 relative), computed in fp32."""
    log_a, b = -torch.rand(2, 40, 4), torch.randn(2, 40, 4)
    h_ref, _ = naive_scan_diagonal(log_a, b)
    h, last = scan_diagonal(log_a.bfloat16(), b.bfloat16())
    assert h.dtype == torch.bfloat16 and last.dtype == torch.float32
    assert rel_err(h.float(), h_ref) <= 2e-2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h_auto, _ = scan_diagonal(log_a, b)
    assert rel_err(h_auto.float(), h_ref) <= 1e-5
