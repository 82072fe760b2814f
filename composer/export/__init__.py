"""Export: bundles (spec, weights, tokenizer, model card, standalone `modeling.py`, HF wrapper) and loading."""

from composer.export.bundle import ExportResult, export
from composer.export.load import load
from composer.export.standalone import generate_modeling_source

__all__ = ["ExportResult", "export", "generate_modeling_source", "load"]
