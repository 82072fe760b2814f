"""Scaling rules: stack keeps the pattern, stretch ratio and order, widen head sizes; fits land."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from composer import UserError, build_model, load_spec, model_cost
from composer.spec import Layer, Loop, Parallel, flatten
from scaling.rules import (
    fit_to_params,
    largest_remainder,
    param_count,
    runs,
    stack,
    stretch,
    units,
    widen,
)

LETTERS = {"A": "attention", "M": "mlp", "S": "mamba2", "G": "gated_deltanet"}


def spec_of(pattern: str, d_model: int = 64, **extra):
    return load_spec({"d_model": d_model, "layers": [LETTERS[c] for c in pattern], **extra})


def ops(spec) -> str:
    inverse = {v: k for k, v in LETTERS.items()}
    out = []
    for node in flatten(spec.layers):
        if isinstance(node, Layer):
            out.append(inverse[node.op])
        elif isinstance(node, Loop):
            out.append("(" + "".join(inverse[n.op] for n in node.body) + ")")
        else:
            assert isinstance(node, Parallel)
            out.append("[" + "|".join(inverse[n.op] for n in node.branches) + "]")
    return "".join(out)


def collapse(s: str) -> str:
    return "".join(k for k, _ in itertools.groupby(s))


def test_stretch_keeps_ratio_and_order():
    spec = spec_of("AAMMMM")
    assert ops(stretch(spec, 12)) == "A" * 4 + "M" * 8
    assert ops(stretch(spec, 9)) == "AAAMMMMMM"
    assert ops(stretch(spec, 2)) == "AM"


def test_stretch_rounding_is_largest_remainder_ties_to_earlier():
    # runs A, M, A, M of one unit each; 6 units: quota 1.5 each, the two spare units go to the first two runs
    assert ops(stretch(spec_of("AMAM"), 6)) == "AAMMAM"
    assert largest_remainder([1, 2], 4) == [1, 3]        # quotas 1.33 / 2.67: the larger remainder wins
    assert largest_remainder([10, 1], 2) == [1, 1]       # no run may vanish


def test_stretch_below_the_number_of_runs_is_an_error():
    with pytest.raises(UserError, match="cannot fit 4 runs of distinct layers into 3 layers"):
        stretch(spec_of("AMAM"), 3)


def test_runs_treat_loops_and_parallel_blocks_as_units():
    spec = load_spec({"d_model": 64, "layers": ["mlp", {"loop": {"times": 2, "body": ["attention", "mlp"]}},
                                               {"loop": {"times": 2, "body": ["attention", "mlp"]}},
                                               {"parallel": ["attention", "mamba2"]}]})
    assert [len(r) for r in runs(spec)] == [1, 2, 1]
    assert ops(stretch(spec, 8)) == "MM(AM)(AM)(AM)(AM)[A|S][A|S]"


@settings(max_examples=40, deadline=None)
@given(pattern=st.text(alphabet="AMS", min_size=1, max_size=10), extra=st.integers(0, 20))
def test_stretch_properties(pattern, extra):
    spec = spec_of(pattern)
    lengths = [len(r) for r in runs(spec)]
    n = len(pattern) + extra
    out = ops(stretch(spec, n))
    assert len(out) == n
    assert collapse(out) == collapse(pattern)                      # global order of runs kept
    new_lengths = [len(list(g)) for _, g in itertools.groupby(out)]
    for old, new in zip(lengths, new_lengths):
        assert abs(new - old * n / len(pattern)) < 1                # within one unit of the exact quota


@settings(max_examples=20, deadline=None)
@given(pattern=st.text(alphabet="AMSG", min_size=1, max_size=6), times=st.integers(1, 4))
def test_stack_keeps_the_pattern(pattern, times):
    spec = spec_of(pattern)
    assert ops(stack(spec, times)) == ops(spec) * times
    final_norm = spec.d_model
    blocks = model_cost(spec).non_embedding_params - final_norm
    assert model_cost(stack(spec, times)).non_embedding_params == times * blocks + final_norm


def test_stack_and_stretch_of_named_and_shared_layers_build():
    spec = load_spec("search_spaces/architectures/looped_shared.yaml")
    for scaled in (stack(spec, 2), stretch(spec, 11)):
        model = build_model(scaled)
        assert sum(p.numel() for p in model.parameters()) == model_cost(scaled).params
    assert len(units(stack(spec, 2))) == 2 * len(units(spec))


def test_widen_adds_heads_and_keeps_ratios():
    spec = load_spec({"d_model": 128, "defaults": {"attention": {"n_heads": 4}},
                      "layers": [{"op": "attention", "n_kv_heads": 2}, {"op": "mlp", "d_ff": 384},
                                 {"op": "mamba", "d_state": 8}, {"op": "mlp", "expansion": 2.0}]})
    wide = widen(spec, 256)
    assert wide.d_model == 256
    assert wide.defaults["attention"] == {"n_heads": 8}                     # head_dim 32 kept
    attention, mlp, mamba, mlp2 = wide.layers
    assert attention.params == {"n_kv_heads": 4}                          # GQA group size 2 kept
    assert mlp.params == {"d_ff": 768}
    assert mamba.params == {"d_state": 8}                                 # per-channel state kept
    assert mlp2.params == {"expansion": 2.0}
    resolved = wide.resolved_params(attention)
    assert resolved["head_dim"] == 32 and resolved["n_heads"] == 8


def test_widen_moves_head_counts_to_a_divisor():
    spec = load_spec({"d_model": 128, "layers": [{"op": "attention", "n_heads": 4}, "mlp"]})
    wide = widen(spec, 200)                       # 4 * 200/128 = 6.25 -> 6 does not divide 200 -> 5
    assert wide.layers[0].params == {"n_heads": 5}
    build_model(wide)


def test_widen_rejects_a_bad_width():
    with pytest.raises(UserError, match="d_model must be a positive integer"):
        widen(spec_of("AM"), 0)


@pytest.mark.parametrize("count", ["non_embedding", "total"])
@settings(max_examples=12, deadline=None)
@given(target=st.integers(150_000, 3_000_000))   # below, one width step is over 4% of the count
def test_fit_to_params_lands_within_tolerance(count, target):
    spec = spec_of("GMGMAM")
    fitted = fit_to_params(spec, target, tol=0.02, count=count)
    assert abs(param_count(fitted, count) - target) <= 0.02 * target
    assert collapse(ops(fitted)) == collapse(ops(spec) * (len(units(fitted)) // 6))   # stacked


def test_fit_to_params_stretches_long_searches():
    spec = spec_of("AM" * 2 + "SM" * 6)                 # 16 units: stretch
    fitted = fit_to_params(spec, 2_000_000, tol=0.02)
    assert collapse(ops(fitted)) == collapse(ops(spec))  # stretched: same runs in the same order
    assert len(units(fitted)) > 16 and fitted.d_model > 64
    assert abs(param_count(fitted) - 2_000_000) <= 40_000


def test_fit_to_params_counts_active_parameters_of_moe():
    spec = load_spec({"d_model": 64, "layers": ["attention", {"op": "moe", "n_experts": 8, "top_k": 2}]})
    fitted = fit_to_params(spec, 400_000, tol=0.02, count="active")
    active = param_count(fitted, "active")
    assert abs(active - 400_000) <= 8_000
    assert param_count(fitted, "non_embedding") > 2 * active      # most expert weights are idle per token


def test_fit_to_params_rejects_a_nonpositive_target():
    with pytest.raises(UserError, match="must be positive"):
        fit_to_params(spec_of("AM"), 0)


def test_widen_generic_rule_for_primitives_without_a_table_entry():
    from dataclasses import dataclass

    from primitives.base import ZERO_COST, Primitive, divides, register, unregister

    @dataclass
    class ToyConfig:
        n_heads: int = 2
        d_ff: int = 32
        kernel_size: int = 4
        expand: float = 2.0

    @register("toy_mixer")
    class Toy(Primitive):
        Config = ToyConfig

        @classmethod
        def check(cls, cfg, d_model):
            divides("n_heads", cfg.n_heads, d_model, "d_model")

        @classmethod
        def cost(cls, cfg, d_model, seq_len, dtype_bytes=2):
            return ZERO_COST

    try:
        spec = load_spec({"d_model": 64, "layers": [{"op": "toy_mixer", "n_heads": 2, "d_ff": 32,
                                                     "kernel_size": 4, "expand": 2.0}]})
        assert widen(spec, 192).layers[0].params == {"n_heads": 6, "d_ff": 96, "kernel_size": 4, "expand": 2.0}
        assert widen(spec, 160).layers[0].params["n_heads"] == 5
    finally:
        unregister("toy_mixer")


def test_stack_and_stretch_refuse_too_many_layers_before_building_them():
    spec = load_spec({"d_model": 16, "layers": ["attention", "mlp"]})
    with pytest.raises(UserError, match=r"^stack x100,000,000: 100,000,000 x 2 layers, more than 4,096"):
        stack(spec, 10**8)
    with pytest.raises(UserError, match=r"^stretch to 100,000,000 layers: more than 4,096"):
        stretch(spec, 10**8)
    assert len(stack(spec, 2048).layers[0].body) == 2 and len(stretch(spec, 4096).layers) == 4096
