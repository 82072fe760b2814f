"""The chunked PyTorch forms equal the step-by-step references (outputs, final states, every gradient)."""

import pytest
import torch
import torch.nn.functional as F

from primitives import ops

B, H, K, V = 2, 2, 8, 6


def make_inputs(op: str, T: int, dtype=torch.float32, gate_scale: float = 1.0, seed: int = 0):
    """Inputs (q, k, v, *gates) and an initial state for `op`, all leaf tensors requiring grad."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=gen, dtype=dtype)
    k = torch.randn(B, T, H, K, generator=gen, dtype=dtype)
    v = torch.randn(B, T, H, V, generator=gen, dtype=dtype)
    if op in ("delta_rule", "gated_delta_rule"):
        k = F.normalize(k, dim=-1)
    gates = []
    if op in ("simple_gla", "gated_delta_rule"):
        gates.append(-gate_scale * torch.rand(B, T, H, generator=gen, dtype=dtype))
    if op == "gla":
        gates.append(-gate_scale * torch.rand(B, T, H, K, generator=gen, dtype=dtype))
    if op in ("delta_rule", "gated_delta_rule"):
        gates.append(torch.rand(B, T, H, generator=gen, dtype=dtype))
    state = torch.randn(B, H, K, V, generator=gen, dtype=dtype)
    tensors = [q, k, v, *gates, state]
    return [x.requires_grad_() for x in tensors]


OPS = ["simple_gla", "gla", "delta_rule", "gated_delta_rule"]


def naive(op):
    return getattr(ops, f"naive_{op}")


def chunked(op):
    return getattr(ops, f"chunk_{op}")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def run_with_grads(fn, tensors, weights, **kwargs):
    *inputs, state = tensors
    o, final = fn(*inputs, initial_state=state, output_final_state=True, **kwargs)
    loss = (o * weights[0]).sum() + (final * weights[1]).sum()
    grads = torch.autograd.grad(loss, tensors)
    return o, final, grads


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("T", [1, 63, 200])
def test_chunked_matches_fp64_reference(op, T):
    tensors = make_inputs(op, T)
    reference_inputs = [x.detach().double().requires_grad_() for x in tensors]
    weights = (torch.randn(B, T, H, V), torch.randn(B, H, K, V))
    o, final, grads = run_with_grads(chunked(op), tensors, weights)
    o_ref, final_ref, grads_ref = run_with_grads(naive(op), reference_inputs,
                                                 [w.double() for w in weights])
    assert o.dtype == torch.float32 and o.shape == (B, T, H, V)
    assert rel_err(o, o_ref) <= 1e-4
    assert rel_err(final, final_ref) <= 1e-4
    names = ["q", "k", "v"] + [f"gate{i}" for i in range(len(grads) - 4)] + ["initial_state"]
    for name, grad, grad_ref in zip(names, grads, grads_ref):
        assert rel_err(grad, grad_ref) <= 1e-4, name


@pytest.mark.parametrize("op", OPS)
def test_chunk_sizes_agree_in_fp64(op):
    *inputs, state = [x.detach().double() for x in make_inputs(op, 50)]
    o_ref, s_ref = naive(op)(*inputs, initial_state=state, output_final_state=True)
    for chunk_size in (1, 7, 16, 128):
        o, s = chunked(op)(*inputs, initial_state=state, output_final_state=True, chunk_size=chunk_size)
        assert rel_err(o, o_ref) < 1e-12 and rel_err(s, s_ref) < 1e-12, chunk_size


@pytest.mark.parametrize("op", OPS)
def test_split_sequence_with_carried_state_equals_whole(op):
    *inputs, _ = [x.detach() for x in make_inputs(op, 150)]
    whole, whole_state = chunked(op)(*inputs, output_final_state=True)
    first, state = chunked(op)(*(x[:, :70] for x in inputs), output_final_state=True)
    second, end_state = chunked(op)(*(x[:, 70:] for x in inputs), initial_state=state, output_final_state=True)
    assert rel_err(torch.cat([first, second], dim=1), whole) <= 1e-5
    assert rel_err(end_state, whole_state) <= 1e-5


@pytest.mark.parametrize("op", OPS)
def test_final_state_only_when_asked(op):
    *inputs, _ = make_inputs(op, 10)
    assert chunked(op)(*inputs)[1] is None
    assert naive(op)(*inputs)[1] is None


def test_scale_argument_is_used():
    q, k, v, g, _ = [x.detach() for x in make_inputs("simple_gla", 20)]
    default, _ = ops.chunk_simple_gla(q, k, v, g)
    explicit, _ = ops.chunk_simple_gla(q, k, v, g, scale=1.0)
    assert torch.allclose(default, explicit * K**-0.5, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", OPS)
def test_strong_decay_long_sequence_is_stable(op):
    """Log gate -20 per step over T = 4096: no inf/NaN, same as the reference (one head, tiny dims)."""
    T = 4096
    gen = torch.Generator().manual_seed(1)
    q, k = torch.randn(1, T, 1, 4, generator=gen), F.normalize(torch.randn(1, T, 1, 4, generator=gen), dim=-1)
    v = torch.randn(1, T, 1, 4, generator=gen)
    gates = {
        "simple_gla": [torch.full((1, T, 1), -20.0)],
        "gla": [torch.full((1, T, 1, 4), -20.0)],
        "delta_rule": [torch.full((1, T, 1), 0.99)],
        "gated_delta_rule": [torch.full((1, T, 1), -20.0), torch.rand(1, T, 1, generator=gen)],
    }[op]
    q, k, v, *gates = (x.requires_grad_() for x in (q, k, v, *gates))
    o, s = chunked(op)(q, k, v, *gates, output_final_state=True)
    o.sum().backward()
    assert torch.isfinite(o).all() and torch.isfinite(s).all()
    assert all(torch.isfinite(x.grad).all() for x in (q, k, v, *gates))
    with torch.no_grad():
        o_ref, s_ref = naive(op)(q, k, v, *gates, output_final_state=True)
    assert rel_err(o, o_ref) <= 1e-4 and rel_err(s, s_ref) <= 1e-4


@pytest.mark.parametrize("op", OPS)
def test_bf16_autocast_and_bf16_inputs(op):
    """bf16 matmuls keep ~3 significant digits: 5e-2 relative to the fp32 reference (tiny shapes)."""
    *inputs, state = [x.detach() for x in make_inputs(op, 40)]
    o_ref, _ = naive(op)(*inputs, initial_state=state)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        o, _ = chunked(op)(*inputs, initial_state=state)
    assert rel_err(o.float(), o_ref) <= 5e-2
    o_bf16, s_bf16 = chunked(op)(*(x.bfloat16() for x in inputs), initial_state=state, output_final_state=True)
    assert o_bf16.dtype == torch.bfloat16 and s_bf16.dtype == torch.float32
    assert rel_err(o_bf16.float(), o_ref) <= 5e-2


def test_backend_errors():
    q, k, v, g, _ = [x.detach() for x in make_inputs("gla", 4)]
    with pytest.raises(ValueError, match="backend must be"):
        ops.chunk_gla(q, k, v, g, backend="gpu")
    with pytest.raises(ValueError, match="backend must be"):
        ops.chunk_simple_gla(q, k, v, g[..., 0], backend="cuda")


@pytest.mark.parametrize("chunk_size", [64, 16, 7])
def test_gla_with_narrow_and_wide_chunks_matches_fp64_reference(chunk_size):
    """chunk_gla factorizes chunks whose decay range is narrow and halves the others: a sequence with
    mild gates, a strongly decaying stretch and one strongly decaying channel mixes both in one call."""
    T = 150
    q, k, v, g, state = make_inputs("gla", T, gate_scale=0.05)
    with torch.no_grad():
        g[:, 70:110] *= 400  # up to -20 per step: those chunks span far more than the split allows
        g[0, :, 1, 3] = -25.0  # one channel of one head decays strongly everywhere
    from primitives.ops.chunked_gla import SAFE_HALF_RANGE

    G = g.detach().cumsum(1)
    assert (G[1, :chunk_size] - G[1, :1]).abs().amax() < SAFE_HALF_RANGE  # batch 1's first chunk is narrow
    assert (G[:, 110] - G[:, 70]).abs().amin() > 4 * SAFE_HALF_RANGE  # the strong stretch is wide
    tensors = [q, k, v, g, state]
    reference_inputs = [x.detach().double().requires_grad_() for x in tensors]
    weights = (torch.randn(B, T, H, V), torch.randn(B, H, K, V))
    o, final, grads = run_with_grads(ops.chunk_gla, tensors, weights, chunk_size=chunk_size)
    o_ref, final_ref, grads_ref = run_with_grads(ops.naive_gla, reference_inputs, [w.double() for w in weights])
    assert rel_err(o, o_ref) <= 1e-4 and rel_err(final, final_ref) <= 1e-4
    for name, grad, grad_ref in zip(["q", "k", "v", "g", "initial_state"], grads, grads_ref):
        assert torch.isfinite(grad).all(), name
        assert rel_err(grad, grad_ref) <= 1e-4, name


@pytest.mark.parametrize("traced", [False, True])
def test_gla_intra_chunk_scores_take_both_paths(traced, monkeypatch):
    """The scores equal the direct definition whether a block is factorized, halved, or a mix; and when
    traced (torch.compile / torch.export), where every block is halved without looking at the data."""
    from primitives.ops.chunked_gla import SAFE_HALF_RANGE, intra_chunk_scores

    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: traced)

    gen = torch.Generator().manual_seed(3)
    q, k = torch.randn(2, 3, 32, 4, generator=gen, dtype=torch.float64), torch.randn(2, 3, 32, 4, generator=gen,
                                                                                      dtype=torch.float64)
    for strength in (0.01, 1.0, 30.0):  # all narrow, mixed, all wide
        G = (-strength * torch.rand(2, 3, 32, 4, generator=gen, dtype=torch.float64)).cumsum(-2)
        decay = (G.unsqueeze(-2) - G.unsqueeze(-3)).masked_fill(~torch.ones(32, 32).tril().bool()[..., None],
                                                                  float("-inf")).exp()
        direct = (q.unsqueeze(-2) * decay * k.unsqueeze(-3)).sum(-1)
        assert torch.allclose(intra_chunk_scores(q, k, G), direct, rtol=1e-10, atol=1e-12), strength
    wide = (G.amax(-2) - G.amin(-2)).amax(-1) > 2 * SAFE_HALF_RANGE
    assert wide.all()


@pytest.mark.parametrize("T", [1, 63, 130])
def test_grouped_simple_gla_equals_heads_with_repeated_q_k(T):
    """q, k shared by groups of heads (Mamba-2's B and C with n_groups < n_heads) equal the same q, k repeated
    per head, through the step reference: outputs, final state and every gradient (fp64)."""
    gen = torch.Generator().manual_seed(T)
    groups, heads = 2, 6
    q, k = (torch.randn(B, T, groups, K, generator=gen, dtype=torch.float64) for _ in range(2))
    v = torch.randn(B, T, heads, V, generator=gen, dtype=torch.float64)
    g = -torch.rand(B, T, heads, generator=gen, dtype=torch.float64)
    state = torch.randn(B, heads, K, V, generator=gen, dtype=torch.float64)
    tensors = [x.requires_grad_() for x in (q, k, v, g, state)]
    weights = (torch.randn(B, T, heads, V, dtype=torch.float64), torch.randn(B, heads, K, V, dtype=torch.float64))

    def repeated(q, k, v, g, **kwargs):
        return ops.naive_simple_gla(q.repeat_interleave(3, dim=2), k.repeat_interleave(3, dim=2), v, g, **kwargs)

    for fn in (ops.chunk_simple_gla, ops.naive_simple_gla, ops.simple_gla):
        o, final, grads = run_with_grads(fn, tensors, weights, chunk_size=16) if fn is not ops.simple_gla \
            else run_with_grads(fn, tensors, weights)
        o_ref, final_ref, grads_ref = run_with_grads(repeated, tensors, weights)
        assert rel_err(o, o_ref) < 1e-12 and rel_err(final, final_ref) < 1e-12, fn
        for name, grad, grad_ref in zip(["q", "k", "v", "g", "state"], grads, grads_ref):
            assert grad.shape == grad_ref.shape and rel_err(grad, grad_ref) < 1e-12, (fn, name)
