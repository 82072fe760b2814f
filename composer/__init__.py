"""Composer: design hybrid sequence-model architectures by search.

    from composer import load_spec, build_model, model_cost
    spec = load_spec("my_arch.yaml")          # or a YAML string, or a dict
    model = build_model(spec)                 # a torch.nn.Module (HybridLM)
    print(model_cost(spec, seq_len=2048))     # params, FLOPs/token, state bytes
"""

from composer.costs import ModelCost, model_cost
from composer.errors import SpecError, UserError
from composer.graph import arch_id, canonical, stripe, to_graph
from composer.model import HybridLM, build_model
from composer.spec import ArchSpec, Layer, Loop, Parallel, Repeat
from composer.spec_parse import load_spec, validate_spec

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
    "to_graph",
    "validate_spec",
    # loaded on first use (they import the task, search and export machinery):
    "Budget",
    "export",
    "get_task",
    "load",
    "search",
    "train",
]

_LAZY = {
    "train": ("composer.train", "train"),
    "Budget": ("composer.training.schedule", "Budget"),
    "get_task": ("composer.tasks", "get_task"),
    "export": ("composer.export", "export"),
    "load": ("composer.export", "load"),
}


def __getattr__(name: str):
    if name == "search":  # the search package, which is callable: composer.search(space, ...)
        import importlib

        return importlib.import_module("composer.search")
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'composer' has no attribute {name!r}")


def dump_spec(spec: ArchSpec) -> str:
    """The YAML text of a spec (`load_spec(dump_spec(s)) == s`)."""
    import yaml

    return yaml.safe_dump(spec.to_dict(), sort_keys=False, default_flow_style=None, width=100)
