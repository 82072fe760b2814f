"""Bounded input gives bounded work: each limit of composer/limits.py refuses a hostile document with one error
naming the field and the limit, before the work the document asks for is done (memory is measured with
tracemalloc: an unbounded expansion would take gigabytes)."""

from __future__ import annotations

import dataclasses
import re
import tracemalloc

import pytest

import composer.limits as limits
from composer import UserError, load_spec
from composer.fields import option
from composer.limits import (
    MAX_BOOTSTRAP,
    MAX_DOCUMENT_BYTES,
    MAX_GRID_POINTS,
    MAX_INTEGER,
    MAX_LADDER_TRIALS,
    MAX_LAYERS,
    MAX_NESTING,
    MAX_SEED,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
)
from composer.search.space_parse import load_space
from composer.yaml_source import parse_yaml, read_source
from primitives.base import ConfigError, Primitive, make_config, register, unregister
from scaling.ladder_parse import load_ladder


def billion_laughs(levels: int = 9) -> str:
    """The 12-line alias bomb: each line nine aliases of the line before (9^levels values written out)."""
    names = "abcdefghijklmnop"
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in zip(names, names[1:levels])]
    return "\n".join(lines + ["d_model: 64", "layers: [mlp]"]) + "\n"


def refused(text: str, *words: str, peak_mb: float = 50) -> UserError:
    """The UserError `load_spec(text)` raises, within `peak_mb` of Python memory; its message has `words`."""
    tracemalloc.start()
    try:
        with pytest.raises(UserError) as info:
            load_spec(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < peak_mb * 2**20, f"{peak / 2**20:.0f} MB"
    assert "\n" not in str(info.value)
    for word in words:
        assert word in str(info.value), str(info.value)
    return info.value


# ------------------------------------------------------------------------------------------------
# YAML documents

def test_alias_bomb_is_refused_while_composing():
    err = refused(billion_laughs(), "MAX_YAML_NODES", "alias")
    assert err.line is not None and err.line <= 12


def test_recursive_alias_is_refused():
    refused("a: &a [1, *a]\nd_model: 64\nlayers: [mlp]\n", "recursive alias")


def test_aliases_and_merge_keys_within_the_limit_still_work():
    source = parse_yaml("base: &b {n_heads: 4}\nx: {<<: *b, window: 8}\ny: [*b, *b]\n")
    assert source.data == {"base": {"n_heads": 4}, "x": {"n_heads": 4, "window": 8},
                           "y": [{"n_heads": 4}, {"n_heads": 4}]}
    assert source.line("x.window") == 2 and source.line("y[1]") == 1      # an alias: where its value is written


def test_values_are_counted_with_aliases_written_out():
    def document(uses: int) -> str:      # `a` holds 100 values; each use of `*a` counts them again
        return "a: &a [" + ", ".join(["1"] * 99) + "]\nb: [" + ", ".join(["*a"] * uses) + "]\n"

    parse_yaml(document((MAX_YAML_NODES - 500) // 100))
    with pytest.raises(UserError, match="MAX_YAML_NODES"):
        parse_yaml(document(MAX_YAML_NODES // 100 + 5))


def test_document_size_is_checked_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("d_model: 64\nlayers: [" + ", ".join(["mlp"] * 200_000) + "]\n")
    with pytest.raises(UserError, match="MAX_DOCUMENT_BYTES") as info:
        read_source(path)
    assert str(path) in str(info.value)
    with pytest.raises(UserError, match="MAX_DOCUMENT_BYTES"):
        parse_yaml("#" * (MAX_DOCUMENT_BYTES + 1))


def test_nesting_depth():
    parse_yaml("[" * (MAX_YAML_DEPTH - 1) + "]" * (MAX_YAML_DEPTH - 1))
    with pytest.raises(UserError, match="MAX_YAML_DEPTH"):
        parse_yaml("[" * 1000 + "]" * 1000)


def test_duplicate_keys_are_refused():
    with pytest.raises(UserError, match="duplicate key 'd_model' .first given on line 1.") as info:
        parse_yaml("d_model: 64\nlayers: [mlp]\nd_model: 128\n")
    assert info.value.line == 3


@pytest.mark.parametrize("content, words", [
    (b"d_model: 64\nname: caf\xe9\nlayers: [mlp]\n", "not UTF-8 text (byte 0xe9 at offset 21)"),
    (b"\xff\xfe\x00d", "not UTF-8 text (byte 0xff at offset 0)"),
])
def test_files_that_are_not_utf8(tmp_path, content, words):
    path = tmp_path / "spec.yaml"
    path.write_bytes(content)
    with pytest.raises(UserError, match=re.escape(words)):
        load_spec(path)


def test_paths_that_are_not_regular_files(tmp_path):
    with pytest.raises(UserError, match="is a folder"):
        load_spec(tmp_path)
    with pytest.raises(UserError, match="not a regular file"):
        load_spec("/dev/null")
    with pytest.raises(UserError, match="file not found"):
        load_spec(tmp_path / "missing.yaml")


# ------------------------------------------------------------------------------------------------
# Architectures

def nested_loops(depth: int) -> str:
    body = "mlp"
    for _ in range(depth):
        body = f"{{loop: {{times: 1, body: [{body}]}}}}"
    return f"d_model: 64\nlayers: [{body}]\n"


def test_expanded_layer_count():
    err = refused("d_model: 64\nlayers:\n  - repeat: 1000000\n    body: [mlp]\n", "MAX_LAYERS", "1,000,000")
    assert err.path == "layers[0].repeat" and err.line == 3
    refused("d_model: 64\nlayers:\n  - loop: {times: 1000, body: [{repeat: 10, body: [mlp]}]}\n", "10,000 layers")
    refused("d_model: 64\nlayers: [" + ", ".join(["mlp"] * (MAX_LAYERS + 1)) + "]\n", "MAX_LAYERS")
    refused(f"d_model: 64\npattern: {'M' * (MAX_LAYERS + 1)}\nlegend: {{M: mlp}}\n", "MAX_LAYERS")
    spec = load_spec(f"d_model: 8\nlayers:\n  - repeat: {MAX_LAYERS // 2}\n    body: [mlp, mlp]\n")  # at the limit
    assert spec.layers[0].times == MAX_LAYERS // 2


def test_block_nesting():
    load_spec(nested_loops(MAX_NESTING))
    err = refused(nested_loops(MAX_NESTING + 1), "MAX_NESTING")
    assert err.path.endswith(".loop") and err.path.count("loop") == MAX_NESTING + 1
    refused(nested_loops(200), "MAX_YAML_DEPTH")


def test_integers_are_bounded():
    err = refused(f"d_model: {10 ** 400}\nlayers: [mlp]\n", "MAX_INTEGER", "characters")
    assert len(str(err)) < 300
    refused(f"d_model: 64\nlayers: [{{op: mamba, d_state: {MAX_INTEGER + 1}}}]\n", "MAX_INTEGER", "d_state")
    refused(f"d_model: 64\nlayers: [{{op: mlp, expansion: {10 ** 400}}}]\n", "expansion", "finite")


# ------------------------------------------------------------------------------------------------
# Primitive configs: finite numbers for free, bounds from field metadata

@dataclasses.dataclass
class _ToyConfig:
    scale: float = 1.0                                  # no metadata: still must be finite
    size: int = option(4, ge=1, le=64)
    items: tuple[float, ...] = (1.0,)


@pytest.fixture
def toy():
    @register("fuzz_toy")
    class Toy(Primitive):
        Config = _ToyConfig

    yield Toy
    unregister("fuzz_toy")


@pytest.mark.parametrize("params, field, words", [
    ({"scale": float("nan")}, "scale", "finite"), ({"scale": float("-inf")}, "scale", "finite"),
    ({"size": 0}, "size", "in [1, 64]"), ({"size": 65}, "size", "in [1, 64]"),
    ({"size": 10 ** 30}, "size", "MAX_INTEGER"), ({"items": [1.0, float("inf")]}, "items", "finite"),
])
def test_a_new_primitive_gets_finite_checks_and_its_bounds(toy, params, field, words):
    with pytest.raises(ConfigError) as info:
        make_config(toy, params)
    assert info.value.field == field and words in info.value.message


def test_bounded_refuses_an_unknown_bound():
    with pytest.raises(TypeError, match="minimum"):
        option(1, minimum=0)


# ------------------------------------------------------------------------------------------------
# Search spaces and ladders

SPACE = """name: lim
base: {d_model: 16}
layers:
  n_layers: {choice: [1, 2]}
  slot: {op: {choice: [attention, mlp]}}
task: {name: mqar, params: {vocab_size: 32, seq_len: 16, kv_pairs: 2, num_train: 32, num_test: 8}}
"""


@pytest.mark.parametrize("old, new, path, words", [
    ("{choice: [1, 2]}", "1000000", "layers.n_layers", "MAX_LAYERS"),
    ("{choice: [1, 2]}", "{int: [1, 2000000000]}", "layers.n_layers", "MAX_GRID_POINTS"),
    ("{choice: [1, 2]}", "{int: [1, 100000000000000000000]}", "layers.n_layers.int", "MAX_INTEGER"),
    ("  slot:", "  loop: 3000\n  slot:", "layers.n_layers", "MAX_LAYERS"),
    ("  n_layers: {choice: [1, 2]}\n  slot: {op: {choice: [attention, mlp]}}",
     "  slots: [" + ", ".join(["mlp"] * (MAX_LAYERS + 1)) + "]", "layers.slots", "MAX_LAYERS"),
    ("base: {d_model: 16}", "base: {d_model: {int: [8, 2000]}, vocab_size: {int: [32, 4000]}}\nstrategy: grid",
     "strategy.name", "MAX_GRID_POINTS"),
    ("base: {d_model: 16}", f"base: {{d_model: 16}}\nseed: {MAX_SEED + 1}", "seed", "at most"),
    ("base: {d_model: 16}", "base: {d_model: 16}\nconstraints: {max_params: .nan}", "constraints.max_params",
     "finite"),
    ("base: {d_model: 16}", "base: {d_model: 16}\nconstraints: {max_params: -5}", "constraints.max_params",
     "positive"),
    ("base: {d_model: 16}", "base: {d_model: .nan}", "base", "none of 32 sampled candidates is valid"),
    ("slot: {op: {choice: [attention, mlp]}}", "slot: {op: attention, rope_base: -1}", "base", "rope_base"),
])
def test_search_space_limits(old, new, path, words):
    assert old in SPACE
    with pytest.raises(UserError) as info:
        load_space(SPACE.replace(old, new))
    assert info.value.path == path and words in info.value.message, str(info.value)


LADDER = """name: lim
task: {name: mqar, params: {vocab_size: 32, seq_len: 16, kv_pairs: 2, num_train: 32, num_test: 8}}
architectures:
  a: {d_model: 16, layers: [mlp]}
sizes: [2K, 4K]
"""


@pytest.mark.parametrize("extra, path, words", [
    (f"seeds: [{MAX_SEED + 1}]", "seeds", "seeds in [0"), ("seeds: [-1]", "seeds", "seeds in [0"),
    (f"bootstrap: {MAX_BOOTSTRAP + 1}", "bootstrap", "MAX_BOOTSTRAP"),
    ("budget: {tokens_per_param: .nan}", "budget.tokens_per_param", "finite"),
    ("loss_metric: {a: 1}", "loss_metric", "metric name"),
    ("seeds: [0, 1]\nbudget: {flops: [1e12, 2e12, 3e12, 4e12, 5e12]}", None, None),       # 20 trials: fine
    (f"sizes: [{', '.join(str(1000 + i) for i in range(MAX_LADDER_TRIALS + 1))}]", "sizes", "MAX_LADDER_TRIALS"),
])
def test_ladder_limits(extra, path, words):
    text = LADDER.replace("sizes: [2K, 4K]\n", "") + extra + "\n" if extra.startswith("sizes") else LADDER + extra + "\n"
    if path is None:
        load_ladder(text)
        return
    with pytest.raises(UserError) as info:
        load_ladder(text)
    assert info.value.path == path and words in info.value.message, str(info.value)


def test_every_limit_is_documented():
    for name in limits.__all__:
        assert name in limits.__doc__, name
        assert isinstance(getattr(limits, name), int)
    assert MAX_GRID_POINTS >= 10**6 and MAX_LAYERS >= 1024     # far above any real input


@pytest.mark.parametrize("budget, path, message", [
    ({"tokens": "1e39"}, "budget.tokens", "expected at most 1e+15"),
    ({"tokens_per_param": 20, "max_tokens": 10**16}, "budget.max_tokens", "expected at most 1e+15"),
    ({"flops": [1e12, 1e31]}, "budget.flops[1]", "expected at most 1e+30"),
])
def test_ladder_budgets_are_bounded(budget, path, message):
    ladder = {"name": "l", "task": "mqar", "architectures": {"a": {"d_model": 16, "layers": ["mlp"]}},
              "sizes": ["10K", "20K"], "budget": budget}
    with pytest.raises(UserError) as info:
        load_ladder(ladder)
    assert info.value.path == path and message in info.value.message


def test_default_heads_is_the_largest_valid_count_and_bounded_work():
    from primitives.common import default_heads

    def counting_down(width, head_dim, divides_also):
        heads = max(1, width // head_dim)
        while width % heads or divides_also % heads:
            heads -= 1
        return heads

    for width in range(1, 400):
        for head_dim, divides_also in ((64, 0), (16, 0), (8, 96), (1, 0), (32, 7)):
            assert default_heads(width, head_dim, divides_also) == counting_down(width, head_dim, divides_also)
    # a width with few divisors: counting down from 794,902 took ~800K steps per call; the divisor pairs ~7K
    assert default_heads(50_873_777) == counting_down(50_873_777, 64, 0)
