"""Samplers (regularized evolution mutations), the searcher's trial states, and aggregation by majority vote
(more in test_search_aggregate.py; the incremental search in test_search_incremental.py)."""

import random
import textwrap

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from composer import load_spec, stripe
from composer.errors import UserError
from composer.search.aggregate import majority_vote, select_top
from composer.search.space_parse import load_space
from composer.search.strategies import RegularizedEvolutionSampler, allowed, make_sampler, mutate

SPACE = textwrap.dedent("""\
    name: evo
    base: {d_model: {choice: [32, 48, 64]}, defaults: {attention: {n_heads: 2}, gla: {n_heads: 2}}}
    layers:
      n_layers: {choice: [1, 2, 3, 4]}
      slot: {op: {choice: [attention, gla, short_conv]}, channel: mlp}
    task: {name: mqar, params: {vocab_size: 64, seq_len: 32, kv_pairs: 4}}
    strategy: {name: evolution, options: {population_size: 6, tournament_size: 3}}
    """)

OPS = CategoricalDistribution(["attention", "gla", "short_conv"])
DISTS = {"n_layers": CategoricalDistribution([1, 2, 3, 4]), "d_model": CategoricalDistribution([32, 48, 64]),
         **{f"layer{i}.op": OPS for i in range(4)}}
PARENT = {"n_layers": 3, "d_model": 48, "layer0.op": "attention", "layer1.op": "gla", "layer2.op": "short_conv",
          "layer3.op": "gla"}


def mutation(kind: str) -> tuple[dict, str]:
    for seed in range(200):
        child, how = mutate(PARENT, DISTS, random.Random(seed))
        if how.startswith(kind):
            return child, how
    raise AssertionError(f"no {kind} mutation drawn")


def test_mutations_are_structural():
    child, how = mutation("swap")
    i = int(how.split()[1].removeprefix("layer"))
    assert child[f"layer{i}.op"] == PARENT[f"layer{i + 1}.op"] and child[f"layer{i + 1}.op"] == PARENT[f"layer{i}.op"]
    child, how = mutation("insert")
    i = int(how.split()[1].removeprefix("layer"))
    assert child["n_layers"] == 4 and f"layer{i}.op" not in child        # the new layer is sampled afresh
    assert [child[f"layer{j + 1}.op"] for j in range(i, 3)] == [PARENT[f"layer{j}.op"] for j in range(i, 3)]
    child, how = mutation("delete")
    i = int(how.split()[1].removeprefix("layer"))
    kept = [PARENT[f"layer{j}.op"] for j in range(3) if j != i]
    assert child["n_layers"] == 2 and [child[f"layer{j}.op"] for j in range(2)] == kept
    child, how = mutation("change d_model")
    assert child["d_model"] in (32, 64)          # a width moves to a neighbouring value
    child, how = mutation("change layer")
    name = how.split()[1]
    assert child[name] != PARENT[name] and int(name[5]) < 3     # only layers in use are changed
    int_child, _ = mutate({"w": 5}, {"w": IntDistribution(1, 9, step=2)}, random.Random(0))
    assert int_child["w"] in (3, 7)


def test_allowed_checks_a_value_against_a_distribution():
    """A parent's value is reused only where the child's distribution offers it (public Optuna API only)."""
    assert allowed("gla", OPS) and not allowed("mamba2", OPS) and not allowed(None, OPS)
    widths = IntDistribution(1, 9, step=2)
    assert allowed(5, widths) and not allowed(4, widths) and not allowed(11, widths) and not allowed("5x", widths)
    lr = FloatDistribution(1e-4, 1e-2, log=True)
    assert allowed(1e-3, lr) and not allowed(0.1, lr) and not allowed(-1.0, lr)
    stepped = FloatDistribution(0.0, 1.0, step=0.25)
    assert allowed(0.75, stepped) and not allowed(0.3, stepped)


def test_evolution_sampler_trials_are_valid_mutated_specs():
    space = load_space(SPACE)
    sampler = make_sampler(space.strategy, space, seed=0)
    assert isinstance(sampler, RegularizedEvolutionSampler)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    specs = {}
    for _ in range(24):
        trial = study.ask()
        candidate = space.sample(trial)
        assert candidate.invalid is None
        specs[trial.number] = candidate.spec
        # fitness: prefer attention early in the stack, so evolution has something to climb
        ops = [layer.op for layer in candidate.spec.layers if layer.op != "mlp"]
        study.tell(trial, sum(op == "attention" for op in ops) / len(ops))
    assert len(sampler.mutations) == 24 - 6          # random until the population is full, then mutations
    kinds = {how.split()[0] for how in sampler.mutations.values()}
    assert kinds == {"change", "insert", "delete", "swap"}
    for number, how in sampler.mutations.items():
        # the child differs from some member of its population in at most the mutated places
        params = study.trials[number].params
        population = study.trials[max(0, number - 6):number]
        assert min(sum(params.get(k) != t.params.get(k) for k in set(params) | set(t.params))
                   for t in population) <= 5, how
    for spec in specs.values():
        load_spec(spec.to_dict())


def test_sampler_choices_and_errors():
    space = load_space(SPACE)
    for name, cls in [("random", optuna.samplers.RandomSampler), ("tpe", optuna.samplers.TPESampler),
                      ("nsga2", optuna.samplers.NSGAIISampler), ("grid", optuna.samplers.GridSampler)]:
        assert isinstance(make_sampler({"name": name}, space, 0), cls)
    # the layer-wise searches' default samplers follow benchmarks/bench_strategies.py: one-shot TPE, incremental
    # random; `options.sampler` chooses another
    assert isinstance(make_sampler({"name": "one_shot"}, space, 0), optuna.samplers.TPESampler)
    assert isinstance(make_sampler({"name": "incremental"}, space, 0), optuna.samplers.RandomSampler)
    assert isinstance(make_sampler({"name": "incremental", "options": {"sampler": "gp"}}, space, 0),
                      optuna.samplers.GPSampler)
    with pytest.raises(UserError, match="unknown strategy 'evolutoin'; did you mean 'evolution'"):
        make_sampler({"name": "evolutoin"}, space, 0)
    with pytest.raises(UserError, match="bad options for strategy 'tpe'"):
        make_sampler({"name": "tpe", "options": {"bogus": 1}}, space, 0)
    for name in ("tpe", "one_shot"):          # options that are not a mapping: a UserError, not a TypeError
        with pytest.raises(UserError, match="expected a mapping, got int") as info:
            make_sampler({"name": name, "options": 3}, space, 0)
        assert info.value.path == "strategy.options"
        with pytest.raises(UserError, match="expected a mapping, got int") as info:
            load_space(SPACE.replace("strategy: {name: evolution, options: {population_size: 6, tournament_size: 3}}",
                                     f"strategy: {{name: {name}, options: 3}}"))
        assert info.value.path == "strategy.options" and info.value.line is not None
    ranged = load_space(SPACE.replace("{choice: [32, 48, 64]}", "{int: [32, 64]}")
                        .replace("name: evo\n", "name: r\ntrain: {lr: {float: [0.001, 0.01]}}\n"))
    with pytest.raises(UserError, match="grid search needs discrete values; 'lr'"):
        make_sampler({"name": "grid"}, ranged, 0)


def spec(*ops):
    return load_spec({"d_model": 32, "defaults": {"attention": {"n_heads": 2}}, "layers": list(ops)})


def test_majority_vote_exact():
    ranked = [spec("attention", "mlp", "short_conv", "mlp"),
              spec("short_conv", "mlp", "short_conv", "mlp"),
              spec("attention", "mlp", "attention", "mlp", "attention", "mlp"),
              spec("short_conv", "mlp", "attention", "mlp")]
    consensus = majority_vote(ranked)
    # depth: 4 (three votes) over 6; position 0: attention 2 vs short_conv 2 -> tie to the better-ranked;
    # position 2: short_conv 2 vs attention 2 -> tie to the better-ranked (short_conv)
    assert stripe(consensus) == "A M C M" and consensus.name == "consensus"
    assert majority_vote(ranked[1:]) == majority_vote(ranked[1:])
    assert stripe(majority_vote(ranked[1:])) == "C M A M"


def looped(times, *ops, **settings):
    return {"loop": {"times": times, "body": list(ops), **settings}}


def test_majority_vote_over_whole_stack_loops():
    """A space's `loop:` wraps the whole stack: the bodies vote layer by layer and the loop count is voted
    (no loop counts as 1), instead of one loop node outvoting a plain stack's first layer."""
    ranked = [spec("short_conv", "mlp", "attention", "mlp"),
              spec(looped(2, "attention", "mlp", "short_conv", "mlp", inject="add")),
              spec(looped(2, "attention", "mlp", "attention", "mlp")),
              spec(looped(3, "short_conv", "mlp", "attention", "mlp"))]
    consensus = majority_vote(ranked)
    # times: 2 (two votes); position 0: short_conv 2 vs attention 2 -> the better-ranked; position 2: attention 3
    assert len(consensus.layers) == 1 and consensus.layers[0].times == 2
    assert consensus.layers[0].inject == "add"      # the settings of the best candidate looped twice
    assert stripe(consensus) == "(C M A M)x2"
    assert stripe(majority_vote([ranked[0], ranked[3], ranked[1]])) == "C M A M"   # times 1, 3, 2: tie -> 1


def test_select_top_ranks_dedupes_and_thresholds():
    rows = [{"trial": 0, "status": "completed", "arch_id": "a", "accuracy": 0.5},
            {"trial": 1, "status": "pruned", "arch_id": "b", "accuracy": 0.9},
            {"trial": 2, "status": "completed", "arch_id": "c", "accuracy": 0.7},
            {"trial": 3, "status": "completed", "arch_id": "a", "accuracy": 0.5},
            {"trial": 4, "status": "completed", "arch_id": "d", "accuracy": float("nan")},
            {"trial": 5, "status": "completed", "arch_id": "e", "accuracy": 0.65}]
    assert [r["trial"] for r in select_top(rows, "accuracy", "max", top_k=10)] == [2, 5, 0]
    assert [r["trial"] for r in select_top(rows, "accuracy", "max", threshold=0.1)] == [2, 5]
    assert [r["trial"] for r in select_top(rows, "accuracy", "min", top_k=1)] == [0]
    assert [r["trial"] for r in select_top(rows, "accuracy", "max")] == [2, 5, 0]     # at least 3 by default
