"""`composer primitives [NAME]`: the registry's layers with their parameters, as text and as JSON."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch

import primitives
from composer.cli import main
from composer.cli.primitives import primitive_info


def test_list_shows_every_primitive_with_symbol_kind_and_parameters(capsys):
    assert main(["primitives"]) == 0
    out = capsys.readouterr().out
    for name, cls in primitives.registered().items():
        kind = cls.kind.replace("_", " ")
        assert f"\n{name} ({cls.symbol}, {kind}): " in out, name
    assert "attention (A, token mixer): Causal softmax attention" in out
    assert "mlp (M, channel mixer): " in out
    assert re.search(r"\n +window +int \| null +null +sliding window", out)
    assert re.search(r"\n +kind +swiglu \| geglu \| gelu \| relu2 +swiglu +swiglu or geglu \(gated", out)
    assert out.index("attention (A") < out.index("mlp (M")    # token mixers first, then channel mixers


def test_every_builtin_parameter_has_a_type_default_and_meaning():
    for name, cls in primitives.registered().items():
        info = primitive_info(name)
        assert [p.name for p in info.params] == [f.name for f in dataclasses.fields(cls.Config)]
        for p in info.params:
            assert p.type and p.default and p.help, (name, p)
        assert info.summary and "\n" not in info.summary, name


def test_detail_view(capsys):
    assert main(["primitives", "mamba2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("mamba2: Mamba-2 block")
    assert "symbol S2, token mixer" in out
    assert re.search(r"\n +d_state +int +64 +state size", out)
    assert "Mamba-2 (Dao & Gu, 2024)" in out          # the family's documented formulas
    assert "in a spec: layers: [{op: mamba2, expand: 1.5}, ...]" in out


def test_unknown_name_is_a_clean_error(capsys):
    assert main(["primitives", "atention"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown primitive 'atention' (did you mean 'attention'")
    assert "Traceback" not in err
    assert main(["primitives", "zzz"]) == 2
    assert "(known: attention, deltanet" in capsys.readouterr().err


def test_json(capsys):
    assert main(["primitives", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {p["name"] for p in listed} == set(primitives.registered())
    attention = next(p for p in listed if p["name"] == "attention")
    params = {p["name"]: p for p in attention["params"]}
    assert attention["symbol"] == "A" and attention["kind"] == "token mixer"
    assert params["rope"]["type"] == "bool" and params["rope"]["default"] == "true"
    assert params["window"]["default"] == "null" and params["rope_base"]["default"] == "10000.0"
    assert main(["primitives", "moe", "--json"]) == 0
    moe = json.loads(capsys.readouterr().out)
    assert moe["name"] == "moe" and moe["kind"] == "channel mixer" and "Mixture of Experts" in moe["doc"]
    score = next(p for p in moe["params"] if p["name"] == "score")
    assert score["type"] == "softmax | sigmoid" and score["default"] == "softmax"


def test_a_user_primitive_shows_its_own_docstring_and_field_help(capsys):
    @dataclasses.dataclass
    class ScaleConfig:
        factor: float = dataclasses.field(default=2.0, metadata={"help": "what the input is multiplied by"})
        taps: list[int] = dataclasses.field(default_factory=lambda: [1, 2])

    @primitives.register("scale_test")
    class Scale(primitives.Primitive):
        """Multiplies its input by a constant (a test layer)."""

        kind = "channel_mixer"
        Config = ScaleConfig

        def forward(self, x: torch.Tensor, state=None):
            return x * self.cfg.factor, state

    try:
        assert main(["primitives", "scale_test"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("scale_test: Multiplies its input by a constant (a test layer).")
        assert "symbol SC, channel mixer" in out      # the default symbol: the name's first two letters
        assert re.search(r"\n +factor +float +2.0 +what the input is multiplied by", out)
        assert re.search(r"\n +taps +list of int +\[1, 2\]", out)
    finally:
        primitives.unregister("scale_test")
    with pytest.raises(KeyError):
        primitives.get_primitive("scale_test")
