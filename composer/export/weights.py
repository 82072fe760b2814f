"""Model weights as safetensors: a torch-only reader and writer, and tied-weight handling.

The format is an 8-byte little-endian header length, a JSON header (dtype, shape, byte offsets per
tensor, optional `__metadata__`), then the raw little-endian data. The reader needs only json and torch,
so the exporter inlines this module into the standalone `modeling.py`. No pickle is ever involved.
"""

from __future__ import annotations

import ctypes
import json
import struct
import sys

import torch
from torch import nn

SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
MAX_HEADER_BYTES = 100_000_000


def read_safetensors(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors by name, metadata) from a .safetensors file, with json + torch only."""
    if sys.byteorder != "little":
        raise RuntimeError("this reader supports little-endian machines only")
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: not a safetensors file (too short)")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if header_len > min(MAX_HEADER_BYTES, len(blob) - 8):
        raise ValueError(f"{path}: not a safetensors file (header length {header_len})")
    header = json.loads(blob[8:8 + header_len].decode("utf-8"))
    data = bytearray(blob[8 + header_len:])
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    for name, info in header.items():
        dtype = SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']!r}")
        start, end = info["data_offsets"]
        shape = [int(n) for n in info["shape"]]
        count = 1
        for n in shape:
            count *= n
        item_size = torch.empty((), dtype=dtype).element_size()
        if not 0 <= start <= end <= len(data) or end - start != count * item_size:
            raise ValueError(f"{path}: tensor {name!r} has inconsistent offsets")
        flat = torch.frombuffer(data, dtype=dtype, count=count, offset=start) if count else torch.empty(
            0, dtype=dtype)
        tensors[name] = flat.reshape(shape)
    return tensors, metadata


def write_safetensors(path: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write tensors (moved to CPU, made contiguous) as a .safetensors file."""
    names = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    chunks, offset = [], 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").clone(memory_format=torch.contiguous_format)
        raw = ctypes.string_at(tensor.data_ptr(), tensor.numel() * tensor.element_size()) if tensor.numel() else b""
        header[name] = {"dtype": names[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in chunks:
            f.write(raw)


def unique_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each tied tensor once (the first name it appears under)."""
    seen: set[tuple[int, tuple[int, ...]]] = set()
    out = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr() + tensor.storage_offset() * tensor.element_size(),
               tuple(tensor.shape))
        if tensor.numel() and key in seen:
            continue
        seen.add(key)
        out[name] = tensor
    return out


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load `tensors` into `model`; every tensor must be given, or be tied to one that is (a tied pair may
    be stored under either name)."""
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if unexpected:
        raise ValueError(f"weights for unknown tensors: {', '.join(sorted(unexpected)[:5])}")
    state = model.state_dict()

    def where(t: torch.Tensor) -> tuple[int, int, tuple[int, ...]]:
        return t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)

    loaded = {where(state[name]) for name in tensors if name in state}
    absent = [name for name in missing if state[name].numel() and where(state[name]) not in loaded]
    if absent:
        raise ValueError(f"weights missing for: {', '.join(sorted(absent)[:5])}")
