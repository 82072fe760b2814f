"""Composer: design hybrid sequence-model architectures by search.

    from composer import load_spec, build_model, model_cost
    spec = load_spec("my_arch.yaml")          # or a YAML string, or a dict
    model = build_model(spec)                 # a torch.nn.Module (HybridLM)
    print(model_cost(spec, seq_len=2048))     # params, FLOPs/token, state bytes

Every public name is loaded on first use (PEP 562), so that importing a ground-floor module (composer.fields,
composer.reader, composer.names, composer.errors, composer.limits: the standard library only, which the
primitives import too) does not import the model, torch or the search machinery.
"""

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
    "ArchSpec": ("composer.spec", "ArchSpec"),
    "Layer": ("composer.spec", "Layer"),
    "Loop": ("composer.spec", "Loop"),
    "Parallel": ("composer.spec", "Parallel"),
    "Repeat": ("composer.spec", "Repeat"),
    "HybridLM": ("composer.model", "HybridLM"),
    "build_model": ("composer.model", "build_model"),
    "ModelCost": ("composer.costs", "ModelCost"),
    "model_cost": ("composer.costs", "model_cost"),
    "SpecError": ("composer.errors", "SpecError"),
    "UserError": ("composer.errors", "UserError"),
    "arch_id": ("composer.canonical_form", "arch_id"),
    "canonical": ("composer.canonical_form", "canonical"),
    "stripe": ("composer.canonical_form", "stripe"),
    "dump_spec": ("composer.spec_parse", "dump_spec"),
    "load_spec": ("composer.spec_parse", "load_spec"),
    "validate_spec": ("composer.spec_parse", "validate_spec"),
    "train": ("composer.trainer", "train"),
    "TrainConfig": ("composer.training.config", "TrainConfig"),
    "Budget": ("composer.training.schedule", "Budget"),
    "get_task": ("composer.tasks", "get_task"),
    "export_bundle": ("composer.export", "export"),
    "load": ("composer.export", "load"),
    "run_search": ("composer.search.runner", "search"),
}


def __getattr__(name: str):
    import importlib

    if name in ("search", "export"):  # packages; their functions are run_search and export_bundle
        return importlib.import_module(f"composer.{name}")
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'composer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
