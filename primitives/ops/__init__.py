"""Functional sequence operators (flash-linear-attention layout: [B, T, H, D], log-space gates).

Three forms of each recurrence: `naive_*` (step-by-step reference), `chunk_*_torch` (chunked PyTorch,
one file per operator) and, for CUDA, fla's kernels through `primitives.ops.kernels`. The `chunk_*` names
dispatch between the last two (a kernel is checked against PyTorch on its first use; COMPOSER_KERNELS), and
`simple_gla`, `gla`, `delta_rule`, `gated_delta_rule` between the step and chunked forms by length (see
`dispatch.py`, which also holds the chunk lengths `CHUNK_SIZE`, `DELTA_RULE_CHUNK_SIZE` and `DECODE_MAX`).
`chunk_mlstm` has only its PyTorch form. Two operators outside that scheme, each with its reference in
`naive.py`: `selective_scan` (Mamba-1's scan with the discretisation fused in, blocked in time) and
`causal_conv1d` (the short depthwise convolution, channels-last; `F.conv1d` on CUDA).
Jet-Nemotron's dynamic convolution (`dynamic_conv.py`) keeps its step reference and shifted form.
KDA (`kda.py`) and RWKV-7 (`rwkv7.py`) keep their step reference, chunked form and length dispatch in one file
each; Hyena's long convolution (`long_conv.py`) its direct and FFT forms; sLSTM (`slstm.py`), whose recurrence
has no parallel form, its step reference and training loop.
"""

from primitives.ops.chunked_delta_rule import chunk_delta_rule_torch, chunk_gated_delta_rule_torch
from primitives.ops.chunked_gla import chunk_gla_torch
from primitives.ops.chunked_mlstm import chunk_mlstm
from primitives.ops.chunked_simple_gla import chunk_simple_gla_torch
from primitives.ops.dispatch import (
    CHUNK_SIZE,
    DECODE_MAX,
    DELTA_RULE_CHUNK_SIZE,
    chunk_delta_rule,
    chunk_gated_delta_rule,
    chunk_gla,
    chunk_simple_gla,
    delta_rule,
    gated_delta_rule,
    gla,
    simple_gla,
)
from primitives.ops.dynamic_conv import dynamic_conv, naive_dynamic_conv
from primitives.ops.kda import chunk_kda_torch, kda, naive_kda
from primitives.ops.long_conv import direct_causal_conv, fft_causal_conv, long_conv
from primitives.ops.naive import (
    naive_causal_conv1d,
    naive_delta_rule,
    naive_gated_delta_rule,
    naive_gla,
    naive_mlstm,
    naive_scan_diagonal,
    naive_selective_scan,
    naive_simple_gla,
)
from primitives.ops.rwkv7 import chunk_rwkv7_torch, naive_rwkv7, rwkv7
from primitives.ops.scan_diagonal import scan_diagonal
from primitives.ops.selective_scan import materialized_selective_scan, selective_scan
from primitives.ops.short_conv import causal_conv1d
from primitives.ops.slstm import naive_slstm, slstm_scan

__all__ = [
    "CHUNK_SIZE",
    "DECODE_MAX",
    "DELTA_RULE_CHUNK_SIZE",
    "causal_conv1d",
    "chunk_delta_rule",
    "chunk_delta_rule_torch",
    "chunk_gated_delta_rule",
    "chunk_gated_delta_rule_torch",
    "chunk_gla",
    "chunk_gla_torch",
    "chunk_kda_torch",
    "chunk_mlstm",
    "chunk_rwkv7_torch",
    "chunk_simple_gla",
    "chunk_simple_gla_torch",
    "delta_rule",
    "direct_causal_conv",
    "dynamic_conv",
    "fft_causal_conv",
    "gated_delta_rule",
    "gla",
    "kda",
    "long_conv",
    "materialized_selective_scan",
    "naive_causal_conv1d",
    "naive_delta_rule",
    "naive_dynamic_conv",
    "naive_gated_delta_rule",
    "naive_gla",
    "naive_kda",
    "naive_mlstm",
    "naive_rwkv7",
    "naive_scan_diagonal",
    "naive_selective_scan",
    "naive_simple_gla",
    "naive_slstm",
    "rwkv7",
    "scan_diagonal",
    "selective_scan",
    "simple_gla",
    "slstm_scan",
]
