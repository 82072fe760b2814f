"""KDA, RWKV-7, Hyena's long convolution and sLSTM: each fast form equals its step-by-step reference (fp32
outputs, final states and every gradient against fp64), for lengths that are not a multiple of the chunk,
from a non-zero initial state, and across a sequence split in two with the state carried over."""

import pytest
import torch
import torch.nn.functional as F

from primitives import ops

B, H, K, V = 2, 2, 8, 6


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def matrix_inputs(op: str, T: int, gate_scale: float = 1.0, seed: int = 0) -> list[torch.Tensor]:
    """Inputs of `op` ("kda" or "rwkv7") in its argument order and an initial state, leaves requiring grad."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    def decay():
        return -gate_scale * torch.rand(B, T, H, K, generator=gen)

    if op == "kda":
        tensors = [randn(B, T, H, K), F.normalize(randn(B, T, H, K), dim=-1), randn(B, T, H, V), decay(),
                   torch.rand(B, T, H, generator=gen)]
    else:  # r, w, k, v, a = -kappa, b = kappa * alpha, as the RWKV-7 layer calls it
        kappa = F.normalize(randn(B, T, H, K), dim=-1)
        alpha = torch.rand(B, T, H, K, generator=gen)
        tensors = [randn(B, T, H, K), decay(), randn(B, T, H, K), randn(B, T, H, V), -kappa, kappa * alpha]
    tensors.append(randn(B, H, K, V))
    return [x.requires_grad_() for x in tensors]


def run_with_grads(fn, tensors, weights, **kwargs):
    *inputs, state = tensors
    o, final = fn(*inputs, initial_state=state, output_final_state=True, **kwargs)
    loss = (o * weights[0]).sum() + (final * weights[1]).sum()
    return o, final, torch.autograd.grad(loss, tensors)


MATRIX_OPS = ["kda", "rwkv7"]


@pytest.mark.parametrize("op", MATRIX_OPS)
@pytest.mark.parametrize("T", [1, 63, 150])
def test_chunked_matches_fp64_reference(op, T):
    tensors = matrix_inputs(op, T)
    reference = [x.detach().double().requires_grad_() for x in tensors]
    weights = (torch.randn(B, T, H, V), torch.randn(B, H, K, V))
    o, final, grads = run_with_grads(getattr(ops, f"chunk_{op}_torch"), tensors, weights)
    o_ref, final_ref, grads_ref = run_with_grads(getattr(ops, f"naive_{op}"), reference,
                                                 [w.double() for w in weights])
    assert o.dtype == torch.float32 and o.shape == (B, T, H, V)
    assert rel_err(o, o_ref) <= 1e-4 and rel_err(final, final_ref) <= 1e-4
    for i, (grad, grad_ref) in enumerate(zip(grads, grads_ref)):
        assert rel_err(grad, grad_ref) <= 1e-4, i


@pytest.mark.parametrize("op", MATRIX_OPS)
def test_chunk_sizes_and_strong_decays_agree_in_fp64(op):
    """Any chunk size, and decays of up to -30 per step (chunks whose decay range needs halving), are exact."""
    for gate_scale in (1.0, 30.0):
        *inputs, state = [x.detach().double() for x in matrix_inputs(op, 50, gate_scale)]
        o_ref, s_ref = getattr(ops, f"naive_{op}")(*inputs, initial_state=state, output_final_state=True)
        for chunk_size in (1, 7, 16, 64):
            o, s = getattr(ops, f"chunk_{op}_torch")(*inputs, initial_state=state, output_final_state=True,
                                                    chunk_size=chunk_size)
            assert rel_err(o, o_ref) < 1e-10 and rel_err(s, s_ref) < 1e-10, (gate_scale, chunk_size)


@pytest.mark.parametrize("op", MATRIX_OPS)
def test_split_sequence_with_carried_state_equals_whole(op):
    *inputs, _ = [x.detach() for x in matrix_inputs(op, 150)]
    run = getattr(ops, op)  # the length dispatch: pieces of 1-3 tokens run the step form
    whole, whole_state = run(*inputs, output_final_state=True)
    outputs, state, start = [], None, 0
    for end in (2, 70, 150):
        o, state = run(*(x[:, start:end] for x in inputs), initial_state=state, output_final_state=True)
        outputs.append(o)
        start = end
    assert rel_err(torch.cat(outputs, dim=1), whole) <= 1e-5
    assert rel_err(state, whole_state) <= 1e-5


def test_kda_with_one_decay_per_head_is_the_gated_delta_rule():
    q, k, v, g, beta, state = [x.detach() for x in matrix_inputs("kda", 40)]
    g_head = g[..., :1]
    o, s = ops.chunk_kda_torch(q, k, v, g_head.expand_as(g), beta, initial_state=state, output_final_state=True)
    o_ref, s_ref = ops.naive_gated_delta_rule(q, k, v, g_head[..., 0], beta, initial_state=state,
                                              output_final_state=True)
    assert rel_err(o, o_ref) <= 1e-5 and rel_err(s, s_ref) <= 1e-5


def test_rwkv7_state_update_is_diagonal_plus_rank_one():
    """One step from S: exp(w) S + b^T (a S) + k^T v, read out by r (scale 1), written out by hand."""
    r, w, k, v, a, b, state = [x.detach() for x in matrix_inputs("rwkv7", 1)]
    o, s = ops.naive_rwkv7(r, w, k, v, a, b, initial_state=state, output_final_state=True)
    expected = torch.zeros_like(state)
    for bi in range(B):
        for h in range(H):
            S = state[bi, h]
            transition = torch.diag(w[bi, 0, h].exp()) + torch.outer(b[bi, 0, h], a[bi, 0, h])
            expected[bi, h] = transition @ S + torch.outer(k[bi, 0, h], v[bi, 0, h])
    torch.testing.assert_close(s, expected)
    torch.testing.assert_close(o[:, 0], torch.einsum("bhk,bhkv->bhv", r[:, 0], expected))


# ----------------------------------------------------------------------------------------------
# Hyena's long convolution


def test_long_conv_forms_are_the_causal_sum():
    gen = torch.Generator().manual_seed(3)
    u = torch.randn(2, 5, 70, generator=gen, dtype=torch.float64)
    for taps in (1, 30, 200):  # shorter than, and longer than, the sequence
        h = torch.randn(5, taps, generator=gen, dtype=torch.float64)
        expected = torch.zeros_like(u)
        for t in range(u.shape[-1]):
            for s in range(min(t + 1, taps)):
                expected[..., t] += h[:, s] * u[..., t - s]
        assert rel_err(ops.direct_causal_conv(u, h), expected) < 1e-12, taps
        assert rel_err(ops.fft_causal_conv(u, h), expected) < 1e-12, taps


def test_long_conv_fft_gradients_match_the_direct_sum():
    gen = torch.Generator().manual_seed(4)
    u = torch.randn(2, 3, 45, generator=gen).requires_grad_()
    h = torch.randn(3, 64, generator=gen).requires_grad_()
    weight = torch.randn(2, 3, 45, generator=gen)
    grads = torch.autograd.grad((ops.fft_causal_conv(u, h) * weight).sum(), (u, h))
    u64, h64 = (x.detach().double().requires_grad_() for x in (u, h))
    grads_ref = torch.autograd.grad((ops.direct_causal_conv(u64, h64) * weight.double()).sum(), (u64, h64))
    for grad, grad_ref in zip(grads, grads_ref):
        assert rel_err(grad, grad_ref) <= 1e-5


def test_long_conv_streams_with_its_input_history():
    gen = torch.Generator().manual_seed(5)
    u, h = torch.randn(2, 4, 90, generator=gen), torch.randn(4, 33, generator=gen)
    whole, _ = ops.long_conv(u, h)
    history = torch.randn(2, 4, 32, generator=gen)          # a non-zero start: 32 earlier inputs
    with_past, _ = ops.long_conv(torch.cat([history, u], dim=-1), h)
    pieces, start = [], 0
    carried = history
    for end in (1, 3, 50, 90):                              # 1 and 2 tokens: the direct form; longer: the FFT
        y, carried = ops.long_conv(u[..., start:end], h, carried)
        pieces.append(y)
        start = end
    assert rel_err(torch.cat(pieces, dim=-1), with_past[..., 32:]) <= 1e-5
    torch.testing.assert_close(carried, u[..., -32:])
    zero_start, _ = ops.long_conv(u, h, torch.zeros(2, 4, 32))
    assert rel_err(zero_start, whole) <= 1e-5


# ----------------------------------------------------------------------------------------------
# sLSTM


def slstm_inputs(T: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    wx = torch.randn(B, T, H, 4, K, generator=gen)
    R = 0.3 * torch.randn(H, K, 4, K, generator=gen)
    y, c = torch.randn(B, H, K, generator=gen), torch.randn(B, H, K, generator=gen)
    n, m = torch.rand(B, H, K, generator=gen) + 0.5, torch.randn(B, H, K, generator=gen)
    return wx, R, (y, c, n, m)


@pytest.mark.parametrize("T", [1, 37])
def test_slstm_scan_matches_the_fp64_step_reference(T):
    wx, R, state = slstm_inputs(T)
    leaves = [wx, R, *state]
    leaves = [x.requires_grad_() for x in leaves]
    weights = torch.randn(B, T, H, K), torch.randn(B, H, K)
    y, final = ops.slstm_scan(leaves[0], leaves[1], tuple(leaves[2:]))
    grads = torch.autograd.grad((y * weights[0]).sum() + (final[1] * weights[1]).sum(), leaves)
    ref = [x.detach().double().requires_grad_() for x in leaves]
    y_ref, final_ref = ops.naive_slstm(ref[0], ref[1], tuple(ref[2:]))
    grads_ref = torch.autograd.grad((y_ref * weights[0].double()).sum()
                                    + (final_ref[1] * weights[1].double()).sum(), ref)
    assert y.dtype == torch.float32 and rel_err(y, y_ref) <= 1e-5
    for state_part, state_ref in zip(final, final_ref):
        assert rel_err(state_part, state_ref) <= 1e-5
    for i, (grad, grad_ref) in enumerate(zip(grads, grads_ref)):
        assert rel_err(grad, grad_ref) <= 1e-4, i


def test_slstm_scan_from_a_fresh_state_matches_the_reference_in_outputs_and_gradients():
    """The written-out backward on a zero start (m = i~ on the first step) and with gradients on every part of
    the final state, the stabiliser m included."""
    wx, R, _ = slstm_inputs(29, seed=1)
    leaves = [wx.requires_grad_(), R.requires_grad_()]
    gen = torch.Generator().manual_seed(2)
    weights = [torch.randn(B, 29, H, K, generator=gen)] + [torch.randn(B, H, K, generator=gen) for _ in range(4)]

    def loss(y, final):
        return (y * weights[0]).sum() + sum((s * w).sum() for s, w in zip(final, weights[1:]))

    y, final = ops.slstm_scan(*leaves)
    grads = torch.autograd.grad(loss(y, final), leaves)
    ref = [x.detach().double().requires_grad_() for x in leaves]
    weights = [w.double() for w in weights]
    y_ref, final_ref = ops.naive_slstm(*ref)
    grads_ref = torch.autograd.grad(loss(y_ref, final_ref), ref)
    with torch.no_grad():
        y_no_graph, _ = ops.slstm_scan(*leaves)                        # the forward-only step loop
    assert rel_err(y_no_graph, y) <= 1e-6
    assert rel_err(y, y_ref) <= 1e-5
    for state_part, state_ref in zip(final, final_ref):
        assert rel_err(state_part, state_ref) <= 1e-5
    for grad, grad_ref in zip(grads, grads_ref):
        assert rel_err(grad, grad_ref) <= 1e-4


def test_slstm_split_sequence_with_carried_state_equals_whole():
    wx, R, _ = slstm_inputs(50)
    whole, whole_state = ops.slstm_scan(wx, R)
    first, state = ops.slstm_scan(wx[:, :20], R)
    second, end_state = ops.slstm_scan(wx[:, 20:], R, state)
    assert rel_err(torch.cat([first, second], dim=1), whole) <= 1e-6
    for a, b in zip(end_state, whole_state):
        assert rel_err(a, b) <= 1e-6


def test_slstm_step_is_the_stabilised_exponential_gating():
    """One step from a non-zero state, written with the unstabilised gates: c = f c + exp(i) tanh(z) scaled by
    exp(-m), the output o c / n is the same."""
    wx, R, (y0, c0, n0, m0) = slstm_inputs(1)
    y, (_, c, n, m) = ops.naive_slstm(wx, R, (y0, c0, n0, m0))
    raw = wx[:, 0] + torch.einsum("bhd,hdge->bhge", y0, R)
    i, f, z, o = raw.unbind(2)
    c_true = torch.sigmoid(f) * c0 * m0.exp() + i.exp() * torch.tanh(z)    # c0, n0 are stored scaled by exp(-m0)
    n_true = torch.sigmoid(f) * n0 * m0.exp() + i.exp()
    torch.testing.assert_close(y[:, 0], torch.sigmoid(o) * c_true / n_true)
    torch.testing.assert_close(c * m.exp(), c_true)
    torch.testing.assert_close(m, torch.maximum(i, F.logsigmoid(f) + m0))
