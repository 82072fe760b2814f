"""Composer's chunked operators as calls of flash-linear-attention's kernels (`fla-core`, `pip install -e .[cuda]`).

Every layer of the linear-attention family reaches one of four operators (primitives/ops/dispatch.py), and each
maps onto the fla function of the same recurrence. The mapping, explicitly:

  Composer operator          layers                                   fla (fla.ops)
  chunk_simple_gla           linear_attention, retnet, mamba2 (SSD),  chunk_simple_gla(q, k, v, g=g)
                             lightning_attention
  chunk_gla                  gla, hgrn2                                chunk_gla(q, k, v, g)
  chunk_delta_rule           deltanet                                  chunk_delta_rule(q, k, v, beta)
  chunk_gated_delta_rule     gated_deltanet                            chunk_gated_delta_rule(q, k, v, g, beta)

Conventions, the same on both sides unless said:
- head layout: q, k `[B, T, H, K]`, v `[B, T, H, V]` (fla's "time before heads" layout; fla has no head_first
  argument since 0.5); fla's kernels want contiguous inputs, so each is made contiguous.
- state: `[B, H, K, V]`, K before V (fla's `state_v_first=False`, passed explicitly); Composer keeps its states in
  float32, so an initial state goes in as float32 and the final state comes back as float32.
- scale: Composer's `scale=None` means K ** -0.5, as fla's; the adapter passes the number (hgrn2, mamba2,
  lightning_attention and linear_attention's unnormalised form pass 1.0).
- gates: log-space decays, g <= 0 (S_t = exp(g_t) S_{t-1} + ...); per head `[B, T, H]` for simple_gla and the
  gated delta rule, per key channel `[B, T, H, K]` for gla. Retnet's fixed decay log(1 - 2^(-5-h)) arrives as
  such a per-token g (not as fla's `g_gamma`), hgrn2's forget gate as gla's g with k = 1 - f computed by the layer,
  and Mamba-2's dt A as simple_gla's g with k = B, v = dt x, q = C (the SSD duality, primitives/ssm.py).
- delta rules: k is L2-normalised and beta squashed by the layer (fla's `use_qk_l2norm_in_kernel=False`,
  `use_beta_sigmoid_in_kernel=False`); g is already in log space (fla's default, without `use_gate_in_kernel`);
  fla's argument order is (g, beta), Composer's too.
- chunk size: fla picks its own (64, Composer's CHUNK_SIZE); the result does not depend on it but for rounding.
- dtype: fla's kernels take q, k, v in one dtype (Mamba-2's v = dt x may be float32 beside bfloat16 q, k): k and v
  are cast to q's; fla returns the output in q's dtype, Composer in v's: the output is cast to v's dtype. fla's
  delta rule has no float32 kernel: such calls are `unsupported` and run the PyTorch form (the auto path, without a
  warning; backend="fla" raises).

mlstm has no fla kernel (fla-core 0.6): it keeps its PyTorch chunked form on every device, as do kda, rwkv7,
hyena and slstm, whose fla counterparts use other conventions and are not mapped here yet.

`call(operator, fla_function, ...)` is the whole adapter; `fla_form(operator)` binds it to fla's function (imports
fla). The CPU tests run `call` against fla's own PyTorch references (tests/test_fla_adapter.py): fla's Triton
kernels cannot run without a GPU, its layout can.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable

import torch

Tensor = torch.Tensor

# Composer operator -> (fla module, function, names of the operator's tensors in fla's keyword arguments)
FLA_FUNCTIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "chunk_simple_gla": ("fla.ops.simple_gla", "chunk_simple_gla", ("q", "k", "v", "g")),
    "chunk_gla": ("fla.ops.gla", "chunk_gla", ("q", "k", "v", "g")),
    "chunk_delta_rule": ("fla.ops.delta_rule", "chunk_delta_rule", ("q", "k", "v", "beta")),
    "chunk_gated_delta_rule": ("fla.ops.gated_delta_rule", "chunk_gated_delta_rule", ("q", "k", "v", "g", "beta")),
}
OPERATOR_TENSORS = {operator: len(names) for operator, (_, _, names) in FLA_FUNCTIONS.items()}
# the options of fla's functions that must stay off: Composer's layers do these steps themselves
FLA_FIXED_OPTIONS: dict[str, dict[str, bool]] = {
    "chunk_simple_gla": {"state_v_first": False},
    "chunk_gla": {"state_v_first": False},
    "chunk_delta_rule": {"use_qk_l2norm_in_kernel": False},
    "chunk_gated_delta_rule": {"state_v_first": False, "use_qk_l2norm_in_kernel": False,
                               "use_beta_sigmoid_in_kernel": False},
}


def unsupported(operator: str, tensors: tuple[Tensor, ...]) -> str | None:
    """Why fla has no kernel for this call (None: it has one)."""
    if operator == "chunk_delta_rule" and tensors[0].dtype == torch.float32:
        return "fla's chunk_delta_rule has no float32 kernel (bfloat16 or float16 only)"
    return None


def fla_arguments(operator: str, tensors: tuple[Tensor, ...], scale: float | None,
                  initial_state: Tensor | None, output_final_state: bool) -> dict[str, object]:
    """The keyword arguments of fla's function for one call of Composer's `operator`."""
    _, _, names = FLA_FUNCTIONS[operator]
    if len(tensors) != len(names):
        raise ValueError(f"{operator} takes {len(names)} tensors ({', '.join(names)}), got {len(tensors)}")
    q = tensors[0]
    kwargs: dict[str, object] = {name: t.contiguous() for name, t in zip(names, tensors, strict=True)}
    for name in ("k", "v"):
        kwargs[name] = kwargs[name].to(q.dtype)
    kwargs["scale"] = float(q.shape[-1] ** -0.5 if scale is None else scale)
    kwargs["initial_state"] = None if initial_state is None else initial_state.float().contiguous()
    kwargs["output_final_state"] = output_final_state
    kwargs.update(FLA_FIXED_OPTIONS[operator])
    return kwargs


def from_fla(output: Tensor, final_state: Tensor | None, v: Tensor,
             output_final_state: bool) -> tuple[Tensor, Tensor | None]:
    """fla's (output, final state) as Composer's: the output in v's dtype, the state in float32 (or None)."""
    state = final_state.float() if output_final_state and final_state is not None else None
    return output.to(v.dtype), state


def call(operator: str, fla_function: Callable, *tensors: Tensor, scale: float | None = None,
         initial_state: Tensor | None = None, output_final_state: bool = False,
         chunk_size: int = 64) -> tuple[Tensor, Tensor | None]:
    """Composer's `operator` (same arguments as its PyTorch form) computed by `fla_function`."""
    output, final_state = fla_function(**fla_arguments(operator, tensors, scale, initial_state, output_final_state))
    return from_fla(output, final_state, tensors[2], output_final_state)


@functools.cache
def fla_function(operator: str) -> Callable:
    """fla's function for `operator` (imports fla)."""
    module, name, _ = FLA_FUNCTIONS[operator]
    return getattr(importlib.import_module(module), name)


def fla_form(operator: str) -> Callable:
    """`operator` on fla's kernel, with the signature of its PyTorch form (positional tensors, then scale,
    initial_state, output_final_state, chunk_size)."""
    function = fla_function(operator)
    count = OPERATOR_TENSORS[operator]

    def form(*args: object) -> tuple[Tensor, Tensor | None]:
        tensors, (scale, initial_state, output_final_state, chunk_size) = args[:count], args[count:]
        reason = unsupported(operator, tensors)
        if reason is not None:
            raise ValueError(reason)
        return call(operator, function, *tensors, scale=scale, initial_state=initial_state,
                    output_final_state=output_final_state, chunk_size=chunk_size)

    return form
