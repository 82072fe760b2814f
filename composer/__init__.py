"""Composer: design hybrid sequence-model architectures by search.

    from composer import load_spec, build_model, model_cost
    spec = load_spec("my_arch.yaml")          # or a YAML string, or a dict
    model = build_model(spec)                 # a torch.nn.Module (HybridLM)
    print(model_cost(spec, seq_len=2048))     # params, FLOPs/token, state bytes
"""

from composer.canonical_form import arch_id, canonical, stripe
from composer.costs import ModelCost, model_cost
from composer.errors import SpecError, UserError
from composer.model import HybridLM, build_model
from composer.spec import ArchSpec, Layer, Loop, Parallel, Repeat
from composer.spec_parse import dump_spec, load_spec, validate_spec
from composer.version import __version__  # noqa: F401  (the package's version, as usual)

__all__ = [
    "ArchSpec",
    "HybridLM",
    "Layer",
    "Loop",
    "ModelCost",
    "Parallel",
    "Repeat",
    "SpecError",
    "UserError",
    "arch_id",
    "build_model",
    "canonical",
    "dump_spec",
    "load_spec",
    "model_cost",
    "stripe",
    "validate_spec",
    # loaded on first use (they import the task, search and export machinery):
    "Budget",
    "TrainConfig",
    "export_bundle",
    "get_task",
    "load",
    "run_search",
    "search",
    "train",
]

_LAZY = {
    "train": ("composer.trainer", "train"),
    "TrainConfig": ("composer.training.config", "TrainConfig"),
    "Budget": ("composer.training.schedule", "Budget"),
    "get_task": ("composer.tasks", "get_task"),
    "export_bundle": ("composer.export", "export"),
    "load": ("composer.export", "load"),
    "run_search": ("composer.search.runner", "search"),
}


def __getattr__(name: str):
    if name in ("search", "export"):  # packages; their functions are run_search and export_bundle
        import importlib

        return importlib.import_module(f"composer.{name}")
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'composer' has no attribute {name!r}")

