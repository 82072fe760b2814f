"""`composer validate` and `composer show`."""

import json

import pytest

from composer.cli import main

SPEC = """\
name: tiny
d_model: 64
vocab_size: 256
max_seq_len: 128
layers:
  - {op: attention, n_heads: 4, window: 32}
  - mlp
  - loop: {times: 2, body: [attention, mlp]}
"""


def write(tmp_path, text=SPEC):
    path = tmp_path / "arch.yaml"
    path.write_text(text)
    return str(path)


def test_validate_ok(tmp_path, capsys):
    assert main(["validate", write(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "is valid" in out and "A M (A M)x2" in out


def test_show_table(tmp_path, capsys):
    assert main(["show", write(tmp_path), "--context", "64"]) == 0
    out = capsys.readouterr().out
    assert "blocks.2" in out and "loop x2" in out and "total" in out
    assert "stripe      A M (A M)x2" in out
    assert "stripe      A M (A M)x2\nlegend      A=attention M=mlp\n" in out   # the legend follows the stripe
    assert "at context 64" in out


def test_show_json_matches_costs(tmp_path, capsys):
    from composer import arch_id, load_spec, model_cost

    assert main(["show", write(tmp_path), "--context", "100", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    spec = load_spec(SPEC)
    cost = model_cost(spec, 100)
    assert {"arch_id", "params", "non_embedding_params", "flops_per_token", "state_bytes", "layers"} <= set(facts)
    assert facts["arch_id"] == arch_id(spec)
    assert facts["params"] == cost.params
    assert facts["state_bytes"] == cost.state_bytes
    # window 32 caps the first attention's KV cache; the looped attention keeps 100 positions, twice
    kv = 2 * 64 * 2  # k and v, d_model values each, 2 bytes
    assert facts["state_bytes"] == kv * 32 + 2 * kv * 100
    assert [row["op"] for row in facts["layers"]] == ["attention", "mlp", "loop x2", "attention", "mlp"]
    assert facts["legend"] == {"A": "attention", "M": "mlp"}


def test_missing_file_is_a_clean_error(tmp_path, capsys):
    assert main(["show", str(tmp_path / "nope.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_show_legend_names_every_symbol_of_the_stripe(tmp_path, capsys):
    text = SPEC.replace("  - mlp\n", "  - {op: mamba2, name: ssm}\n  - {share: ssm}\n  - moe\n", 1)
    assert main(["show", write(tmp_path, text)]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines()
                 if line.startswith(("stripe ", "legend ")))
    assert lines["stripe"] == "A S2 S2* E (A M)x2"
    assert lines["legend"] == "A=attention S2=mamba2 E=moe M=mlp *=shared weights"


def test_version(capsys, monkeypatch):
    from importlib import metadata

    import composer.version
    from composer.cli import version

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"composer {metadata.version('hybrid-composer')}"

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)        # a source tree that was never pip-installed
    monkeypatch.setattr(composer.version, "__version__", "9.9.9")
    assert version() == "9.9.9"
