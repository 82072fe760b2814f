"""Mamba-1's fused selective scan equals the step-by-step recurrence (outputs, final state, every gradient)."""

import pytest
import torch

from primitives.ops import materialized_selective_scan, naive_selective_scan, selective_scan
from primitives.ops.selective_scan import block_length

B, E, N = 2, 5, 3


def make_inputs(T: int, dtype=torch.float64, seed: int = 0, dt_scale: float = 0.5):
    gen = torch.Generator().manual_seed(seed)
    dt = dt_scale * torch.rand(B, T, E, generator=gen, dtype=dtype)
    A = -2 * torch.rand(E, N, generator=gen, dtype=dtype)
    x, Bm, Cm = (torch.randn(B, T, *s, generator=gen, dtype=dtype) for s in ((E,), (N,), (N,)))
    h0 = torch.randn(B, E, N, generator=gen, dtype=dtype)
    return [t.requires_grad_() for t in (dt, A, x, Bm, Cm, h0)]


def run(fn, tensors, weights, with_state=True, **kwargs):
    *inputs, h0 = tensors
    y, last = fn(*inputs, h0 if with_state else None, **kwargs)
    leaves = tensors if with_state else tensors[:-1]
    loss = (y * weights[0]).sum() + (last * weights[1]).sum()
    return y, last, torch.autograd.grad(loss, leaves)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize("T", [1, 7, 33])
@pytest.mark.parametrize("block", [None, 1, 4, 16])
@pytest.mark.parametrize("with_state", [True, False])
def test_selective_scan_matches_reference_fp64(T, block, with_state):
    tensors = make_inputs(T)
    weights = (torch.randn(B, T, E, dtype=torch.float64), torch.randn(B, E, N, dtype=torch.float64))
    y, last, grads = run(selective_scan, tensors, weights, with_state, block=block)
    y_ref, last_ref, grads_ref = run(naive_selective_scan, tensors, weights, with_state)
    assert y.shape == (B, T, E) and last.shape == (B, E, N)
    assert rel_err(y, y_ref) < 1e-12 and rel_err(last, last_ref) < 1e-12
    for grad, grad_ref in zip(grads, grads_ref):
        assert rel_err(grad, grad_ref) < 1e-12


@pytest.mark.parametrize("T", [5, 70])
def test_selective_scan_fp32_matches_fp64_reference(T):
    tensors = make_inputs(T, dtype=torch.float32, dt_scale=2.0)  # decays down to exp(-4) per step
    weights = (torch.randn(B, T, E), torch.randn(B, E, N))
    y, last, grads = run(selective_scan, tensors, weights, block=8)
    reference = [t.detach().double().requires_grad_() for t in tensors]
    y_ref, last_ref, grads_ref = run(naive_selective_scan, reference, [w.double() for w in weights])
    assert y.dtype == torch.float32 and rel_err(y, y_ref) < 1e-5 and rel_err(last, last_ref) < 1e-5
    for grad, grad_ref in zip(grads, grads_ref):
        assert rel_err(grad, grad_ref) < 1e-5


def test_selective_scan_default_blocks_fp32_match_fp64_reference():
    """At a width where the default block length splits the sequence (with a shorter last block), fp32 outputs
    and every gradient stay within 1e-5 of the fp64 step-by-step reference."""
    Bsz, T, E, N = 2, 40, 256, 16
    assert block_length(Bsz, E, N, T) < T and T % block_length(Bsz, E, N, T)
    gen = torch.Generator().manual_seed(1)
    dt = 0.5 * torch.rand(Bsz, T, E, generator=gen)
    A = -2 * torch.rand(E, N, generator=gen)
    x, Bm, Cm = (torch.randn(Bsz, T, *s, generator=gen) for s in ((E,), (N,), (N,)))
    h0 = torch.randn(Bsz, E, N, generator=gen)
    tensors = [t.requires_grad_() for t in (dt, A, x, Bm, Cm, h0)]
    weights = (torch.randn(Bsz, T, E, generator=gen), torch.randn(Bsz, E, N, generator=gen))
    y, last, grads = run(selective_scan, tensors, weights)
    reference = [t.detach().double().requires_grad_() for t in tensors]
    y_ref, last_ref, grads_ref = run(naive_selective_scan, reference, [w.double() for w in weights])
    assert rel_err(y, y_ref) < 1e-5 and rel_err(last, last_ref) < 1e-5
    for grad, grad_ref in zip(grads, grads_ref):
        assert rel_err(grad, grad_ref) < 1e-5


def test_selective_scan_split_sequence_equals_whole():
    dt, A, x, Bm, Cm, h0 = (t.detach() for t in make_inputs(41, dtype=torch.float32))
    whole, last = selective_scan(dt, A, x, Bm, Cm, h0, block=8)
    first, mid = selective_scan(dt[:, :17], A, x[:, :17], Bm[:, :17], Cm[:, :17], h0, block=8)
    second, end = selective_scan(dt[:, 17:], A, x[:, 17:], Bm[:, 17:], Cm[:, 17:], mid, block=8)
    assert rel_err(torch.cat([first, second], 1), whole) < 1e-6 and rel_err(end, last) < 1e-6


def test_selective_scan_bf16_inputs_come_back_bf16():
    dt, A, x, Bm, Cm, h0 = (t.detach() for t in make_inputs(9, dtype=torch.float32))
    y_ref, _ = naive_selective_scan(dt, A, x, Bm, Cm, h0)
    y, last = selective_scan(dt, A, x.bfloat16(), Bm, Cm, h0)
    assert y.dtype == torch.bfloat16 and last.dtype == torch.float32
    assert rel_err(y.float(), y_ref) < 2e-2


@pytest.mark.parametrize("T", [1, 33])
def test_materialized_form_matches_reference_fp64(T):
    """The form CUDA runs (materialised states through scan_diagonal), and `form=` choosing it."""
    tensors = make_inputs(T)
    weights = (torch.randn(B, T, E, dtype=torch.float64), torch.randn(B, E, N, dtype=torch.float64))
    y_ref, last_ref, grads_ref = run(naive_selective_scan, tensors, weights)
    for fn in (materialized_selective_scan, lambda *a: selective_scan(*a, form="materialized")):
        y, last, grads = run(fn, tensors, weights)
        assert rel_err(y, y_ref) < 1e-12 and rel_err(last, last_ref) < 1e-12
        for grad, grad_ref in zip(grads, grads_ref):
            assert rel_err(grad, grad_ref) < 1e-12
