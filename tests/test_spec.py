"""The DSL: parsing, round trips, canonical form and arch_id."""

import pytest

from composer import ArchSpec, Layer, Loop, Parallel, Repeat, arch_id, canonical, load_spec, stripe
from composer.spec_parse import dump_spec

BASE = {"d_model": 64, "vocab_size": 100, "max_seq_len": 64}


def spec_of(layers, **extra):
    return load_spec({**BASE, **extra, "layers": layers})


def test_forms_parse_to_nodes():
    spec = spec_of([
        "attention",
        {"op": "mlp", "kind": "gelu"},
        {"repeat": 2, "body": ["attention", "mlp"]},
        {"loop": {"times": 3, "body": ["attention"], "inject": "add"}},
        {"parallel": ["attention", "mlp"], "combine": "mean"},
        {"op": "attention", "name": "g"},
        {"share": "g"},
    ])
    kinds = [type(n) for n in spec.layers]
    assert kinds == [Layer, Layer, Repeat, Loop, Parallel, Layer, Layer]
    assert spec.layers[1].params == {"kind": "gelu"}
    assert spec.layers[3].times == 3 and spec.layers[3].inject == "add"
    assert spec.layers[6].share == "g" and spec.layers[6].op == "attention"


def test_load_dump_load_is_identical_and_readable():
    spec = spec_of([
        {"repeat": 2, "body": [{"op": "attention", "n_heads": 4, "window": 16}, "mlp"]},
        {"loop": {"times": 2, "body": ["attention", "mlp"], "grad_iters": 1}},
        {"parallel": ["attention", "mlp"], "combine": "concat", "split": [0.5, 0.5]},
    ], defaults={"mlp": {"kind": "gelu"}}, name="demo", norm="layernorm", tie_embeddings=False)
    text = dump_spec(spec)
    assert load_spec(text) == spec
    assert "repeat: 2" in text and "{op: attention, n_heads: 4, window: 16}" in text


def test_equivalent_specs_share_arch_id():
    explicit = spec_of(["attention", "mlp", "attention", "mlp"])
    repeated = spec_of([{"repeat": 2, "body": ["attention", "mlp"]}])
    pattern = load_spec({**BASE, "pattern": "AMAM", "legend": {"A": "attention", "M": "mlp"}})
    written_out = spec_of([{"op": "attention", "n_heads": 1, "rope": True}, {"op": "mlp", "kind": "swiglu"}] * 2)
    via_defaults = spec_of(["attention", "mlp"] * 2, defaults={"attention": {"n_heads": 1}})
    reordered = load_spec({"layers": ["attention", "mlp"] * 2, "max_seq_len": 64, "vocab_size": 100, "d_model": 64})
    named = spec_of([{"op": "attention", "name": "first"}, "mlp", "attention", "mlp"], name="other")
    ids = {arch_id(s) for s in (explicit, repeated, pattern, written_out, via_defaults, reordered, named)}
    assert len(ids) == 1


def test_different_specs_have_different_arch_id():
    a = spec_of(["attention", "mlp"])
    assert arch_id(a) != arch_id(spec_of(["mlp", "attention"]))
    assert arch_id(a) != arch_id(spec_of([{"op": "attention", "n_heads": 2}, "mlp"]))
    assert arch_id(a) != arch_id(spec_of(["attention", "mlp"], d_model=32))
    shared = spec_of([{"op": "attention", "name": "g"}, {"share": "g"}])
    fresh = spec_of(["attention", "attention"])
    assert arch_id(shared) != arch_id(fresh)


def test_canonical_refers_to_shared_layers_by_position():
    spec = spec_of(["mlp", {"op": "attention", "name": "g"}, "mlp", {"share": "g"}])
    layers = canonical(spec)["layers"]
    assert layers[3] == {"share": 1}


def test_stripe():
    spec = spec_of(["attention", "mlp", {"loop": {"times": 2, "body": ["attention", "mlp"]}},
                    {"parallel": ["attention", "mlp"]}])
    assert stripe(spec) == "A M (A M)x2 [A|M]"


def test_python_api_builds_the_same_spec():
    from_python = ArchSpec(d_model=64, vocab_size=100, max_seq_len=64,
                           layers=(Layer("attention"), Layer("mlp")))
    assert arch_id(from_python) == arch_id(spec_of(["attention", "mlp"]))
    assert load_spec(from_python.to_dict()) == from_python


def test_spec_file_round_trip(tmp_path):
    path = tmp_path / "arch.yaml"
    path.write_text("d_model: 32\nlayers: [attention, mlp]\n")
    spec = load_spec(str(path))
    assert spec.d_model == 32 and spec.vocab_size == 256


@pytest.mark.parametrize("path", ["gpt_small", "hybrid_pattern", "looped_shared"])
def test_shipped_architectures_load(path):
    from pathlib import Path

    spec = load_spec(str(Path(__file__).parent.parent / "search_spaces" / "architectures" / f"{path}.yaml"))
    assert spec.name == path
