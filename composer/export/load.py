"""Load an export bundle back into Composer: the HybridLM with its weights (safetensors only, never pickle)."""

from __future__ import annotations

from pathlib import Path

from composer.errors import UserError
from composer.export.sources import read_weights_file
from composer.export.weights import load_weights
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
    try:
        load_weights(model, read_weights_file(weights))
    except (ValueError, RuntimeError) as e:
        raise UserError(f"{weights}: weights do not fit the architecture ({e})") from None
    return model.to(device).eval()
