"""Bad input: one message naming the YAML path (and line), exit code 2, no traceback, nothing written."""

import subprocess
import sys

import pytest

from composer import SpecError, UserError, load_spec

GOOD = """\
d_model: 64
vocab_size: 100
layers:
  - attention
  - mlp
  - repeat: 2
    body:
      - attention
      - {op: mlp, kind: gelu}
"""


def error_of(text):
    with pytest.raises(UserError) as info:
        load_spec(text)
    return info.value


@pytest.mark.parametrize("text, path, line, words", [
    ("d_model: 64\nlayers: [attention, mlp\n", None, 3, "invalid YAML"),
    ("d_model: 64\nlayers:\n  - atention\n", "layers[0]", 3, "did you mean 'attention'"),
    ("d_model: 64\nlayers:\n  - {op: attention, n_heads: two}\n", "layers[0].n_heads", 3, "expected"),
    ("d_model: sixty\nlayers: [mlp]\n", "d_model", 1, "expected an integer"),
    ("layers: [mlp]\n", "d_model", None, "missing"),
    ("d_model: 64\nlayers: [mlp]\nwidth: 3\n", "width", 3, "unknown field"),
    ("d_model: 64\nlayers:\n  - {op: attention, heads: 4}\n", "layers[0].heads", 3, "did you mean 'n_heads'"),
    ("d_model: 64\nlayers:\n  - mlp\n  - {op: attention, n_heads: 5}\n", "layers[1].n_heads", 4, "must divide d_model"),
    ("d_model: 64\nlayers:\n  - {op: attention, n_heads: 4, n_kv_heads: 3}\n", "layers[0].n_kv_heads", 3,
     "must divide n_heads"),
    ("d_model: 64\nlayers:\n  - loop: {times: 0, body: [mlp]}\n", "layers[0].loop.times", 3, ">= 1"),
    ("d_model: 64\nlayers:\n  - {share: nowhere}\n", "layers[0].share", 3, "unknown share target"),
    ("d_model: 64\nlayers:\n  - {op: mlp, name: m}\n  - {share: m, op: attention}\n", "layers[1].op", 4,
     "shape mismatch"),
    ("d_model: 64\nlayers: []\n", "layers", 2, "at least one layer"),
    ("d_model: 64\npattern: AMX\nlegend: {A: attention, M: mlp}\n", "pattern", 2, "'X'"),
    ("d_model: 64\nlayers:\n  - repeat: 2\n    body:\n      - mlp\n      - {op: attention, n_heads: 3}\n",
     "layers[0].body[1].n_heads", 6, "must divide"),
    ("d_model: 64\nlayers:\n  - {op: mlp, kind: relu}\n", "layers[0].kind", 3, "one of"),
    ("d_model: 64\nlayers:\n  - parallel: [attention, mlp]\n    split: [0.5, 0.4]\n", "layers[0].split", 4,
     "sum to 1"),
    ("d_model: 64\nlayers:\n  - 42\n", "layers[0]", 3, "expected a primitive name"),
    ("d_model: 64\nnorm: batchnorm\nlayers: [mlp]\n", "norm", 2, "rmsnorm"),
    # fields checked by their type and bounds (composer.spec field metadata)
    ("d_model: 64\ndropout: 1.0\nlayers: [mlp]\n", "dropout", 2, "expected a number in [0, 1), got 1.0"),
    ("d_model: 64\nname: 3\nlayers: [mlp]\n", "name", 2, "expected a string"),
    ("d_model: 64\ntie_embeddings: 1\nlayers: [mlp]\n", "tie_embeddings", 2, "expected true or false"),
    ("d_model: 64\nlayers:\n  - loop: {times: 2, body: [mlp], ponder_cost: -1}\n", "layers[0].loop.ponder_cost", 3,
     "expected a number >= 0"),
    ("d_model: 64\nlayers:\n  - loop: {times: 2, body: [mlp], inject: sideways}\n", "layers[0].loop.inject", 3,
     "one of add, concat"),
    ("d_model: 64\nlayers:\n  - loop: {times: 2, body: [mlp], grad_iters: 3}\n", "layers[0].loop.grad_iters", 3,
     "exceeds times=2"),
    ("d_model: 64\nlayers:\n  - loop: 2\n    body: [mlp]\n    halting: yes\n", "layers[0].halting", 5, "one of act"),
])
def test_errors_name_path_and_line(text, path, line, words):
    err = error_of(text)
    assert err.path == path
    assert err.line == line
    assert words in str(err)


def test_error_names_the_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("d_model: 64\nlayers:\n  - {op: attention, n_heads: 5}\n")
    with pytest.raises(SpecError) as info:
        load_spec(str(f))
    assert str(info.value).startswith(f"{f}:3: layers[0].n_heads:")


def test_valid_spec_parses():
    assert load_spec(GOOD).d_model == 64


@pytest.mark.parametrize("command", ["validate", "show"])
def test_cli_exit_code_two_without_traceback(tmp_path, command):
    f = tmp_path / "bad.yaml"
    f.write_text("d_model: 64\nlayers:\n  - {op: attention, n_kv_heads: 3}\n")
    r = subprocess.run([sys.executable, "-m", "composer", command, str(f)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0
    assert "layers[0].n_kv_heads" in r.stderr and ":3:" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


# Numbers that validate used to accept and training then diverged on: every float of a primitive is finite,
# and the primitives' Config fields carry their bounds (composer.fields.option).
@pytest.mark.parametrize("layer, field, words", [
    ("{op: attention, rope_base: .nan}", "rope_base", "expected a finite number > 1, got nan"),
    ("{op: attention, rope_base: -5}", "rope_base", "expected a number > 1, got -5.0"),
    ("{op: attention, window: 0}", "window", "expected an integer >= 1, got 0"),
    ("{op: moe, aux_loss_coef: .inf}", "aux_loss_coef", "finite"),
    ("{op: moe, aux_loss_coef: -0.1}", "aux_loss_coef", ">= 0"),
    ("{op: moe, z_loss_coef: -1}", "z_loss_coef", ">= 0"),
    ("{op: moe, capacity_factor: .nan}", "capacity_factor", "finite"),
    ("{op: mlp, expansion: .nan}", "expansion", "finite"),
    ("{op: mlp, expansion: -2}", "expansion", "> 0"),
    ("{op: mamba, expand: .inf}", "expand", "finite"),
    ("{op: mamba2, d_state: -4}", "d_state", ">= 1"),
    ("{op: gla, gate_normalizer: 0}", "gate_normalizer", "> 0"),
    ("{op: rglru, c: .nan}", "c", "finite"),
    ("{op: gated_deltanet, expand_v: -1}", "expand_v", "> 0"),
    ("{loop: {times: 2, body: [mlp], halting: act, ponder_cost: .nan}}", "loop.ponder_cost", "finite"),
    ("{loop: {times: 2, body: [mlp], halting: act, ponder_cost: -1}}", "loop.ponder_cost", ">= 0"),
])
def test_numbers_out_of_bounds_name_the_field(layer, field, words):
    err = error_of(f"d_model: 64\nlayers:\n  - {layer}\n")
    assert err.path == f"layers[0].{field}" and err.line == 3
    assert words in err.message


def test_defaults_are_held_to_the_same_bounds():
    err = error_of("d_model: 64\ndefaults: {mlp: {expansion: .inf}}\nlayers: [mlp]\n")
    assert err.path == "defaults.mlp.expansion" and "finite" in err.message


@pytest.mark.parametrize("target", ["{x: 1}", "[1, 2]", "3"])
def test_share_target_must_be_a_name(target):
    err = error_of(f"d_model: 64\nlayers:\n  - {{op: mlp, name: x}}\n  - {{share: {target}}}\n")
    assert err.path == "layers[1].share" and "expected the name of an earlier layer" in err.message


def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    """A usage mistake, an OSError from the file system and a message with line breaks: one `error:` line."""
    import composer.cli.spec
    from composer.cli import main

    with pytest.raises(SystemExit) as info:
        main(["validate"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: composer validate: the following arguments are required: spec") and err.count(
        "\n") == 1

    def denied(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "out.yaml"))

    monkeypatch.setattr(composer.cli.spec, "run_validate", denied)
    assert main(["validate", "x.yaml"]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'out.yaml'}: Permission denied\n"

    def multi_line(args):
        raise UserError("first line\n  second line\n")

    monkeypatch.setattr(composer.cli.spec, "run_validate", multi_line)
    assert main(["validate", "x.yaml"]) == 2
    assert capsys.readouterr().err == "error: first line second line\n"
