"""The mLSTM operator: the chunked form equals the step recurrence (outputs, states, gradients), the stabilised
recurrence means what the unstabilised formula says, and a split sequence equals the whole."""

from __future__ import annotations

import pytest
import torch

from primitives.ops import chunk_mlstm, naive_mlstm

B, H, K, V = 2, 3, 4, 5


def mlstm_inputs(T: int, igate_scale: float):
    """q, k, v `[B, T, H, *]`, input gate and log forget gate `[B, T, H]`, and a non-zero state (C', n', m)."""
    q, k, v = torch.randn(B, T, H, K), torch.randn(B, T, H, K) * 0.5, torch.randn(B, T, H, V)
    igate = torch.randn(B, T, H) * igate_scale
    log_fgate = torch.nn.functional.logsigmoid(torch.randn(B, T, H) + 2)
    state = (torch.randn(B, H, K, V), torch.randn(B, H, K), torch.randn(B, H))
    return q, k, v, igate, log_fgate, state


@pytest.mark.parametrize("igate_scale", [1.0, 60.0])
def test_mlstm_chunked_equals_the_step_recurrence(igate_scale):
    inputs = [t.requires_grad_() for t in mlstm_inputs(23, igate_scale)[:5]]
    state = mlstm_inputs(23, igate_scale)[5]
    ref, ref_state = naive_mlstm(*inputs, state, output_final_state=True)
    out, out_state = chunk_mlstm(*inputs, state, output_final_state=True, chunk_size=8)
    assert torch.isfinite(out).all()   # exp(60 * N(0,1)) overflows fp32 without the stabiliser
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    for a, b in zip(out_state, ref_state):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    grads = torch.autograd.grad(out.sum(), inputs)
    ref_grads = torch.autograd.grad(ref.sum(), inputs)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


def test_mlstm_unstabilised_meaning():
    """The stabilised recurrence computes h = q C / max(|q . n|, 1) with the raw exponential gates."""
    q, k, v, igate, log_fgate, _ = mlstm_inputs(6, 1.0)
    h, _ = naive_mlstm(q, k, v, igate, log_fgate)
    C = torch.zeros(B, H, K, V)
    n = torch.zeros(B, H, K)
    for t in range(6):
        f, i = log_fgate[:, t].exp()[..., None], igate[:, t].exp()[..., None]
        C = f[..., None] * C + (i * k[:, t])[..., None] * v[:, t, :, None, :]
        n = f * n + i * k[:, t]
        expected = torch.einsum("bhk,bhkv->bhv", q[:, t], C)
        expected = expected / (q[:, t] * n).sum(-1).abs().clamp_min(1.0)[..., None]
        torch.testing.assert_close(h[:, t], expected, atol=1e-5, rtol=1e-4)


def test_chunk_sizes_agree_in_fp64():
    *inputs, state = mlstm_inputs(50, 5.0)
    inputs, state = [x.double() for x in inputs], tuple(s.double() for s in state)
    o_ref, s_ref = naive_mlstm(*inputs, state, output_final_state=True)
    assert o_ref.dtype == torch.float64
    for chunk_size in (1, 7, 16, 128):
        o, s = chunk_mlstm(*inputs, state, output_final_state=True, chunk_size=chunk_size)
        torch.testing.assert_close(o, o_ref, atol=1e-10, rtol=1e-10)
        for a, b in zip(s, s_ref):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("op", [naive_mlstm, chunk_mlstm])
def test_split_sequence_with_carried_state_equals_whole(op):
    *inputs, _ = mlstm_inputs(41, 3.0)
    whole, whole_state = op(*inputs, output_final_state=True, chunk_size=16)
    first, state = op(*(x[:, :19] for x in inputs), output_final_state=True, chunk_size=16)
    second, end_state = op(*(x[:, 19:] for x in inputs), state, output_final_state=True, chunk_size=16)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, atol=1e-5, rtol=1e-4)
    for a, b in zip(end_state, whole_state):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("op", [naive_mlstm, chunk_mlstm])
def test_final_state_only_when_asked_and_output_in_the_dtype_of_v(op):
    q, k, v, igate, log_fgate, _ = mlstm_inputs(10, 1.0)
    out, state = op(q, k, v.bfloat16(), igate, log_fgate)
    assert state is None and out.dtype == torch.bfloat16 and out.shape == (B, 10, H, V)
