"""Model weights for the standalone `modeling.py`: a torch-only safetensors reader, and tied-weight handling.

The exporter inlines this module into `modeling.py`, which must run with torch alone, so the reader here is
written by hand; Composer itself reads and writes weights with the `safetensors` package
(`composer.export.weights_io`). No pickle is ever involved.

The format is an 8-byte little-endian header length, a UTF-8 JSON header (per tensor: dtype, shape and the
byte range `data_offsets` of its data; optionally `__metadata__`: strings), then the raw little-endian data.
Every part of the header is checked before any tensor is built, and every problem is one ValueError that
names the file and what is wrong with it.
"""

from __future__ import annotations

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
TENSOR_ENTRY_KEYS = ("dtype", "shape", "data_offsets")


def read_safetensors(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors by name, metadata) from a .safetensors file, with json + torch only."""
    if sys.byteorder != "little":
        raise RuntimeError("this reader supports little-endian machines only")
    with open(path, "rb") as f:
        blob = f.read()
    try:
        entries, metadata, data_start = safetensors_header(blob)
    except ValueError as e:
        raise ValueError(f"{path}: not a valid safetensors file: {e}") from None
    data = bytearray(blob[data_start:])
    tensors = {}
    for name, (dtype, shape, start, end) in entries.items():
        item_size = torch.empty((), dtype=dtype).element_size()
        count = (end - start) // item_size
        if count == 0:
            flat = torch.empty(0, dtype=dtype)
        elif start % item_size == 0:
            flat = torch.frombuffer(data, dtype=dtype, count=count, offset=start)
        else:  # unaligned for its dtype: copy it out
            flat = torch.frombuffer(bytearray(data[start:end]), dtype=dtype)
        tensors[name] = flat.reshape(shape)
    return tensors, metadata


def safetensors_header(blob: bytes) -> tuple[dict[str, tuple[torch.dtype, list[int], int, int]], dict[str, str], int]:
    """The checked header of a safetensors file's bytes: {name: (dtype, shape, start, end)} with offsets into
    the data, the metadata, and where the data begins. A malformed header is a ValueError naming the problem."""
    if len(blob) < 8:
        raise ValueError(f"the file is {len(blob)} bytes long, shorter than the 8-byte header length")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if header_len > MAX_HEADER_BYTES:
        raise ValueError(f"header length {header_len} is over the limit of {MAX_HEADER_BYTES} bytes")
    if 8 + header_len > len(blob):
        raise ValueError(f"header length {header_len} runs past the end of the file ({len(blob)} bytes)")
    try:
        header = json.loads(blob[8:8 + header_len].decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"the header is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"the header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"the header is a JSON {type(header).__name__}, expected an object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise ValueError("__metadata__ must map strings to strings")
    data_len = len(blob) - 8 - header_len
    entries = {name: _tensor_entry(name, info, data_len) for name, info in header.items()}
    spans = sorted((start, end, name) for name, (_, _, start, end) in entries.items() if end > start)
    for (_, end, name), (start, _, other) in zip(spans, spans[1:]):
        if start < end:
            raise ValueError(f"the data of tensors {name!r} and {other!r} overlap")
    return entries, metadata, 8 + header_len


def _tensor_entry(name: str, info: object, data_len: int) -> tuple[torch.dtype, list[int], int, int]:
    if not isinstance(info, dict) or sorted(info) != sorted(TENSOR_ENTRY_KEYS):
        keys = ", ".join(map(str, info)) if isinstance(info, dict) else type(info).__name__
        raise ValueError(f"tensor {name!r}: expected the keys {', '.join(TENSOR_ENTRY_KEYS)}, got {keys}")
    dtype = SAFETENSORS_DTYPES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
    if dtype is None:
        raise ValueError(f"tensor {name!r}: unknown dtype {info['dtype']!r} (known: {', '.join(SAFETENSORS_DTYPES)})")
    shape, offsets = info["shape"], info["data_offsets"]
    if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
        raise ValueError(f"tensor {name!r}: shape {shape!r} is not a list of non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(n) for n in offsets):
        raise ValueError(f"tensor {name!r}: data_offsets {offsets!r} is not a pair of non-negative integers")
    start, end = offsets
    if not start <= end <= data_len:
        raise ValueError(f"tensor {name!r}: data_offsets [{start}, {end}] are out of range "
                         f"(the data section holds {data_len} bytes)")
    count = 1
    for n in shape:
        count *= n
    needed = count * torch.empty((), dtype=dtype).element_size()
    if end - start != needed:
        raise ValueError(f"tensor {name!r}: shape {shape} of {info['dtype']} needs {needed} bytes, "
                         f"its data_offsets give {end - start}")
    return dtype, shape, start, end


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


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
    be stored under either name), with the model's shape; a tensor the model does not have is an error."""
    state = model.state_dict()
    unexpected = sorted(name for name in tensors if name not in state)
    if unexpected:
        raise ValueError(f"tensors the model does not have: {', '.join(unexpected[:5])}")
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(state[name].shape):
            raise ValueError(f"tensor {name!r} has shape {list(tensor.shape)}, the model expects "
                             f"{list(state[name].shape)}")

    def where(t: torch.Tensor) -> tuple[int, int, tuple[int, ...]]:
        return t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)

    loaded = {where(state[name]) for name in tensors}
    absent = sorted(name for name in state if name not in tensors and state[name].numel()
                    and where(state[name]) not in loaded)
    if absent:
        raise ValueError(f"tensors missing (the model needs them): {', '.join(absent[:5])}")
    model.load_state_dict(tensors, strict=False)
