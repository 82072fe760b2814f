"""The top-level names stay what they are after their modules are imported (no function/module name clash)."""

import importlib
import inspect


def test_top_level_functions_survive_submodule_imports():
    import composer

    for module in ("composer.trainer", "composer.search.runner", "composer.export.bundle", "composer.tasks"):
        importlib.import_module(module)
    for name in ("train", "run_search", "export_bundle", "load", "get_task", "build_model", "load_spec"):
        assert inspect.isfunction(getattr(composer, name)), name
    assert inspect.ismodule(composer.search) and inspect.ismodule(composer.export)
    assert composer.run_search is composer.search.search
    assert composer.export_bundle is composer.export.export


def test_every_public_name_resolves():
    import composer

    for name in composer.__all__:
        assert getattr(composer, name) is not None, name
    assert composer.__version__.count(".") == 2
