"""The CUDA kernels of the chunked operators: flash-linear-attention's (`fla-core`, the optional extra `.[cuda]`),
reached through `fla_adapter.py`, which maps Composer's conventions onto fla's. Importing this package never
imports fla or triton: `FLA_AVAILABLE` says whether fla is installed; `kernel(operator)` loads it on use.

`verify.py` holds the first-use check that the auto path runs before trusting a kernel (see
`primitives/ops/dispatch.py`)."""

import importlib.util

FLA_AVAILABLE = importlib.util.find_spec("fla") is not None


def kernel(operator: str):
    """fla's kernel of `operator` ("chunk_gla", ...), with the signature of its PyTorch form; imports fla."""
    from primitives.ops.kernels.fla_adapter import fla_form

    return fla_form(operator)
