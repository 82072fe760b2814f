"""Composer's import names (`composer`, `primitives`, `scaling`) are other distributions' names too: another
distribution providing one is named in one line at the start of every command and in `--version`; the command
has a second, unambiguous name, `hybrid-composer`."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest

import composer.version
from composer.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def mosaicml_beside(monkeypatch):
    """An environment where MosaicML's distribution also provides `composer` (and another one `scaling`)."""
    real_version = metadata.version
    owners = {"composer": ["hybrid-composer", "mosaicml", "hybrid-composer"], "scaling": ["hybrid-composer", "scaling"],
              "primitives": ["hybrid-composer"], "torch": ["torch"]}
    versions = {"mosaicml": "0.31.0", "scaling": "1.2"}
    monkeypatch.setattr(metadata, "packages_distributions", lambda: owners)
    monkeypatch.setattr(metadata, "version", lambda name: versions[name] if name in versions else real_version(name))
    composer.version.name_conflicts.cache_clear()
    yield
    composer.version.name_conflicts.cache_clear()


def test_another_distribution_is_named_at_the_start_of_a_command(mosaicml_beside, capsys):
    assert composer.version.name_conflicts() == {"composer": ["mosaicml 0.31.0"], "scaling": ["scaling 1.2"]}
    assert main(["primitives", "mlp"]) == 0
    err = capsys.readouterr().err.splitlines()
    [warning] = [line for line in err if line.startswith("warning:")]
    assert "`composer` also by mosaicml 0.31.0" in warning and "`scaling` also by scaling 1.2" in warning
    assert str(ROOT / "composer") in warning and "hybrid-composer" in warning and "environment of its own" in warning


def test_version_says_so_too(mosaicml_beside, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    captured = capsys.readouterr()
    first, second = captured.out.strip().splitlines()
    assert first == f"composer {composer.version.installed_version()}"
    assert second.startswith("warning: another installed distribution provides") and captured.err == ""


def test_no_warning_without_another_distribution(capsys):
    composer.version.name_conflicts.cache_clear()
    assert composer.version.name_conflicts() == {}       # this environment: Hybrid Composer alone
    assert main(["primitives", "mlp"]) == 0
    assert "warning:" not in capsys.readouterr().err


def test_hybrid_composer_is_the_same_command(monkeypatch, capsys):
    tomllib = pytest.importorskip("tomllib")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"composer": "composer.cli:main", "hybrid-composer": "composer.cli:main"}
    monkeypatch.setattr(sys, "argv", ["/env/bin/hybrid-composer", "--version"])
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("hybrid-composer ")
