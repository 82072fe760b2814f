"""The auto path's first-use check of a kernel (COMPOSER_KERNELS=check, the default; see dispatch.py).

fla's kernels are not tested here on every GPU and compiler version. So before a kernel
first serves a *call class* on the auto path, it runs once on a small input of that class and is compared with
the PyTorch path run in float64 on the same input: the output, the final state when asked, and, when the call
needs grad, the gradient of every input. A compile error, a runtime error, or a relative error (max |kernel -
reference| / max |reference| per tensor, see RELATIVE_FLOOR; non-finite counts as infinite) above the
tolerance of the call's dtypes sends that class to the PyTorch path for the rest of the process, with one
`KernelFallbackWarning` naming the operator and the reason. Verdicts are cached per process in `VERDICTS`.

A call class is what can make a kernel compile or behave differently: operator, device, dtypes, head dims,
chunk size, chunk-count class (Triton specializes integer arguments equal to 1 or divisible by 16, so N = 1,
N % 16 == 0 and other chunk counts compile different variants), initial state given, final state asked, grad
needed. The check's input has two heads, a chunk count of the call's class and a length that is not
a multiple of the chunk (so the padding runs too). Its random numbers come from a private generator: the
check leaves the caller's RNG state alone.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

# each operator's tensor arguments, in order
OPERATOR_INPUTS = {"chunk_simple_gla": ("q", "k", "v", "g"), "chunk_gla": ("q", "k", "v", "g"),
                   "chunk_delta_rule": ("q", "k", "v", "beta"),
                   "chunk_gated_delta_rule": ("q", "k", "v", "g", "beta")}
# the largest relative error a kernel may have against the float64 reference, by the loosest input dtype: the
# kernels compute in fp32 (tf32 dots for 16-bit inputs), outputs and gradients come back in the input dtype
TOLERANCE = {torch.float64: 1e-3, torch.float32: 1e-3, torch.float16: 1e-2, torch.bfloat16: 4e-2}
# errors are relative to each tensor's largest magnitude, but never to less than this fraction of the largest
# magnitude among all the compared tensors: a gradient that is zero in exact arithmetic (that of the log gates at
# T = 1 without an initial state) holds only rounding noise of the terms that cancel in it
RELATIVE_FLOOR = 0.1
CHECK_CHUNKS = {"1": 1, "16n": 16, "other": 3}  # chunk count of the check's input, per chunk-count class


class KernelFallbackWarning(RuntimeWarning):
    """A kernel failed its first-use check; the auto path runs PyTorch for that call class."""


@dataclass(frozen=True)
class CallClass:
    operator: str
    device: str
    dtypes: tuple[torch.dtype, ...]  # of the operator's tensors
    state_dtype: torch.dtype | None  # of the initial state; None when none is given
    head_dims: tuple[int, int]  # K, V
    chunk_size: int
    chunks: str  # "1", "16n" or "other" (see CHECK_CHUNKS)
    final_state: bool
    grad: bool

    @classmethod
    def of(cls, operator: str, tensors: Sequence[Tensor], initial_state: Tensor | None, final_state: bool,
           chunk_size: int) -> CallClass:
        q, v = tensors[0], tensors[2]
        n_chunks = -(-q.shape[1] // chunk_size)
        needs_grad = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (*tensors, initial_state))
        return cls(operator, str(q.device), tuple(t.dtype for t in tensors),
                   initial_state.dtype if initial_state is not None else None, (q.shape[-1], v.shape[-1]),
                   chunk_size, chunk_class(n_chunks), final_state, needs_grad)

    def describe(self) -> str:
        dtypes = sorted({str(d).removeprefix("torch.") for d in self.dtypes})
        return (f"{self.device}, {'/'.join(dtypes)}, K={self.head_dims[0]} V={self.head_dims[1]}, "
                f"chunk {self.chunk_size}, chunk count class {self.chunks}, "
                f"{'with' if self.state_dtype is not None else 'no'} initial state, "
                f"{'forward+backward' if self.grad else 'forward'}")


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str


VERDICTS: dict[CallClass, Verdict] = {}
_LOCK = threading.Lock()


def chunk_class(n_chunks: int) -> str:
    return "1" if n_chunks == 1 else "16n" if n_chunks % 16 == 0 else "other"


def tolerance(dtypes: Sequence[torch.dtype]) -> float:
    return max(TOLERANCE.get(d, max(TOLERANCE.values())) for d in dtypes)


def sample_inputs(operator: str, batch: int, length: int, heads: int, head_dims: tuple[int, int],
                  dtypes: Sequence[torch.dtype], device: torch.device | str, state_dtype: torch.dtype | None,
                  seed: int = 0) -> tuple[list[Tensor], Tensor | None]:
    """Random inputs of `operator` (q, k, v, gates) in `dtypes`, and an initial state when `state_dtype` is
    given: q, v normal; k L2-normalised (as the delta rule needs); log gates in [-1, 0]; beta in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    K, V = head_dims
    B, T, H = batch, length, heads
    make = {
        "q": lambda: torch.randn(B, T, H, K, generator=gen),
        "k": lambda: F.normalize(torch.randn(B, T, H, K, generator=gen), dim=-1),
        "v": lambda: torch.randn(B, T, H, V, generator=gen),
        "g": lambda: -torch.rand((B, T, H, K) if operator == "chunk_gla" else (B, T, H), generator=gen),
        "beta": lambda: torch.rand(B, T, H, generator=gen),
    }
    tensors = [make[name]().to(device, dtype) for name, dtype in zip(OPERATOR_INPUTS[operator], dtypes, strict=True)]
    state = None
    if state_dtype is not None:
        state = torch.randn(B, H, K, V, generator=gen).to(device, state_dtype)
    return tensors, state


def _cotangent(x: Tensor) -> Tensor:
    gen = torch.Generator().manual_seed(x.numel())
    return torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x.device)


def run_form(form: Callable, tensors: Sequence[Tensor], state: Tensor | None, scale: float | None,
             final_state: bool, chunk_size: int, grad: bool) -> list[Tensor]:
    """The output, the final state (if asked) and, with `grad`, the gradient of every input (state last) of
    one call of `form`, for a fixed random weighting of the outputs."""
    with torch.autocast(device_type=tensors[0].device.type, enabled=False), torch.set_grad_enabled(grad):
        leaves = [t.detach().requires_grad_(grad) for t in tensors]
        if state is not None:
            leaves.append(state.detach().requires_grad_(grad))
        o, final = form(*leaves[:len(tensors)], scale, leaves[len(tensors)] if state is not None else None,
                        final_state, chunk_size)
        outputs = [o, final] if final_state else [o]
        if grad:
            loss = sum((x.double() * _cotangent(x)).sum() for x in outputs)
            outputs += torch.autograd.grad(loss, leaves)
    return [x.detach() for x in outputs]


def output_names(operator: str, final_state: bool, grad: bool, initial_state: bool) -> list[str]:
    names = ["output"] + (["final_state"] if final_state else [])
    if grad:
        names += [f"grad_{n}" for n in OPERATOR_INPUTS[operator]] + (["grad_initial_state"] if initial_state else [])
    return names


def magnitude(x: Tensor) -> float:
    return x.double().abs().max().item() if x.numel() else 0.0


def relative_error(got: Tensor, want: Tensor, floor: float = 0.0) -> float:
    """max |got - want| / max(max |want|, floor); infinite for a shape mismatch or a non-finite value."""
    if got.shape != want.shape:
        return float("inf")
    if want.numel() == 0:
        return 0.0
    err = (got.double() - want.double()).abs().max().item() / max(magnitude(want), floor, 1e-30)
    return err if err == err and err != float("inf") else float("inf")


def kernel_errors(operator: str, kernel: Callable, reference: Callable, tensors: Sequence[Tensor],
                  state: Tensor | None, scale: float | None, final_state: bool, chunk_size: int,
                  grad: bool) -> dict[str, float]:
    """Relative error of each output (and gradient) of `kernel` against `reference` run in float64."""
    got = run_form(kernel, tensors, state, scale, final_state, chunk_size, grad)
    want = run_form(reference, [t.double() for t in tensors], state.double() if state is not None else None,
                    scale, final_state, chunk_size, grad)
    names = output_names(operator, final_state, grad, state is not None)
    floor = RELATIVE_FLOOR * max(magnitude(w) for w in want)
    return {name: relative_error(a, b, floor) for name, a, b in zip(names, got, want, strict=True)}


def check(call: CallClass, kernel_factory: Callable[[], Callable], reference: Callable,
          scale: float | None) -> Verdict:
    """Run the kernel once on a small input of `call`'s class against the PyTorch path."""
    length = max(1, CHECK_CHUNKS[call.chunks] * call.chunk_size - 3)
    tensors, state = sample_inputs(call.operator, 1, length, 2, call.head_dims, call.dtypes,
                                   call.device, call.state_dtype)
    try:
        errors = kernel_errors(call.operator, kernel_factory(), reference, tensors, state, scale,
                               call.final_state, call.chunk_size, call.grad)
    except Exception as err:  # a compile or launch error of the kernel: any failure means "do not use it"
        message = " ".join(str(err).split())
        return Verdict(False, f"{type(err).__name__}: {message[:300]}")
    limit = tolerance(call.dtypes)
    over = [f"{name} {err:.3g}" for name, err in errors.items() if err > limit]
    if over:
        return Verdict(False, f"mismatch: relative error above {limit:g} in {', '.join(over)}")
    return Verdict(True, f"max relative error {max(errors.values()):.3g} <= {limit:g}")


def kernel_passes(operator: str, args: tuple, kernel_factory: Callable[[], Callable], reference: Callable) -> bool:
    """Whether the auto path may run the kernel for this call (args as the operator's positional arguments):
    the cached verdict of its call class, checked now if it is the first of its class."""
    *tensors, scale, initial_state, final_state, chunk_size = args
    call = CallClass.of(operator, tensors, initial_state, final_state, chunk_size)
    verdict = VERDICTS.get(call)
    if verdict is None:
        with _LOCK:
            verdict = VERDICTS.get(call)
            if verdict is None:
                verdict = check(call, kernel_factory, reference, scale)
                VERDICTS[call] = verdict
                if not verdict.ok:
                    warnings.warn(f"fla kernel {operator} failed its first-use check ({call.describe()}): "
                                  f"{verdict.reason}. Using the PyTorch path for such calls in this process "
                                  "(COMPOSER_KERNELS=trust skips the check, COMPOSER_KERNELS=off never uses "
                                  "the kernels).", KernelFallbackWarning, stacklevel=2)
    return verdict.ok
