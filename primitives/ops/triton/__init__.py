"""Triton kernels of the chunked operators. Importing this package never imports triton: `TRITON_AVAILABLE`
says whether triton is installed; the kernel modules import it and are loaded only on use (`kernel`).

`verify.py` holds the first-use check that the auto path runs before trusting a kernel (see
`primitives/ops/dispatch.py`)."""

import importlib
import importlib.util

TRITON_AVAILABLE = importlib.util.find_spec("triton") is not None

# operator -> the module here holding `<operator>_triton`
KERNEL_MODULES = {"chunk_simple_gla": "simple_gla", "chunk_gla": "gla", "chunk_delta_rule": "gated_delta_rule",
                  "chunk_gated_delta_rule": "gated_delta_rule"}


def kernel(operator: str):
    """The Triton form of `operator` ("chunk_gla", ...), same signature as its PyTorch form; imports triton."""
    module = importlib.import_module(f"{__name__}.{KERNEL_MODULES[operator]}")
    return getattr(module, f"{operator}_triton")
