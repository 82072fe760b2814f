"""The Triton kernels equal the chunked PyTorch path, run on CPU through the Triton interpreter.

TRITON_INTERPRET must be set before triton itself is imported (triton's own library functions such as
tl.sum are decorated at import). This module sets it first thing. If triton was already imported in
this pytest process (by another test module, or torch), the in-process tests skip and one test reruns
this file in a fresh interpreter-mode subprocess instead. Shapes are tiny: ~1.5 ms per program.
"""

import os
import subprocess
import sys
import warnings
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

triton = pytest.importorskip("triton")

from triton.runtime.interpreter import InterpretedFunction  # noqa: E402

from primitives import ops  # noqa: E402
from primitives.ops import dispatch  # noqa: E402

IN_PROCESS = isinstance(triton.language.standard.sum, InterpretedFunction)
in_process = pytest.mark.skipif(not IN_PROCESS, reason="triton imported before TRITON_INTERPRET was set; "
                                "covered by test_kernels_in_fresh_interpreter_process")
if IN_PROCESS:
    for _name in ["primitives.ops.triton.gated_delta_rule", "primitives.ops.triton.simple_gla",
                  "primitives.ops.triton.chunk_recurrence", "primitives.ops.triton.gla"]:
        sys.modules.pop(_name, None)  # decorated earlier without the interpreter
    from primitives.ops.triton import gated_delta_rule, gla, simple_gla


@pytest.mark.skipif(IN_PROCESS, reason="the kernels ran in this process")
def test_kernels_in_fresh_interpreter_process():
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                            cwd=root, env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert "passed" in summary and "failed" not in summary, summary


B, H = 1, 2


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def inputs(op: str, T: int, K: int, V: int, with_state: bool):
    gen = torch.Generator().manual_seed(T * 100 + K)
    q = torch.randn(B, T, H, K, generator=gen)
    k = F.normalize(torch.randn(B, T, H, K, generator=gen), dim=-1)
    v = torch.randn(B, T, H, V, generator=gen)
    if op == "gla":
        gates = [-torch.rand(B, T, H, K, generator=gen)]
    else:
        gates = [-torch.rand(B, T, H, generator=gen)] if op != "delta_rule" else []
    if op not in ("simple_gla", "gla"):
        gates.append(torch.rand(B, T, H, generator=gen))
    state = torch.randn(B, H, K, V, generator=gen) if with_state else None
    return [x.requires_grad_() for x in (q, k, v, *gates)], state


def outputs_and_grads(fn, args, state, chunk_size, **kwargs):
    o, final = fn(*args, initial_state=state, output_final_state=True, chunk_size=chunk_size, **kwargs)
    gen = torch.Generator().manual_seed(7)
    loss = (o * torch.randn(o.shape, generator=gen)).sum() + (final * torch.randn(final.shape, generator=gen)).sum()
    leaves = args + ([state] if state is not None else [])
    return o, final, torch.autograd.grad(loss, leaves)


@in_process
@pytest.mark.parametrize("op", ["simple_gla", "gla", "gated_delta_rule", "delta_rule"])
@pytest.mark.parametrize("T,K,V,chunk_size,with_state", [(40, 16, 16, 16, True), (33, 8, 24, 32, False),
                                                         (1, 16, 16, 16, True)])
def test_triton_matches_torch_path(op, T, K, V, chunk_size, with_state):
    args, state = inputs(op, T, K, V, with_state)
    if state is not None:
        state.requires_grad_()
    fn = getattr(ops, f"chunk_{op}")
    o, final, grads = outputs_and_grads(fn, args, state, chunk_size, backend="triton")
    o_ref, final_ref, grads_ref = outputs_and_grads(fn, args, state, chunk_size, backend="torch")
    assert o.shape == o_ref.shape and final.shape == final_ref.shape
    assert rel_err(o, o_ref) <= 1e-5 and rel_err(final, final_ref) <= 1e-5
    for grad, grad_ref in zip(grads, grads_ref, strict=True):
        assert rel_err(grad, grad_ref) <= 1e-5


@in_process
def test_triton_strong_decay_is_stable():
    T = 64
    q, k, v = torch.randn(B, T, H, 16), F.normalize(torch.randn(B, T, H, 16), dim=-1), torch.randn(B, T, H, 16)
    g = torch.full((B, T, H), -20.0, requires_grad=True)
    o, _ = simple_gla.chunk_simple_gla_triton(q, k, v, g, chunk_size=32)
    o.sum().backward()
    assert torch.isfinite(o).all() and torch.isfinite(g.grad).all()
    assert rel_err(o, ops.naive_simple_gla(q, k, v, g)[0]) <= 1e-5


@in_process
def test_triton_gla_strong_and_mixed_decay():
    """Chunks too wide for the one-matmul scores (halved in torch) next to ordinary ones, K not a power of
    two: outputs and every gradient equal the torch path."""
    T, K, V = 48, 12, 16
    gen = torch.Generator().manual_seed(5)
    q, k, v = torch.randn(B, T, H, K, generator=gen), torch.randn(B, T, H, K, generator=gen), torch.randn(B, T, H, V,
                                                                                                           generator=gen)
    g = -0.05 * torch.rand(B, T, H, K, generator=gen)
    g[:, 16:32] = -20.0 * torch.rand(B, 16, H, K, generator=gen)
    state = torch.randn(B, H, K, V, generator=gen)
    args = [x.requires_grad_() for x in (q, k, v, g)]
    state.requires_grad_()
    o, final, grads = outputs_and_grads(ops.chunk_gla, args, state, 16, backend="triton")
    o_ref, final_ref, grads_ref = outputs_and_grads(ops.chunk_gla, args, state, 16, backend="torch")
    assert torch.isfinite(o).all() and all(torch.isfinite(grad).all() for grad in grads)
    assert rel_err(o, o_ref) <= 1e-5 and rel_err(final, final_ref) <= 1e-5
    for grad, grad_ref in zip(grads, grads_ref, strict=True):
        assert rel_err(grad, grad_ref) <= 1e-5


@in_process
def test_triton_rejects_bad_chunk_size():
    q = torch.randn(1, 8, 1, 16)
    with pytest.raises(ValueError, match="power-of-two chunk_size >= 16"):
        simple_gla.chunk_simple_gla_triton(q, q, q, torch.zeros(1, 8, 1), chunk_size=24)
    with pytest.raises(ValueError, match="power-of-two chunk_size >= 16"):
        gated_delta_rule.chunk_gated_delta_rule_triton(q, q, q, torch.zeros(1, 8, 1), torch.ones(1, 8, 1),
                                                       chunk_size=8)
    with pytest.raises(ValueError, match="power-of-two chunk_size >= 16"):
        gla.chunk_gla_triton(q, q, q, torch.zeros(1, 8, 1, 16), chunk_size=48)


@in_process
@pytest.mark.parametrize("op", ["simple_gla", "gla", "gated_delta_rule", "delta_rule"])
def test_real_kernel_passes_the_auto_paths_check_and_is_used(op, monkeypatch):
    """With the CPU standing in as a kernel device, the auto path checks each real kernel on first use, finds
    it right and runs it: results equal to backend="triton", no fallback warning."""
    from primitives.ops.triton import verify

    fetched = []
    real_form = dispatch.triton_form
    monkeypatch.setattr(dispatch, "triton_form", lambda operator: fetched.append(operator) or real_form(operator))
    monkeypatch.setattr(dispatch, "kernel_device", lambda x: True)
    monkeypatch.setattr(verify, "VERDICTS", {})
    monkeypatch.delenv("COMPOSER_TRITON", raising=False)
    args, state = inputs(op, 40, 16, 24, True)
    state.requires_grad_()
    fn = getattr(ops, f"chunk_{op}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", verify.KernelFallbackWarning)
        o, final, grads = outputs_and_grads(fn, args, state, 16)
    [(call_class, verdict)] = verify.VERDICTS.items()
    assert verdict.ok and call_class.grad and call_class.head_dims == (16, 24), verdict
    assert fetched == [f"chunk_{op}"] * 2  # the check, then the call
    o_kernel, final_kernel, grads_kernel = outputs_and_grads(fn, args, state, 16, backend="triton")
    assert torch.equal(o, o_kernel) and torch.equal(final, final_kernel)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads_kernel, strict=True))


@in_process
def test_triton_simple_gla_with_grouped_q_k():
    """q, k shared by groups of heads reach the kernel expanded per head: equal to the grouped torch path."""
    gen = torch.Generator().manual_seed(11)
    T, K, V, heads = 40, 16, 16, 4
    q, k = torch.randn(B, T, 2, K, generator=gen), torch.randn(B, T, 2, K, generator=gen)
    v, g = torch.randn(B, T, heads, V, generator=gen), -torch.rand(B, T, heads, generator=gen)
    state = torch.randn(B, heads, K, V, generator=gen).requires_grad_()
    args = [x.requires_grad_() for x in (q, k, v, g)]
    o, final, grads = outputs_and_grads(ops.chunk_simple_gla, args, state, 16, backend="triton")
    o_ref, final_ref, grads_ref = outputs_and_grads(ops.chunk_simple_gla, args, state, 16, backend="torch")
    assert rel_err(o, o_ref) <= 1e-5 and rel_err(final, final_ref) <= 1e-5
    for grad, grad_ref in zip(grads, grads_ref, strict=True):
        assert grad.shape == grad_ref.shape and rel_err(grad, grad_ref) <= 1e-5
