"""Real (tiny) searches on Ray with the layer-wise options: the consensus trained as its own trial (flagged in the
leaderboard and the study, compared in summary.json, not trained again on resume), k-means / threshold top sets
with N_0 / N_c votes, equal-size candidates, the lr x weight-decay grid, and the end-layer incremental search."""

import csv
import json
import textwrap

import optuna
import pytest

from composer import arch_id, load_spec
from composer.costs import model_cost
from composer.search import search

BASE = textwrap.dedent("""\
    name: NAME
    base: {d_model: 16, defaults: {attention: {n_heads: 2}}}
    layers:
      n_layers: 3
      slot: {op: {choice: [attention, mlp]}}
    task: {name: mqar, params: {vocab_size: 32, seq_len: 16, kv_pairs: 2, num_train: 500, num_test: 50}}
    objectives: [{metric: accuracy, mode: max}]
    scheduler: none
    resources: {cpus_per_trial: 1, max_concurrent: 1}
    """)


@pytest.fixture(scope="module")
def ray_session():
    import ray

    from composer.search.runner import start_ray

    start_ray(None, verbose=False)
    yield
    ray.shutdown()


def read_rows(run):
    with open(run / "leaderboard.csv", newline="") as f:
        return list(csv.DictReader(f))


def check_consensus_trial(run, name, result):
    rows = read_rows(run)
    flagged = [r for r in rows if r["consensus"] == "True"]
    assert len(flagged) == 1 and flagged[0]["status"] == "completed"
    consensus = load_spec(str(run / "consensus.yaml"))
    assert flagged[0]["arch_id"] == arch_id(consensus) == arch_id(result.consensus)
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{run / 'study.db'}")
    trial = study.trials[int(flagged[0]["trial"])]
    assert trial.user_attrs["consensus"] is True and trial.state.name == "COMPLETE" and trial.params == {}
    assert trial.value == float(flagged[0]["accuracy"])
    summary = json.loads((run / "summary.json").read_text())["consensus"]
    searched = [r for r in rows if r["consensus"] != "True" and r["status"] == "completed"]
    best = max(searched, key=lambda r: float(r["accuracy"]))
    assert summary["trial"] == int(flagged[0]["trial"]) and summary["value"] == float(flagged[0]["accuracy"])
    assert summary["best_value"] == float(best["accuracy"]) and not result.best_row.get("consensus")
    assert summary["beats_best"] == (float(flagged[0]["accuracy"]) > float(best["accuracy"]))
    return rows, flagged[0]


@pytest.mark.slow
def test_one_shot_trains_a_matched_consensus_with_the_lr_weight_decay_grid(ray_session, tmp_path):
    space = BASE.replace("NAME", "oneshot") + textwrap.dedent("""\
        train: {steps: 4, lrs: [1.0e-3, 3.0e-3], weight_decays: [0.0, 0.1], batch_size: 4, warmup_steps: 1}
        strategy: {name: one_shot, options: {sampler: gp}}
        aggregate: {select: kmeans, clusters: 2, vote: n0}
        match: {params: base, by: d_ff, tol: 0.03}
        trials: 4
        """)
    result = search(space, runs_dir=tmp_path, progress=lambda state: None)
    run = tmp_path / "oneshot"
    rows, consensus = check_consensus_trial(run, "oneshot", result)
    assert len(rows) == 5 and int(consensus["trial"]) == 4
    target = model_cost(load_spec({"d_model": 16, "vocab_size": 32, "max_seq_len": 16, "layers": ["attention"] * 3,
                                   "defaults": {"attention": {"n_heads": 2}}}), seq_len=16).non_embedding_params
    for row in rows:
        trial = json.loads((run / "trials" / row["trial"] / "result.json").read_text())
        spec = load_spec(str(run / "trials" / row["trial"] / "spec.yaml"))
        size = model_cost(spec, seq_len=16).non_embedding_params
        assert abs(size - target) <= 0.03 * target                     # equal-size candidates, consensus too
        if row["consensus"] != "True":
            assert trial["match"]["target"] == target and trial["match"]["reached"] == size
        if row["reused"] != "True":       # every run of the grid recorded, the best one kept
            assert sorted((r["lr"], r["weight_decay"]) for r in trial["sweep"]) == [
                (1e-3, 0.0), (1e-3, 0.1), (3e-3, 0.0), (3e-3, 0.1)]
            kept = max(trial["sweep"], key=lambda r: r["accuracy"])
            assert (trial["lr"], trial["weight_decay"]) == (kept["lr"], kept["weight_decay"])
    # a resume of the finished search trains nothing, the consensus included
    again = search(None, run_dir=run, resume=True, progress=lambda state: None)
    assert read_rows(run) == rows and again.summary["consensus"]["trial"] == int(consensus["trial"])


@pytest.mark.slow
def test_incremental_end_layer_search_with_a_threshold_and_nc_vote(ray_session, tmp_path):
    space = BASE.replace("NAME", "grow_end").replace("n_layers: 3", "n_layers: 4") + textwrap.dedent("""\
        train: {steps: 4, lr: 3.0e-3, batch_size: 4, warmup_steps: 1}
        strategy: {name: incremental, options: {step: 2, sampler: tpe}}
        aggregate: {select: threshold, threshold: 0.5, vote: nc, context: 1}
        trials: 6
        """)
    result = search(space, runs_dir=tmp_path, progress=lambda state: None)
    run = tmp_path / "grow_end"
    rows, consensus = check_consensus_trial(run, "grow_end", result)
    stages = json.loads((run / "incremental.json").read_text())["stages"]
    assert [s["new"] for s in stages] == [[0, 1], [2, 3]] and [len(s["trials"]) for s in stages] == [3, 3]
    depth = {r["trial"]: len(load_spec(str(run / "trials" / r["trial"] / "spec.yaml")).layers) for r in rows}
    assert {depth[str(t)] for t in stages[0]["trials"]} == {2} and {depth[str(t)] for t in stages[1]["trials"]} == {4}
    assert result.best_row["trial"] in stages[1]["trials"] and len(result.consensus.layers) == 4
    assert "N_1 vote" in result.consensus.description
