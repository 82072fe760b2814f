"""Property-based tests: random valid specs build and cost exactly; random corruptions fail cleanly."""

import copy

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from composer import UserError, arch_id, build_model, load_spec, model_cost
from composer.spec_parse import dump_spec
from primitives import registered

SMALL = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

primitive = st.one_of(
    st.sampled_from(sorted(name for name in registered() if not name.startswith("toy_"))),
    st.just("mlp"),
    st.just("attention"),
    st.builds(lambda h, w: {"op": "attention", "n_heads": h, **({"window": w} if w else {})},
              st.sampled_from([1, 2, 4]), st.sampled_from([None, 3, 8])),
    st.builds(lambda k: {"op": "mlp", "kind": k}, st.sampled_from(["swiglu", "gelu", "relu2"])),
)


def compose(children):
    return st.one_of(
        st.builds(lambda n, body: {"repeat": n, "body": body}, st.integers(1, 2), st.lists(children, min_size=1, max_size=2)),
        st.builds(lambda n, body, inject: {"loop": {"times": n, "body": body, **({"inject": inject} if inject else {})}},
                  st.integers(1, 3), st.lists(children, min_size=1, max_size=2), st.sampled_from([None, "add", "concat"])),
    )


node = st.one_of(
    primitive,
    compose(primitive),
    st.builds(lambda a, b, c: {"parallel": [a, b], "combine": c}, primitive, primitive,
              st.sampled_from(["sum", "mean", "concat_proj"])),
)

spec_dicts = st.builds(
    lambda layers, d, tie, norm, pos: {"d_model": d, "vocab_size": 40, "max_seq_len": 32, "layers": layers,
                                       "tie_embeddings": tie, "norm": norm, "norm_position": pos},
    st.lists(node, min_size=1, max_size=4), st.sampled_from([16, 32]), st.booleans(),
    st.sampled_from(["rmsnorm", "layernorm"]), st.sampled_from(["pre", "post"]),
)


@SMALL
@given(spec_dicts)
def test_random_valid_specs_build_forward_and_cost_exactly(data):
    spec = load_spec(data)
    model = build_model(spec)
    assert model_cost(spec).params == sum(p.numel() for p in model.parameters())
    tokens = torch.randint(0, 40, (2, 7))
    assert model(tokens).logits.shape == (2, 7, 40)
    again = load_spec(dump_spec(spec))
    assert again == spec and arch_id(again) == arch_id(spec)


JUNK = st.one_of(st.none(), st.booleans(), st.integers(-2, 70), st.floats(-1, 2), st.text(max_size=8),
                 st.just([]), st.just({}), st.just(["attention"]))


def paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from paths(v, prefix + (i,))


@st.composite
def corrupted(draw):
    data = copy.deepcopy(draw(spec_dicts))
    targets = [p for p in paths(data) if p]
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(targets))
        parent = data
        try:
            for key in path[:-1]:
                parent = parent[key]
            action = draw(st.sampled_from(["replace", "delete", "add_key"]))
            if action == "replace":
                parent[path[-1]] = draw(JUNK)
            elif action == "delete":
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[draw(st.sampled_from(["n_heads", "times", "op", "body", "share", "bogus"]))] = draw(JUNK)
        except (KeyError, IndexError, TypeError):
            continue
    return data


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corrupted())
def test_random_corruptions_give_a_clean_error_or_a_valid_model(data):
    try:
        spec = load_spec(data)
    except UserError as e:
        assert str(e)
        return
    model = build_model(spec)
    assert model_cost(spec).params == sum(p.numel() for p in model.parameters())
    tokens = torch.randint(0, spec.vocab_size, (1, 5))
    assert model(tokens).logits.shape == (1, 5, spec.vocab_size)
