"""Composer's own reading and writing of weights: through the `safetensors` package (memory-mapped), never pickle.

The hand-written reader in `composer.export.weights` exists only to be inlined into the standalone
`modeling.py`, which needs nothing but torch.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from composer.errors import UserError
from composer.export.weights import load_weights, unique_state_dict


def save_weights(path: str | Path, model: nn.Module, metadata: dict[str, str] | None = None) -> None:
    """Write the model's weights (each tied tensor once) to a .safetensors file."""
    from safetensors.torch import save_file

    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in unique_state_dict(model).items()}
    save_file(tensors, str(path), metadata=metadata)


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors in a .safetensors file, read through a memory map; an unreadable file is a UserError."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except Exception as e:  # noqa: BLE001  (safetensors raises its own error types)
        raise UserError(f"{path}: cannot read weights ({e})") from None


def load_weights_file(model: nn.Module, path: str | Path) -> None:
    """Load a .safetensors file into `model`: every tensor the model needs, none it does not have."""
    try:
        load_weights(model, read_weights(path))
    except ValueError as e:
        raise UserError(f"{path}: weights do not fit the architecture ({e})") from None
