"""Real (tiny) searches on one shared Ray session: files, trial states in the study, constraints, failures,
duplicate reuse. Plus the searcher's bookkeeping without Ray."""

import csv
import json
import os
import re
import textwrap
from pathlib import Path

import optuna
import pytest

from composer import arch_id, load_spec
from composer.errors import UserError
from composer.search import search
from composer.search.optuna_search import StudySearch

TINY = textwrap.dedent("""\
    name: tiny
    base: {d_model: 32, defaults: {attention: {n_heads: 2}, gla: {n_heads: 2}}}
    layers:
      n_layers: {choice: [1, 2]}
      slot: {op: {choice: [attention, gla]}, channel: mlp}
    task: {name: mqar, params: {vocab_size: 64, seq_len: 32, kv_pairs: 4, num_train: 2000, num_test: 100}}
    train: {steps: 20, lr: 3.0e-3, batch_size: 8, eval_every: 5, warmup_steps: 2}
    objectives: [{metric: accuracy, mode: max}]
    strategy: {name: random}
    scheduler: {name: asha, grace_period: 1, reduction_factor: 2}
    resources: {cpus_per_trial: 1, max_concurrent: 1}
    trials: 8
    """)


@pytest.fixture(scope="module")
def ray_session():
    import ray

    from composer.search.runner import start_ray

    start_ray(None, verbose=False)
    yield
    ray.shutdown()


def read_rows(run_dir):
    with open(run_dir / "leaderboard.csv", newline="") as f:
        return list(csv.DictReader(f))


def read_back_through_ray_tune(session: Path) -> dict[int, float]:
    """The README's documented read-back (Ray Tune's own ExperimentAnalysis): each trial's last accuracy."""
    from ray.tune import ExperimentAnalysis

    frame = ExperimentAnalysis(str(session)).dataframe()
    return {int(trial): accuracy for trial, accuracy in zip(frame["trial"], frame["accuracy"])}


def test_tiny_search_end_to_end(ray_session, tmp_path):
    progress = []
    result = search(TINY, runs_dir=tmp_path, progress=progress.append)
    run = tmp_path / "tiny"
    for name in ("space.yaml", "study.db", "leaderboard.csv", "best.yaml", "consensus.yaml", "summary.json"):
        assert (run / name).is_file(), name
    assert (run / "tune" / "session0").is_dir()
    rows = read_rows(run)
    # Ray Tune reads its own session back, as the leaderboard says (a trial that reused an identical architecture's
    # result trained nothing; the consensus runs in a session of its own)
    assert read_back_through_ray_tune(run / "tune" / "session0") == {
        int(r["trial"]): float(r["accuracy"]) for r in rows[:8] if r["reused"] != "True"}
    # 8 searched trials, then the consensus trained as trial 8 (counted apart in the progress)
    finished = [p for p in progress if p["event"] == "finished"]
    assert [int(r["trial"]) for r in rows] == list(range(9)) and len(finished) == 9
    assert sorted(p["trial"] for p in progress if p["event"] == "started") == list(range(9))
    assert [r["consensus"] for r in rows] == [""] * 8 + ["True"] and rows[8]["status"] == "completed"
    assert rows[8]["arch_id"] == arch_id(result.consensus)
    assert progress[-1]["finished"] == 8 and progress[-1]["running"] == 0 and progress[-1]["consensus"]["trial"] == 8
    summary = json.loads((run / "summary.json").read_text())
    assert summary["consensus"]["trial"] == 8 and summary["consensus"]["value"] == float(rows[8]["accuracy"])
    best_arch = rows[summary["consensus"]["best_trial"]]["arch_id"]
    assert summary["consensus"]["same_as_best"] == (best_arch == rows[8]["arch_id"])
    rows = rows[:8]
    statuses = {r["status"] for r in rows}
    assert statuses <= {"completed", "pruned"} and "pruned" in statuses    # ASHA stopped someone
    # the study tells the truth: pruned trials are PRUNED, not COMPLETE with a partial value
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{run / 'study.db'}")
    for row, trial in zip(rows, study.trials):
        expected = "COMPLETE" if row["status"] == "completed" else "PRUNED"
        assert trial.state.name == expected and trial.user_attrs["status"] == row["status"]
        spec = load_spec(str(run / "trials" / row["trial"] / "spec.yaml"))
        assert arch_id(spec) == row["arch_id"] == trial.user_attrs["arch_id"]
        if row["status"] == "completed":
            assert trial.value == float(row["accuracy"]) and int(row["step"]) == 20
            if row["reused"] != "True":
                curve = (run / "trials" / row["trial"] / "metrics.jsonl").read_text().splitlines()
                assert [json.loads(line)["step"] for line in curve] == [5, 10, 15, 20]
        else:
            assert int(row["step"]) < 20 and "stopped early" in row["reason"]
    best = load_spec(str(run / "best.yaml"))
    completed = [r for r in rows if r["status"] == "completed"]
    top = max(completed, key=lambda r: float(r["accuracy"]))
    assert arch_id(best) == top["arch_id"] and result.best_row["trial"] == int(top["trial"])
    assert load_spec(str(run / "consensus.yaml")) == result.consensus
    # the report reads the real run: ranked by the objective, best trial first, every figure drawn
    from composer.report import build_report

    page = build_report(run, progress=lambda *_: None)
    assert re.findall(r"<tr><td>(\d+)</td>", page.read_text())[0] == str(result.best_row["trial"])
    assert len(list(page.parent.glob("*.png"))) == 5
    with pytest.raises(UserError, match="already holds a search"):
        search(TINY, runs_dir=tmp_path)


RULES = TINY.replace("name: tiny", "name: rules").replace("trials: 8", "trials: 10").replace(
    "scheduler: {name: asha, grace_period: 1, reduction_factor: 2}", "scheduler: none").replace(
    "warmup_steps: 2}", "warmup_steps: 2, schedule: {choice: [cosine, bogus]}}").replace(
    "objectives:", "constraints: {max_params: 17000}\nobjectives:")


@pytest.mark.slow
def test_constraints_failures_and_duplicates(ray_session, tmp_path):
    result = search(RULES, runs_dir=tmp_path)
    run = tmp_path / "rules"
    everything = read_rows(run)
    rows = [r for r in everything if r["consensus"] != "True"]
    assert len(everything) - len(rows) <= 1         # the consensus, trained at the end (it samples no parameters)
    params = [json.loads(r["params_json"]) for r in rows]
    by_status = {}
    for row in rows:
        by_status.setdefault(row["status"], []).append(row)
    assert set(by_status) == {"completed", "constraint", "failed"}, [r["status"] for r in rows]
    for row, p in zip(rows, params):
        if p["n_layers"] == 2:       # every 2-layer candidate is over the parameter budget: never trained
            assert row["status"] == "constraint" and "max_params 17,000" in row["reason"]
            assert not (run / "trials" / row["trial"] / "metrics.jsonl").exists()
        elif p["schedule"] == "bogus":     # the trainer raises: recorded with its reason, the search goes on
            assert row["status"] == "failed" and "unknown schedule 'bogus'" in row["reason"]
        else:
            assert row["status"] == "completed"
    reused = [r for r in by_status["completed"] if r["reused"] == "True"]
    assert reused, "expected a duplicate candidate"
    for row in reused:
        original = next(r for r in by_status["completed"] if r["arch_id"] == row["arch_id"] and r["reused"] != "True")
        assert row["accuracy"] == original["accuracy"] and int(original["trial"]) < int(row["trial"])
        assert not (run / "trials" / row["trial"] / "metrics.jsonl").exists()
    study = optuna.load_study(study_name="rules", storage=f"sqlite:///{run / 'study.db'}")
    states = {"completed": "COMPLETE", "constraint": "PRUNED", "failed": "FAIL"}
    assert [t.state.name for t in study.trials] == [states[r["status"]] for r in everything]
    counts = {}
    for row in everything:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    assert result.summary["counts"] == counts


MAD_SUITE = textwrap.dedent("""\
    name: mad_suite
    base: {d_model: 32, defaults: {attention: {n_heads: 2}}}
    layers:
      n_layers: 1
      slot: {op: {choice: [attention, mlp]}}
    task: {name: mad, params: {tasks: [memorization, compression], num_train_examples: 64, num_test_examples: 16}}
    train: {steps: 3, lr: 3.0e-3, batch_size: 4}
    objectives: [{metric: accuracy, mode: max}]
    strategy: {name: grid}
    scheduler: {name: asha, grace_period: 1, reduction_factor: 2}
    resources: {cpus_per_trial: 1, max_concurrent: 1}
    trials: 2
    """)


def test_search_on_the_mad_suite(ray_session, tmp_path):
    """A suite trains one model per member: the trial reports the running mean after each member and
    finishes with the mean over tasks (this used to fail every trial)."""
    search(MAD_SUITE, runs_dir=tmp_path)
    run = tmp_path / "mad_suite"
    rows = read_rows(run)[:2]        # (then the consensus)
    assert len(rows) == 2 and {r["status"] for r in rows} <= {"completed", "pruned"}, rows
    completed = [r for r in rows if r["status"] == "completed"]
    assert completed
    for row in completed:
        result = json.loads((run / "trials" / row["trial"] / "result.json").read_text())
        tasks = [result["accuracy/memorization"], result["accuracy/compression"]]
        assert float(row["accuracy"]) == pytest.approx(sum(tasks) / 2)
    study = optuna.load_study(study_name="mad_suite", storage=f"sqlite:///{run / 'study.db'}")
    assert [t.state.is_finished() for t in study.trials] == [True, True, True]


def test_study_search_tells_pruned_and_failed_states():
    study_storage = optuna.storages.InMemoryStorage()
    searcher = StudySearch(space=lambda trial: {"x": trial.suggest_int("x", 0, 3)}, metric="objective_0",
                           mode="max", storage=study_storage, study_name="s")
    for trial_id in ("a", "b", "c", "d"):
        searcher.suggest(trial_id)
    searcher.on_trial_result("a", {"objective_0": 0.5, "evaluation": 1, "final": False})
    searcher.on_trial_complete("a", {"objective_0": 0.6, "evaluation": 2, "final": False})      # ASHA stop
    searcher.on_trial_complete("b", {"objective_0": 0.9, "evaluation": 4, "final": True, "status": "completed"})
    searcher.on_trial_complete("c", {"objective_0": -1e30, "final": True, "status": "diverged",
                                     "reason": "diverged at step 3"})
    searcher.on_trial_complete("d", None, error=True)
    trials = optuna.load_study(study_name="s", storage=study_storage).trials
    assert [t.state.name for t in trials] == ["PRUNED", "COMPLETE", "FAIL", "FAIL"]
    assert trials[0].intermediate_values == {1: 0.5, 2: 0.6} and trials[1].value == 0.9
    assert trials[2].user_attrs == {"status": "diverged", "reason": "diverged at step 3"}


def ours(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "composer.search.optuna_search"]


def test_study_search_multi_objective_grid_and_bad_values(caplog):
    """Several objectives: no intermediate reports, COMPLETE with every value. The grid sampler's Study.stop
    (raised outside optimize once the grid is used up) leaves the trial recorded and logs nothing; a value
    Optuna refuses (NaN) is logged and does not stop the search."""
    storage = optuna.storages.InMemoryStorage()
    grid = optuna.samplers.GridSampler({"x": [0, 1]}, seed=0)
    searcher = StudySearch(space=lambda trial: {"y": trial.suggest_int("x", 0, 1) * 2}, metric=["loss", "size"],
                           mode=["min", "max"], sampler=grid, storage=storage, study_name="m")
    configs = [searcher.suggest(trial_id) for trial_id in ("a", "b", "c")]
    assert sorted(c["x"] for c in configs[:2]) == [0, 1] and all(c["y"] == 2 * c["x"] for c in configs)
    searcher.on_trial_result("a", {"loss": 1.0, "size": 3, "evaluation": 1, "final": False})
    searcher.on_trial_complete("a", {"loss": 0.5, "size": 3, "evaluation": 2, "final": True, "arch_id": "x0"})
    with caplog.at_level("WARNING", logger="composer.search.optuna_search"):
        searcher.on_trial_complete("b", {"loss": 0.7, "size": 4, "evaluation": 2, "final": True})
        assert ours(caplog) == []                 # the grid is used up: Study.stop raised, the trial is stored
        with pytest.raises(RuntimeError, match="Study.stop"):      # (what the searcher caught)
            grid.after_trial(searcher.study, searcher.study.trials[1], optuna.trial.TrialState.COMPLETE, [0.7, 4])
        searcher.on_trial_complete("c", {"loss": float("nan"), "size": 4, "evaluation": 2, "final": True})
        assert ours(caplog) == [
            "could not record trial c in the study: The value nan is not acceptable"]
    trials = optuna.load_study(study_name="m", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "RUNNING"]
    assert trials[0].values == [0.5, 3.0] and trials[0].intermediate_values == {}
    assert trials[0].user_attrs == {"status": "completed", "arch_id": "x0"}


def test_study_search_fails_a_trial_whose_space_raises(tmp_path):
    def space(trial):
        trial.suggest_int("x", 0, 3)
        raise KeyError("bad space")

    searcher = StudySearch(space=space, metric="loss", mode="min", storage=optuna.storages.InMemoryStorage())
    with pytest.raises(KeyError):
        searcher.suggest("a")
    assert searcher.study.trials[0].state.name == "FAIL"
    searcher.on_trial_complete("a", None, error=True)      # Tune's notice afterwards changes nothing
    searcher.save(str(tmp_path / "searcher.pkl"))           # the study is the state: no searcher file
    assert searcher.study.trials[0].state.name == "FAIL" and list(tmp_path.iterdir()) == []


def test_prepare_resume_fails_and_requeues_cut_short_trials(tmp_path):
    """Only public Optuna calls: RUNNING trials are told FAIL, trials cut short are enqueued once with their
    parameters, WAITING ones are left to be asked, finished rows are kept."""
    from composer.runs import RunDir
    from composer.search.runner import prepare_resume

    run = RunDir(tmp_path)
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), direction="maximize")
    done = study.ask()
    done.suggest_int("x", 0, 9)
    study.tell(done, 0.5)                                       # 0: finished, in the leaderboard
    running = study.ask()
    running.suggest_int("x", 0, 9)                              # 1: killed while training
    study.ask()                                                 # 2: killed before sampling (no parameters)
    unrecorded = study.ask()
    unrecorded.suggest_int("x", 0, 9)
    study.tell(unrecorded, 0.7)                                 # 3: told, but its row was not written
    study.enqueue_trial({"x": 4})                               # 4: enqueued, never asked
    run.write_leaderboard([{"trial": 0, "status": "completed", "accuracy": 0.5},
                           {"trial": 1, "status": "running"}], ["accuracy"])
    rows = prepare_resume(run, study)
    assert [(r["trial"], r["status"]) for r in rows] == [(0, "completed")]
    trials = study.trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "FAIL", "COMPLETE", "WAITING", "WAITING",
                                              "WAITING"]
    assert [(t.user_attrs.get("retry_of"), t.system_attrs["fixed_params"]) for t in trials[5:]] == [
        (1, {"x": running.params["x"]}), (3, {"x": unrecorded.params["x"]})]
    prepare_resume(run, study)                                  # a second resume does not enqueue them again
    assert len(study.trials) == 7


def test_the_search_function_is_public_under_two_names():
    """`composer.search` is the package (no callable-module trick); its function is also `composer.run_search`."""
    import types

    import composer
    import composer.search

    assert composer.run_search is search is composer.search.search
    assert isinstance(composer.search, types.ModuleType) and not callable(composer.search)
    assert "run_search" in composer.__all__


def test_relative_data_paths_mean_what_they_mean_where_the_search_started(ray_session, tmp_path):
    # Tune would run each trial inside its trial folder, where a relative `data:` path names nothing
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be or not to be, that is the question.\n" * 200)
    relative = os.path.relpath(corpus, os.getcwd())
    space = textwrap.dedent(f"""\
        name: relative
        base: {{d_model: 16, vocab_size: 256, defaults: {{attention: {{n_heads: 2}}}}}}
        layers: [attention, mlp]
        task: {{name: text, params: {{data: {relative}, seq_len: 16}}}}
        train: {{steps: 2, batch_size: 2, eval_every: 2}}
        objectives: [{{metric: val_loss, mode: min}}]
        strategy: {{name: random}}
        resources: {{cpus_per_trial: 1, max_concurrent: 1}}
        trials: 1
        """)
    search(space, runs_dir=tmp_path / "runs")
    rows = read_rows(tmp_path / "runs" / "relative")
    assert [r["status"] for r in rows] == ["completed", "completed"], rows      # the trial, then the consensus


MULTI = textwrap.dedent("""\
    name: multi
    base: {d_model: 16, defaults: {attention: {n_heads: 2}}}
    layers:
      n_layers: 1
      slot: {op: {choice: [attention, mlp, short_conv]}}
    task: {name: mqar, params: {vocab_size: 32, seq_len: 16, kv_pairs: 2, num_train: 64, num_test: 16}}
    train: {steps: 2, lr: 3.0e-3, batch_size: 4}
    objectives: [{metric: accuracy, mode: max}, {metric: params, mode: min}]
    strategy: {name: grid}
    scheduler: none
    resources: {cpus_per_trial: 1, max_concurrent: 1}
    trials: 3
    """)


def test_a_multi_objective_search_writes_its_pareto_front_once_per_architecture(ray_session, tmp_path):
    result = search(MULTI, runs_dir=tmp_path)
    rows = read_rows(tmp_path / "multi")
    assert [r["consensus"] for r in rows] == ["", "", "", "True"]
    front = json.loads((tmp_path / "multi" / "pareto.json").read_text())
    assert [o["metric"] for o in front["objectives"]] == ["accuracy", "params"] and front["trials"]
    ids = [t["arch_id"] for t in front["trials"]]
    assert len(ids) == len(set(ids))                       # the consensus is never a second copy of a trial
    assert {t["trial"] for t in front["trials"]} <= {0, 1, 2, 3} and result.pareto == front["trials"]
    # the front is the non-dominated set of what was trained (higher accuracy, fewer parameters)
    scored = [(float(r["accuracy"]), int(r["params"]), r["arch_id"]) for r in rows]
    for acc, params, arch in scored:
        dominated = any(a >= acc and p <= params and (a, p) != (acc, params) for a, p, _ in scored)
        assert (arch in ids) == (not dominated), (arch, scored, ids)


def test_the_searcher_pickles_with_a_sampler_that_does_not(tmp_path):
    # Tune pickles the searcher with its experiment state; Optuna's NSGA-II sampler holds a thread lock, so the
    # study stays out of the pickle (its storage is the state) and hybrid_ratio.yaml's NSGA-II search can start
    import ray.cloudpickle

    searcher = StudySearch(space=lambda trial: {}, metric=["a", "b"], mode=["min", "min"],
                           sampler=optuna.samplers.NSGAIISampler(seed=0), storage=f"sqlite:///{tmp_path / 's.db'}",
                           study_name="s")
    with pytest.raises(TypeError):
        ray.cloudpickle.dumps(searcher.study.sampler)
    copy = ray.cloudpickle.loads(ray.cloudpickle.dumps(searcher))
    assert copy.study is None and copy.metrics == ["a", "b"] and searcher.study is not None
