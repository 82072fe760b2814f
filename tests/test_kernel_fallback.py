"""The auto path's first-use check of the fla kernels (primitives/ops/kernels/verify.py), on CPU.

CPU tensors never take the auto kernel path, so these tests declare the CPU a kernel device
(`dispatch.kernel_device`) and stand in for the kernels through `dispatch.kernel_form`: a kernel with wrong
values, one that raises, one wrong only in its backward, and a correct one. The adapter's mapping onto fla is
held equal to the PyTorch forms in tests/test_fla_adapter.py. Nothing here imports fla or triton.
"""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from composer import build_model, load_spec
from primitives import ops
from primitives.ops import dispatch
from primitives.ops.kernels import verify
from primitives.ops.kernels.verify import KernelFallbackWarning

ROOT = Path(__file__).resolve().parents[1]
OPERATORS = ["chunk_simple_gla", "chunk_gla", "chunk_delta_rule", "chunk_gated_delta_rule"]


class FakeKernels:
    """Stands in for `dispatch.kernel_form`: counts how often a kernel is fetched and called."""

    def __init__(self, make_kernel):
        self.make_kernel = make_kernel
        self.fetched = 0
        self.calls = 0

    def __call__(self, operator):
        self.fetched += 1
        kernel = self.make_kernel(operator)

        def counted(*args):
            self.calls += 1
            return kernel(*args)
        return counted


def wrong_values(operator):
    def kernel(*args):
        o, final = dispatch.TORCH_FORMS[operator](*args)
        return o * 1.5 + 0.1, final
    return kernel


def raising(operator):
    def kernel(*args):
        raise RuntimeError("CompilationError: out of resources: shared memory")
    return kernel


def correct(operator):
    return dispatch.TORCH_FORMS[operator]


class _DoubleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return 2 * grad


def wrong_backward(operator):
    def kernel(q, *args):
        return dispatch.TORCH_FORMS[operator](_DoubleGrad.apply(q), *args)
    return kernel


@pytest.fixture
def kernels(monkeypatch):
    """Install fake kernels (a factory per test) with the CPU as a kernel device and fresh verdicts."""
    monkeypatch.delenv("COMPOSER_KERNELS", raising=False)
    monkeypatch.setattr(dispatch, "kernel_device", lambda x: True)
    monkeypatch.setattr(dispatch, "kernel_unsupported", lambda operator, tensors: None)
    monkeypatch.setattr(verify, "VERDICTS", {})

    def install(make_kernel):
        fake = FakeKernels(make_kernel)
        monkeypatch.setattr(dispatch, "kernel_form", fake)
        return fake
    return install


def inputs(operator, T=40, K=16, V=24, with_state=True, grad=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, v = torch.randn(2, T, 3, K, generator=gen), torch.randn(2, T, 3, V, generator=gen)
    k = F.normalize(torch.randn(2, T, 3, K, generator=gen), dim=-1)
    gates = {"chunk_simple_gla": [-torch.rand(2, T, 3, generator=gen)],
             "chunk_gla": [-torch.rand(2, T, 3, K, generator=gen)],
             "chunk_delta_rule": [torch.rand(2, T, 3, generator=gen)],
             "chunk_gated_delta_rule": [-torch.rand(2, T, 3, generator=gen), torch.rand(2, T, 3, generator=gen)]}
    tensors = [x.requires_grad_(grad) for x in (q, k, v, *gates[operator])]
    state = torch.randn(2, 3, K, V, generator=gen) if with_state else None
    return tensors, state


def call(operator, tensors, state, backend="auto", chunk_size=16):
    fn = getattr(ops, operator)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        o, final = fn(*tensors, initial_state=state, output_final_state=True, chunk_size=chunk_size, backend=backend)
    return o, final, [w for w in caught if issubclass(w.category, KernelFallbackWarning)]


@pytest.mark.parametrize("operator", OPERATORS)
def test_wrong_kernel_falls_back_to_torch_with_one_warning(kernels, operator):
    fake = kernels(wrong_values)
    tensors, state = inputs(operator)
    o, final, warned = call(operator, tensors, state)
    o_ref, final_ref, _ = call(operator, tensors, state, backend="torch")
    assert torch.equal(o, o_ref) and torch.equal(final, final_ref)
    assert len(warned) == 1
    message = str(warned[0].message)
    assert f"fla kernel {operator} failed" in message and "mismatch: relative error above 0.001 in output " in message
    assert fake.fetched == 1 and fake.calls == 1  # the check ran it once; the call itself did not
    o_again, _, warned_again = call(operator, tensors, state)
    assert torch.equal(o_again, o_ref)
    assert warned_again == [] and fake.fetched == 1 and fake.calls == 1  # cached: not checked again
    [verdict] = verify.VERDICTS.values()
    assert not verdict.ok


def test_raising_kernel_falls_back_and_names_the_error(kernels):
    fake = kernels(raising)
    tensors, state = inputs("chunk_gla")
    o, _, warned = call("chunk_gla", tensors, state)
    assert torch.equal(o, call("chunk_gla", tensors, state, backend="torch")[0])
    assert len(warned) == 1
    assert "chunk_gla" in str(warned[0].message)
    assert "RuntimeError: CompilationError: out of resources" in str(warned[0].message)
    o.sum().backward()  # the fallback is differentiable as usual
    assert all(t.grad is not None for t in tensors)
    call("chunk_gla", tensors, state)
    assert fake.fetched == 1


def test_backward_is_checked_when_the_call_needs_grad(kernels):
    """A kernel wrong only in its backward passes a forward-only call class and fails the grad one."""
    fake = kernels(wrong_backward)
    tensors, state = inputs("chunk_simple_gla", grad=False)
    _, _, warned = call("chunk_simple_gla", tensors, state)
    assert warned == [] and fake.calls == 2  # checked, then used
    tensors, state = inputs("chunk_simple_gla", grad=True)
    o, _, warned = call("chunk_simple_gla", tensors, state)
    assert len(warned) == 1 and "relative error above 0.001 in grad_q " in str(warned[0].message)
    assert fake.calls == 3  # the check only: the call itself ran torch
    assert [v.ok for v in verify.VERDICTS.values()] == [True, False]


def test_correct_kernel_passes_the_check_and_is_used(kernels):
    fake = kernels(correct)
    tensors, state = inputs("chunk_gated_delta_rule")
    o, final, warned = call("chunk_gated_delta_rule", tensors, state)
    assert warned == [] and fake.calls == 2  # the check, then the call
    [verdict] = verify.VERDICTS.values()
    assert verdict.ok and "max relative error" in verdict.reason
    call("chunk_gated_delta_rule", tensors, state)
    assert fake.calls == 3


def test_one_check_per_call_class(kernels):
    """Length within a chunk-count class, batch and heads do not make a new class; head dims, the chunk-count
    class, the initial state, the dtype and grad do."""
    fake = kernels(correct)
    op = "chunk_simple_gla"
    for T in (40, 33, 80):  # 3, 3 and 5 chunks of 16: class "other"
        call(op, *inputs(op, T=T))
    assert len(verify.VERDICTS) == 1
    call(op, *inputs(op, T=16))  # one chunk
    call(op, *inputs(op, T=256))  # 16 chunks
    call(op, *inputs(op, K=32))
    call(op, *inputs(op, with_state=False))
    call(op, *inputs(op, grad=False))
    tensors, state = inputs(op)
    call(op, [t.detach().double() for t in tensors], state.double())
    assert len(verify.VERDICTS) == 7 and fake.calls == 7 + 9  # 7 checks, 9 calls served by the kernel
    assert {c.chunks for c in verify.VERDICTS} == {"1", "16n", "other"}


def test_check_leaves_the_callers_rng_alone(kernels):
    kernels(correct)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    call("chunk_gla", *inputs("chunk_gla"))
    assert torch.equal(torch.rand(3), expected)


def test_env_off_never_uses_a_kernel_and_trust_skips_the_check(kernels, monkeypatch):
    fake = kernels(wrong_values)
    tensors, state = inputs("chunk_gla")
    o_ref = call("chunk_gla", tensors, state, backend="torch")[0]
    monkeypatch.setenv("COMPOSER_KERNELS", "off")
    o, _, warned = call("chunk_gla", tensors, state)
    assert torch.equal(o, o_ref) and warned == [] and fake.fetched == 0
    monkeypatch.setenv("COMPOSER_KERNELS", "trust")
    o, _, warned = call("chunk_gla", tensors, state)
    assert fake.calls == 1 and warned == [] and verify.VERDICTS == {}
    assert not torch.allclose(o, o_ref)  # trusted: the (wrong) kernel ran unchecked
    monkeypatch.setenv("COMPOSER_KERNELS", "Check")
    o, _, warned = call("chunk_gla", tensors, state)
    assert torch.equal(o, o_ref) and len(warned) == 1
    monkeypatch.setenv("COMPOSER_KERNELS", "sometimes")  # a typo warns and means "check"
    with pytest.warns(UserWarning, match="COMPOSER_KERNELS='sometimes' is not one of off, check, trust"):
        o, _ = ops.chunk_gla(*tensors, initial_state=state, output_final_state=True, chunk_size=16)
    assert torch.equal(o, o_ref) and len(verify.VERDICTS) == 1  # the verdict from "check" above holds


def test_explicit_fla_backend_stays_strict(kernels):
    """backend="fla" is how the kernel tests test the kernel: no check, no fallback."""
    kernels(raising)
    tensors, state = inputs("chunk_delta_rule")
    with pytest.raises(RuntimeError, match="CompilationError"):
        call("chunk_delta_rule", tensors, state, backend="fla")
    kernels(wrong_values)
    o, _, warned = call("chunk_delta_rule", tensors, state, backend="fla")
    assert warned == [] and verify.VERDICTS == {}
    assert not torch.allclose(o, call("chunk_delta_rule", tensors, state, backend="torch")[0])


def test_cpu_tensors_never_reach_the_check(monkeypatch):
    monkeypatch.setattr(verify, "VERDICTS", {})
    fake = FakeKernels(raising)
    monkeypatch.setattr(dispatch, "kernel_form", fake)
    o, _, warned = call("chunk_gla", *inputs("chunk_gla"))
    assert warned == [] and fake.fetched == 0 and verify.VERDICTS == {}
    assert not dispatch.kernel_device(torch.zeros(1))


def test_a_model_trains_through_a_broken_kernel(kernels):
    """The user's view: a hybrid model whose kernels all raise still trains, with one warning per class."""
    kernels(raising)
    spec = load_spec({"d_model": 32, "vocab_size": 16, "max_seq_len": 80,
                      "layers": ["gla", "mlp", "gated_deltanet", "mlp", "deltanet", "retnet"]})
    model = build_model(spec)
    tokens = torch.randint(0, 16, (2, 70))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            loss = F.cross_entropy(model(tokens).logits.flatten(0, 1), tokens.flatten())
            loss.backward()
    warned = sorted(str(w.message).split()[2] for w in caught if issubclass(w.category, KernelFallbackWarning))
    assert warned == ["chunk_delta_rule", "chunk_gated_delta_rule", "chunk_gla", "chunk_simple_gla"]
    assert torch.isfinite(loss) and all(not v.ok for v in verify.VERDICTS.values())


def test_gpu_benchmark_without_cuda_says_so_and_writes_nothing(tmp_path):
    out = tmp_path / "gpu.json"
    result = subprocess.run([sys.executable, "benchmarks/bench_gpu.py", "--out", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no CUDA device" in result.stdout
    assert not out.exists()


def test_a_call_the_kernel_does_not_serve_takes_the_pytorch_path_without_a_warning(monkeypatch):
    """fla's delta rule has no float32 kernel: the auto path runs PyTorch, never fetching or checking a kernel."""
    from primitives.ops.kernels.fla_adapter import unsupported

    monkeypatch.setattr(verify, "VERDICTS", {})
    monkeypatch.setattr(dispatch, "kernel_device", lambda x: True)
    fake = FakeKernels(raising)
    monkeypatch.setattr(dispatch, "kernel_form", fake)
    tensors, state = inputs("chunk_delta_rule")
    assert "no float32 kernel" in unsupported("chunk_delta_rule", tuple(tensors))
    assert unsupported("chunk_delta_rule", tuple(t.bfloat16() for t in tensors)) is None
    assert unsupported("chunk_gated_delta_rule", tuple(inputs("chunk_gated_delta_rule")[0])) is None
    o, _, warned = call("chunk_delta_rule", tensors, state)
    assert warned == [] and fake.fetched == 0 and verify.VERDICTS == {}
    torch.testing.assert_close(o, call("chunk_delta_rule", tensors, state, backend="torch")[0])
