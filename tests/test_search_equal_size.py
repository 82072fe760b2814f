"""The MAD protocol's fair comparison: equal-size candidates (`match:`: every candidate's parameter count or
state size lands within `tol` of the target by its named width, recorded per trial; the consensus is matched
too; the YAML key's errors) and the per-candidate learning-rate x weight-decay grid."""

import itertools

import optuna
import pytest

from composer.costs import model_cost
from composer.errors import UserError
from composer.search.equal_size import Match, MatchError
from composer.search.space_parse import load_space

SPACE = """\
name: equal
base: {d_model: 32, defaults: {attention: {n_heads: 4}}}
layers:
  n_layers: 4
  slot: {op: {choice: [attention, mlp]}}
task: {name: mqar, params: {vocab_size: 64, seq_len: 32, kv_pairs: 4}}
objectives: [{metric: accuracy, mode: max}]
MATCH
"""


def non_embedding(spec):
    return model_cost(spec, seq_len=32).non_embedding_params


def every_candidate(space):
    for ops in itertools.product(["attention", "mlp"], repeat=4):
        yield ops, space.sample(optuna.trial.FixedTrial({f"layer{i}.op": op for i, op in enumerate(ops)}))


def test_match_params_to_the_base_candidate_by_d_ff():
    plain = load_space(SPACE.replace("MATCH", ""))
    space = load_space(SPACE.replace("MATCH", "match: {params: base, by: d_ff, tol: 0.02}"))
    reference = plain.sample(optuna.trial.FixedTrial({f"layer{i}.op": "attention" for i in range(4)})).spec
    target = non_embedding(reference)                  # the first choice of every slot: four attention layers
    assert space.match_target() == target
    sizes = {non_embedding(c.spec) for _, c in every_candidate(plain)}
    assert max(sizes) / min(sizes) > 1.5               # unmatched, the candidates differ a lot
    for ops, candidate in every_candidate(space):
        size = non_embedding(candidate.spec)
        assert abs(size - target) <= 0.02 * target, (ops, size, target)
        record = candidate.record["match"]
        assert record["reached"] == size and record["target"] == target and record["by"] == "d_ff"
        d_ffs = {layer.params.get("d_ff") for layer in candidate.spec.layers if layer.op == "mlp"}
        assert d_ffs == {record["value"]} if "mlp" in ops else record["value"] is None   # one width per candidate


def test_match_params_by_d_model_to_a_number():
    space = load_space(SPACE.replace("MATCH", "match: {params: 40000, by: d_model, tol: 0.1}"))
    for ops, candidate in every_candidate(space):
        size = non_embedding(candidate.spec)
        assert abs(size - 40000) <= 0.1 * 40000, ops      # heads of 8 channels: coarse steps
        assert candidate.record["match"]["value"] == candidate.spec.d_model
        assert candidate.spec.d_model % 4 == 0 or "attention" not in ops      # a valid width for 4 heads


def test_match_state_bytes_by_d_state():
    space = load_space(SPACE.replace("attention: {n_heads: 4}", "mamba2: {n_heads: 2}").replace(
        "[attention, mlp]", "[mamba2, mamba]").replace("MATCH", "match: {state_bytes: base, by: d_state, tol: 0.1}"))
    target = space.match_target()
    for ops in itertools.product(["mamba2", "mamba"], repeat=4):
        candidate = space.sample(optuna.trial.FixedTrial({f"layer{i}.op": op for i, op in enumerate(ops)}))
        state = model_cost(candidate.spec, seq_len=32).state_bytes
        assert abs(state - target) <= 0.1 * target, (ops, state, target)


def test_a_candidate_that_cannot_match_is_invalid_with_the_reason():
    # all-attention candidates have no d_ff: with an MLP-sized target they cannot be matched
    space = load_space(SPACE.replace("[attention, mlp]", "[mlp, attention]").replace(
        "MATCH", "match: {params: base, by: d_ff}"))
    _, candidate = next((ops, c) for ops, c in every_candidate(space) if set(ops) == {"attention"})
    assert candidate.spec is None and "no layer has the parameter 'd_ff' to adjust" in candidate.invalid
    with pytest.raises(MatchError, match="cannot match non-embedding params 10 within 2.0%"):
        Match("params", 10, "d_ff").fit(space.sample_unmatched(optuna.trial.FixedTrial(
            {f"layer{i}.op": "mlp" for i in range(4)})).spec, 10, 32)


def test_the_consensus_is_matched_like_a_candidate():
    from composer.search.consensus import make_consensus

    space = load_space(SPACE.replace("MATCH", "match: {params: base, by: d_ff}\nstrategy: one_shot"))
    specs, rows = {}, []
    for i, (ops, candidate) in enumerate(every_candidate(space)):
        specs[i] = candidate.spec
        rows.append({"trial": i, "status": "completed", "arch_id": str(ops), "accuracy": ops.count("mlp") / 4})
    consensus = make_consensus(space, None, rows, lambda r: specs[r["trial"]], "c")
    target = space.match_target()
    assert abs(non_embedding(consensus) - target) <= 0.02 * target
    assert [layer.op for layer in consensus.layers] == ["mlp"] * 4 and "matched to" in consensus.description


@pytest.mark.parametrize("text, path, message", [
    ("match: {by: d_ff}", "match", "give one of params, state_bytes"),
    ("match: {params: 1000, state_bytes: 10, by: d_ff}", "match", "give one of params, state_bytes"),
    ("match: {params: lots, by: d_ff}", "match.params", "expected a positive number"),
    ("match: {params: base}", "match.by", "needs `by`"),
    ("match: {params: base, by: d_fff}", "match.by", "unknown width 'd_fff'; did you mean 'd_ff'"),
    ("match: {params: base, by: d_ff, tol: 2}", "match.tol", "relative tolerance below 1"),
    ("match: {params: base, by: d_ff, count: embedding}", "match.count", "expected one of non_embedding"),
    ("match: {state_bytes: base, by: d_ff, count: total}", "match.count", "`count` applies to `params`"),
    ("match: {params: base, by: d_ff, context: 64}", "match.context", "`context` applies to `state_bytes`"),
    ("match: {params: base, by: d_ff, exact: true}", "match.exact", "unknown field 'exact'"),
])
def test_match_errors_name_path_and_line(text, path, message):
    with pytest.raises(UserError, match=message) as info:
        load_space(SPACE.replace("MATCH", text))
    assert info.value.path == path and info.value.line == 8


def test_lr_by_weight_decay_grid_keeps_the_best_run_and_records_each():
    from composer import load_spec
    from composer.trainer import train

    spec = load_spec({"d_model": 16, "vocab_size": 32, "layers": ["mlp"]})
    params = {"vocab_size": 32, "seq_len": 16, "kv_pairs": 2, "num_train": 200, "num_test": 32}
    result = train(spec, "mqar", 4, lrs=[1e-3, 3e-3], weight_decays=[0.0, 0.5], batch_size=4, threads=1,
                   task_params=params)
    assert [(r["lr"], r["weight_decay"]) for r in result.sweep] == [(1e-3, 0.0), (1e-3, 0.5), (3e-3, 0.0),
                                                                    (3e-3, 0.5)]
    best = max(result.sweep, key=lambda r: r["accuracy"])        # MQAR is scored by accuracy; ties: the first
    assert result.metrics["val_loss"] == best["val_loss"] and result.out_dir == best["out_dir"]
    only_wd = train(spec, "mqar", 4, weight_decays=[0.0, 0.5], lr=2e-3, batch_size=4, threads=1, task_params=params)
    assert [(r["lr"], r["weight_decay"]) for r in only_wd.sweep] == [(2e-3, 0.0), (2e-3, 0.5)]


def test_weight_decays_errors_name_path_and_line():
    with pytest.raises(UserError, match="expected a list of numbers >= 0") as info:
        load_space(SPACE.replace("MATCH", "train: {lrs: [1.0e-3], weight_decays: [0.1, -1]}"))
    assert info.value.path == "train.weight_decays" and info.value.line == 8
