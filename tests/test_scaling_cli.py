"""`composer scale` and `composer ladder --plan` through the CLI entry point."""

import pytest

import composer.cli as cli
from composer import load_spec, stripe
from scaling.rules import param_count

SPEC = "search_spaces/architectures/hybrid_pattern.yaml"


@pytest.fixture(autouse=True)
def with_scale_commands(monkeypatch):
    if "composer.cli.scale" not in cli.SUBCOMMAND_MODULES:
        monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", (*cli.SUBCOMMAND_MODULES, "composer.cli.scale"))


def test_scale_to_params_prints_the_table_and_writes_the_spec(tmp_path, capsys):
    out = tmp_path / "big.yaml"
    assert cli.main(["scale", SPEC, "--params", "20M", "--out", str(out)]) == 0
    scaled = load_spec(str(out))
    assert abs(param_count(scaled) - 20_000_000) <= 400_000
    printed = capsys.readouterr().out
    assert "non-embedding" in printed and "state bytes" in printed and f"wrote {out}" in printed
    assert stripe(scaled) == "GD M GD M GD M A M GD M GD M GD M A M"      # 8 layers: stacked


def test_scale_layers_and_width(tmp_path):
    out = tmp_path / "s.yaml"
    assert cli.main(["scale", SPEC, "--layers", "16", "--method", "stretch", "--d-model", "512",
                     "--out", str(out)]) == 0
    scaled = load_spec(str(out))
    assert scaled.d_model == 512 and scaled.defaults["attention"]["n_heads"] == 8
    assert stripe(scaled) == "GD GD M M GD GD M M GD GD M M A A M M"


def test_scale_errors_exit_2_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "s.yaml"
    assert cli.main(["scale", SPEC, "--layers", "12", "--out", str(out)]) == 2
    assert "--layers must be a multiple of 8" in capsys.readouterr().err
    assert cli.main(["scale", SPEC, "--params", "lots", "--out", str(out)]) == 2
    assert "error: --params: expected a count like 20M" in capsys.readouterr().err
    assert cli.main(["scale", SPEC, "--out", str(out)]) == 2
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_ladder_plan(capsys):
    assert cli.main(["ladder", "search_spaces/ladder_example.yaml", "--plan"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 * 3 * 2
    assert lines[0].split()[:4] == ["transformer", "50K", "seed", "0"]
