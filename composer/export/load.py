"""Load an export bundle back into Composer: the HybridLM with its weights (safetensors only, never pickle)."""

from __future__ import annotations

from pathlib import Path

from composer.errors import UserError
from composer.export.weights_io import load_weights_file
from composer.model import HybridLM
from composer.spec_parse import load_spec


def load(directory: str | Path, device: str = "cpu") -> HybridLM:
    """The model in an export bundle, in eval mode. Without model.safetensors: UserError."""
    directory = Path(directory)
    spec_file = directory / "spec.yaml"
    if not spec_file.exists():
        raise UserError(f"{directory}: not an export bundle (no spec.yaml)")
    weights = directory / "model.safetensors"
    if not weights.exists():
        raise UserError(f"{directory}: the bundle has no weights (exported from a spec without --init-weights)")
    model = HybridLM(load_spec(spec_file))
    load_weights_file(model, weights)
    return model.to(device).eval()
