"""Aggregation: the top set (top_k, threshold, exact 1-D k-means) and the vote (N_0, N_c) on hand-made
leaderboards with known answers, and the `aggregate:` YAML key's errors."""

import random

import pytest

from composer import load_spec, stripe
from composer.errors import UserError
from composer.search.aggregate import Aggregation, kmeans_1d, select_top, top_cluster_size, vote_keys, vote_specs
from composer.search.space_parse import load_space


def rows_of(values, metric="accuracy"):
    return [{"trial": i, "status": "completed", "arch_id": f"a{i}", metric: v} for i, v in enumerate(values)]


def brute_force_kmeans(values, k):
    """The least within-cluster sum of squares over every split of the sorted values into k runs."""
    from itertools import combinations

    xs = sorted(values)
    best = None
    for cuts in combinations(range(1, len(xs)), k - 1):
        bounds = [0, *cuts, len(xs)]
        groups = [xs[a:b] for a, b in zip(bounds, bounds[1:])]
        cost = sum(sum((x - sum(g) / len(g)) ** 2 for x in g) for g in groups)
        if best is None or cost < best[0] - 1e-12:
            best = (cost, groups)
    return best


def test_kmeans_known_clusters():
    values = [0.9, 0.91, 0.92, 0.5, 0.52, 0.1]
    assert kmeans_1d(values, 3) == [2, 2, 2, 1, 1, 0]
    assert kmeans_1d([1, 1, 1, 2], 3) == [0, 0, 0, 1]          # fewer distinct values than clusters
    assert kmeans_1d([3.0, 1.0, 2.0], 5) == [2, 0, 1]
    assert kmeans_1d([], 3) == []
    with pytest.raises(ValueError):
        kmeans_1d([1.0], 0)


def test_kmeans_is_the_exact_optimum():
    """The dynamic programme finds the same least sum of squares as trying every split."""
    rng = random.Random(0)
    for _ in range(30):
        values = [round(rng.gauss(0, 1), 3) for _ in range(rng.randint(3, 9))]
        k = rng.randint(1, 4)
        if len(set(values)) < k:
            continue
        labels = kmeans_1d(values, k)
        groups = {}
        for v, label in zip(values, labels):
            groups.setdefault(label, []).append(v)
        cost = sum(sum((x - sum(g) / len(g)) ** 2 for x in g) for g in groups.values())
        assert cost == pytest.approx(brute_force_kmeans(values, k)[0], abs=1e-9)


def test_select_kmeans_takes_the_top_cluster():
    # accuracy (max): 0.91 0.9 0.89 | 0.6 0.58 | 0.2 0.1  -> the top cluster is the first three
    rows = rows_of([0.6, 0.9, 0.2, 0.91, 0.58, 0.89, 0.1])
    top = select_top(rows, "accuracy", "max", clusters=3)
    assert [r["trial"] for r in top] == [3, 1, 5]
    assert [r["trial"] for r in select_top(rows, "accuracy", "max", clusters=3, top_k=2)] == [3, 1]
    # val_loss (min): the best are the smallest values
    losses = rows_of([2.0, 1.1, 1.12, 3.0, 2.05], "val_loss")
    assert [r["trial"] for r in select_top(losses, "val_loss", "min", clusters=3)] == [1, 2]
    assert top_cluster_size([0.9, 0.9, 0.9], 2) == 3                 # equal values are one cluster


def test_aggregation_selects_by_its_select():
    rows = rows_of([0.6, 0.9, 0.2, 0.91, 0.58, 0.89, 0.1])
    assert [r["trial"] for r in Aggregation("threshold", threshold=0.015).top(rows, "accuracy", "max")] == [3, 1]
    assert [r["trial"] for r in Aggregation("kmeans", clusters=3).top(rows, "accuracy", "max")] == [3, 1, 5]
    assert [r["trial"] for r in Aggregation("top_k", top_k=4).top(rows, "accuracy", "max")] == [3, 1, 5, 0]
    assert [r["trial"] for r in Aggregation("top_k").top(rows, "accuracy", "max")] == [3, 1, 5]   # quarter, >= 3


def test_nc_vote_follows_the_context_where_n0_does_not():
    stacks = [list("AAM"), list("MMA"), list("MMA"), list("AMM"), list("AMM")]
    # N_0: position 0 A (3 of 5), position 1 M (4 of 5), position 2 M (A 2, M 3) -> "AMM"
    assert vote_keys(stacks, 0) == list("AMM")
    # N_1: position 0 A; position 1 among stacks starting with A: A, M, M -> M; position 2 among stacks whose
    # previous layer is M (MMA, MMA, AMM, AMM, M at 1): tie A 2 vs M 2 -> the better-ranked (MMA) -> A
    assert vote_keys(stacks, 1) == list("AMA")
    # N_2: position 2 among stacks whose first two layers are "AM": AMM, AMM -> M
    assert vote_keys(stacks, 2) == list("AMM")


def test_nc_vote_ties_depth_and_fallback():
    # position 1 among the stacks starting with B: A 1, C 1 -> the better-ranked
    assert vote_keys([list("AB"), list("BA"), list("BC")], 1) == list("BA")
    # N_2 at position 2: only CDY starts with the consensus "C D"
    assert vote_keys([list("ABX"), list("CDY"), list("CEY")], 2) == list("CDY")
    # depth: the most common depth; a position only counts the stacks that reach it
    assert vote_keys([list("AB"), list("ABC"), list("AB")], 1) == list("AB")
    # depth 3 (three votes); "A B" comes from the depth-2 stacks, so no stack reaching position 2 has B at 1:
    # the context shrinks to none there (N_0 over CXE, CYF, DZG -> E, the better-ranked)
    stacks = [list("AB"), list("CXE"), list("CYF"), list("AB"), list("DZG")]
    assert vote_keys(stacks, 1) == list("ABE")
    with pytest.raises(ValueError):
        vote_keys([], 1)


def spec(*ops, **fields):
    return load_spec({"d_model": 32, "defaults": {"attention": {"n_heads": 2}}, "layers": list(ops), **fields})


def test_vote_specs_nc_and_ignored_width():
    ranked = [spec("attention", "mlp", "mlp"), spec("mlp", "mlp", "attention"), spec("mlp", "mlp", "attention"),
              spec("attention", "attention", "mlp"), spec("attention", "attention", "mlp")]
    n0 = vote_specs(ranked, context=0)
    n1 = vote_specs(ranked, context=1)
    # N_0: A (3/5), then position 1: M 3 vs A 2 -> M; position 2: M 3 vs A 2 -> M
    assert stripe(n0) == "A M M"
    # N_1: after A, the A-stacks vote position 1: M 1 vs A 2 -> A; after "A A": stacks with A at 1 -> M
    assert stripe(n1) == "A A M"
    assert "N_1 vote" in n1.description
    # a width set per candidate (match by d_ff) does not split the vote, and is left out of the consensus
    widths = [load_spec({"d_model": 32, "layers": [{"op": "mlp", "d_ff": f}, "attention"],
                         "defaults": {"attention": {"n_heads": 2}}}) for f in (40, 50, 60)]
    merged = vote_specs(widths, ignore=("d_ff",))
    assert merged.layers[0].op == "mlp" and "d_ff" not in merged.layers[0].params
    assert vote_specs(widths).layers[0].params["d_ff"] == 40       # without ignore: three keys, best wins


SPACE = """\
name: agg
base: {d_model: 32, defaults: {attention: {n_heads: 2}}}
layers:
  n_layers: 2
  slot: {op: {choice: [attention, mlp]}}
task: {name: mqar, params: {vocab_size: 64, seq_len: 32, kv_pairs: 4}}
strategy: {name: one_shot}
AGG
"""


def test_aggregate_key_parses():
    space = load_space(SPACE.replace("AGG", "aggregate: {select: kmeans, clusters: 4, vote: nc, context: 2}"))
    assert space.aggregate == Aggregation("kmeans", clusters=4, vote="nc", context=2, train=True)
    legacy = load_space(SPACE.replace("AGG", "").replace("{name: one_shot}",
                                                         "{name: one_shot, options: {top_k: 8, threshold: 0.05}}"))
    assert legacy.aggregate == Aggregation("threshold", top_k=8, threshold=0.05, train=True)
    # the consensus is trained in every search unless `train: false`; without `select`: threshold when given, else top_k when given, else 5-means
    assert load_space(SPACE.replace("AGG", "")).aggregate == Aggregation("kmeans", clusters=5, train=True)
    assert load_space(SPACE.replace("AGG", "aggregate: {top_k: 4}")).aggregate.select == "top_k"
    assert load_space(SPACE.replace("AGG", "aggregate: {clusters: 3}")).aggregate == Aggregation(
        "kmeans", clusters=3, train=True)
    plain = SPACE.replace("{name: one_shot}", "{name: random}")
    assert load_space(plain.replace("AGG", "")).aggregate == Aggregation(train=True)
    assert load_space(plain.replace("AGG", "aggregate: {vote: n0}")).aggregate.train
    assert not load_space(SPACE.replace("AGG", "aggregate: {train: false}")).aggregate.train


@pytest.mark.parametrize("text, path, message", [
    ("aggregate: {select: kmean}", "aggregate.select", "expected one of top_k, threshold, kmeans"),
    ("aggregate: {vote: n1}", "aggregate.vote", "expected one of n0, nc"),
    ("aggregate: {select: top_k, clusters: 3}", "aggregate.clusters", "applies with `select: kmeans`"),
    ("aggregate: {top_k: 3, clusters: 3}", "aggregate.clusters", "applies with `select: kmeans`"),
    ("aggregate: {vote: n0, context: 2}", "aggregate.context", "applies with `vote: nc`"),
    ("aggregate: {select: threshold}", "aggregate.threshold", "needs `threshold`"),
    ("aggregate: {select: threshold, threshold: -1}", "aggregate.threshold", "expected a number >= 0"),
    ("aggregate: {select: kmeans, clusters: 0}", "aggregate.clusters", "expected an integer >= 1"),
    ("aggregate: {top_k: 2, bogus: 1}", "aggregate.bogus", "unknown field 'bogus'"),
    ("aggregate: [kmeans]", "aggregate", "expected a mapping"),
    ("aggregate: {train: yes please}", "aggregate.train", "expected true or false"),
])
def test_aggregate_errors_name_path_and_line(text, path, message):
    with pytest.raises(UserError, match=message) as info:
        load_space(SPACE.replace("AGG", text))
    assert info.value.path == path and info.value.line == 8


def test_aggregate_and_legacy_options_conflict():
    text = SPACE.replace("AGG", "aggregate: {select: kmeans}").replace("{name: one_shot}",
                                                                       "{name: one_shot, options: {top_k: 3}}")
    with pytest.raises(UserError, match="give the top set in `aggregate:`") as info:
        load_space(text)
    assert info.value.path == "strategy.options.top_k" and info.value.line == 7
