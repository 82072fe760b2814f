"""Triton kernels of the chunked operators. Importing this package never fails: `TRITON_AVAILABLE` says
whether triton imports; the kernel modules themselves import triton and are loaded only on use."""

try:
    import triton  # noqa: F401

    TRITON_AVAILABLE = True
except ImportError:
    TRITON_AVAILABLE = False
