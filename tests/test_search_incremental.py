"""Incremental layer-wise search: the stages (end and middle variants), the vote that freezes each stage, the
final consensus over full-depth candidates only, resume at the stage where it stopped (without Ray: the stages
driven directly), and real searches on Ray killed with -9 between stages and inside a stage (slow)."""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest

from composer import load_spec
from composer.search.space_parse import load_space
from composer.search.strategies.incremental import (
    STATE_FILE,
    end_groups,
    final_rows,
    middle_groups,
    plan,
    run_incremental,
    stage_space,
)

ROOT = Path(__file__).resolve().parents[1]
SPACE = textwrap.dedent("""\
    name: inc
    base: {d_model: 32, defaults: {attention: {n_heads: 2}, gla: {n_heads: 2}}}
    layers:
      n_layers: 4
      slot: {op: {choice: [attention, gla, short_conv]}, channel: mlp}
    task: {name: mqar, params: {vocab_size: 64, seq_len: 32, kv_pairs: 4}}
    objectives: [{metric: accuracy, mode: max}]
    strategy: {name: incremental, options: {step: 2, VARIANT}}
    aggregate: {select: top_k, top_k: 3}
    trials: 12
    """)


def space_of(variant="end", **replace):
    text = SPACE.replace("VARIANT", f"variant: {variant}")
    for old, new in replace.items():
        text = text.replace(old, new)
    return load_space(text)


def test_groups_and_plan():
    assert end_groups(5, 2) == [[0, 1], [2, 3], [4]]
    assert middle_groups(6, 2) == [[0, 5], [1, 4], [2, 3]]
    assert middle_groups(7, 2) == [[0, 6], [1, 5], [2, 4], [3]]
    assert middle_groups(6, 3) == [[0, 1, 5], [2, 3, 4]]
    assert middle_groups(3, 4) == [[0, 1, 2]]
    stages = plan(space_of("middle"))
    assert [s.positions for s in stages] == [(0, 3), (0, 1, 2, 3)] and [s.new for s in stages] == [(0, 3), (1, 2)]
    assert [s.trials for s in stages] == [6, 6]
    assert [s.trials for s in plan(space_of("end").with_overrides(trials=7))] == [3, 4]


def ops(spec):
    return [layer.op for layer in spec.layers if layer.op != "mlp"]


class Driver:
    """Runs stages like the runner, on an in-memory study; the fitness prefers `wanted` slot by slot."""

    def __init__(self, wanted):
        self.wanted, self.rows, self.calls, self.storage = wanted, [], [], optuna.storages.InMemoryStorage()

    def run_stage(self, space, n):
        self.calls.append((list(space.layers.names), n))
        study = optuna.create_study(storage=self.storage, study_name="inc", direction="maximize",
                                    load_if_exists=True, sampler=optuna.samplers.RandomSampler(seed=len(self.rows)))
        for _ in range(n):
            trial = study.ask()
            candidate = space.sample(trial)
            names = space.layers.names
            score = sum(op == self.wanted[p] for op, p in zip(ops(candidate.spec), names)) / len(names)
            study.tell(trial, score)
            self.rows.append({"trial": trial.number, "status": "completed", "accuracy": score,
                              "arch_id": str(ops(candidate.spec)), "params_json": json.dumps(trial.params),
                              "ops": ops(candidate.spec)})


@pytest.mark.parametrize("variant", ["end", "middle"])
def test_stages_freeze_the_vote_and_name_slots_by_their_final_place(tmp_path, variant):
    space = space_of(variant)
    wanted = ["gla", "attention", "short_conv", "gla"]
    driver = Driver(wanted)
    run_incremental(space, tmp_path, lambda: driver.rows, driver.run_stage)
    first, second = plan(space)
    assert [c[0] for c in driver.calls] == [list(first.positions), list(second.positions)]
    stage_one = [r for r in driver.rows if int(r["trial"]) < first.trials]
    stage_two = [r for r in driver.rows if int(r["trial"]) >= first.trials]
    # stage one samples its two slots under their full-depth names; stage two only the new ones
    assert all(set(json.loads(r["params_json"])) == {f"layer{p}.op" for p in first.new} for r in stage_one)
    assert all(set(json.loads(r["params_json"])) == {f"layer{p}.op" for p in second.new} for r in stage_two)
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert state["variant"] == variant and [s["trials"] for s in state["stages"]] == [
        [int(r["trial"]) for r in stage_one], [int(r["trial"]) for r in stage_two]]
    # the frozen slots are the majority of stage one's top 3 (ties to the better-ranked), kept in stage two
    ranked = sorted(stage_one, key=lambda r: -r["accuracy"])
    top = [r for i, r in enumerate(ranked) if r["arch_id"] not in {q["arch_id"] for q in ranked[:i]}][:3]
    frozen = state["stages"][0]["frozen"]
    for p in first.new:
        column = [json.loads(r["params_json"])[f"layer{p}.op"] for r in top]
        assert frozen[str(p)] == {"op": max(column, key=lambda op: (column.count(op), -column.index(op)))}
    for row in stage_two:
        assert [row["ops"][second.positions.index(p)] for p in first.new] == [frozen[str(p)]["op"] for p in first.new]
    if variant == "middle":          # the first stage's slots are the outer ones: the new ones sit between them
        assert first.new == (0, 3) and second.new == (1, 2)
    # the final consensus and best come from the full-depth stage only
    assert final_rows(space, tmp_path, driver.rows) == stage_two


def test_resume_continues_the_stage_where_it_stopped(tmp_path):
    space = space_of("end")
    driver = Driver(["gla", "attention", "short_conv", "gla"])
    stop = {"after": 8}

    def stopping_stage(staged, n):
        driver.run_stage(staged, min(n, stop["after"] - len(driver.rows)))

    run_incremental(space, tmp_path, lambda: driver.rows, stopping_stage,
                    stopped=lambda: len(driver.rows) >= stop["after"])
    # stage one (6 trials) finished and recorded; stage two stopped after 2 of its 6: not recorded
    stages = json.loads((tmp_path / STATE_FILE).read_text())["stages"]
    assert len(stages) == 1 and stages[0]["trials"] == list(range(6)) and len(driver.rows) == 8
    kept = [dict(r) for r in driver.rows]
    driver.calls.clear()
    run_incremental(space, tmp_path, lambda: driver.rows, driver.run_stage)
    # the resumed run does not repeat stage one and adds only the 4 trials stage two lacks
    assert driver.calls == [([0, 1, 2, 3], 4)] and driver.rows[:8] == kept and len(driver.rows) == 12
    stages = json.loads((tmp_path / STATE_FILE).read_text())["stages"]
    assert stages[1]["trials"] == list(range(6, 12))
    run_incremental(space, tmp_path, lambda: driver.rows, driver.run_stage)
    assert len(driver.rows) == 12          # everything done: nothing runs


def test_stage_spaces_scale_the_size_target_to_their_depth():
    space = space_of("end", **{"aggregate: {select: top_k, top_k: 3}": "match: {params: 40000, by: d_ff}"})
    first, last = plan(space)
    assert stage_space(space, first, {}).match.target == pytest.approx(20000) and space.match.target == 40000
    # `base` is the full-depth base candidate's size, whatever the stage's frozen slots: the last stage's
    # candidates are matched to the same size as the consensus
    based = space_of("end", **{"aggregate: {select: top_k, top_k: 3}": "match: {params: base, by: d_ff}"})
    full = based.match_target()
    frozen = {0: {"op": "gla"}, 1: {"op": "short_conv"}}
    assert stage_space(based, first, {}).match.target == pytest.approx(full / 2)
    assert stage_space(based, last, frozen).match.target == pytest.approx(full)


def test_incremental_errors_name_the_field():
    from composer.errors import UserError

    with pytest.raises(UserError, match="expected one of end, middle") as info:
        space_of("sideways")
    assert info.value.path == "strategy.options.variant" and info.value.line == 8
    with pytest.raises(UserError, match="give `n_layers` as a number") as info:
        space_of("end", **{"n_layers: 4": "n_layers: {choice: [2, 4]}"})
    assert info.value.path == "layers.n_layers" and info.value.line == 4
    with pytest.raises(UserError, match="unknown field 'steps'") as info:
        space_of("end", **{"step: 2": "steps: 2"})
    assert info.value.path == "strategy.options.steps"
    with pytest.raises(UserError, match="expected an integer >= 1") as info:
        space_of("end", **{"step: 2": "step: 0"})
    assert info.value.path == "strategy.options.step" and info.value.line == 8
    with pytest.raises(UserError, match="unknown sampler 'gpp'; did you mean 'gp'") as info:
        space_of("end", **{"step: 2": "step: 2, sampler: gpp"})
    assert info.value.path == "strategy.options.sampler" and info.value.line == 8
    with pytest.raises(UserError, match="a plain strategy") as info:
        space_of("end", **{"step: 2": "step: 2, sampler: incremental"})
    with pytest.raises(UserError, match="expected a mapping") as info:
        space_of("end", **{"step: 2": "step: 2, sampler_options: 3"})
    assert info.value.path == "strategy.options.sampler_options" and info.value.line == 8


# -- real searches on Ray: kill -9 between stages and inside a stage ------------------------------------------

REAL = textwrap.dedent("""\
    name: grow
    base: {d_model: 16, defaults: {attention: {n_heads: 2}}}
    layers:
      n_layers: 4
      slot: {op: {choice: [attention, mlp]}}
    task: {name: mqar, params: {vocab_size: 32, seq_len: 16, kv_pairs: 2, num_train: 500, num_test: 50}}
    train: {steps: 6, lr: 3.0e-3, batch_size: 4, eval_every: 3, warmup_steps: 1}
    objectives: [{metric: accuracy, mode: max}]
    strategy: {name: incremental, options: {step: 2, variant: middle}}
    aggregate: {select: kmeans, clusters: 2, vote: nc, context: 1}
    scheduler: none
    resources: {cpus_per_trial: 1, max_concurrent: 1}
    trials: 8
    """)


def rows_of(run):
    path = run / "leaderboard.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r["status"] not in ("running", "interrupted")]


def stages_of(run):
    path = run / STATE_FILE
    return json.loads(path.read_text())["stages"] if path.is_file() else []


def start(run, resume=False):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    call = f"search(None, run_dir={str(run)!r}, resume=True)" if resume else \
        f"search({str(run.parent / 'space.yaml')!r}, run_dir={str(run)!r})"
    return subprocess.Popen([sys.executable, "-c", f"from composer.search import search; {call}"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def kill_9(driver):
    """SIGKILL the driver's whole session (it was started in its own: Ray's processes included)."""
    try:
        os.killpg(driver.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    driver.wait()


def wait_until(driver, condition, timeout=300):
    deadline = time.time() + timeout
    while not condition() and time.time() < deadline and driver.poll() is None:
        time.sleep(0.05)
    assert condition(), driver.stdout.read() if driver.poll() is not None else "timeout"


def check_kept(before, run):
    after = {r["trial"]: r for r in rows_of(run)}
    for number, row in before.items():            # finished trials are kept as they were, not re-run
        assert after[number] == row
    return after


@pytest.mark.slow
@pytest.mark.parametrize("where", ["between_stages", "inside_a_stage"])
def test_kill_9_and_resume_an_incremental_search(tmp_path, where):
    (tmp_path / "space.yaml").write_text(REAL)
    run = tmp_path / "grow"
    driver = start(run)
    try:
        if where == "between_stages":     # stage one recorded, stage two not started
            wait_until(driver, lambda: len(stages_of(run)) == 1)
        else:                             # stage two has finished trials, and is not recorded
            wait_until(driver, lambda: len(rows_of(run)) >= 5)
    finally:
        kill_9(driver)
    before = {r["trial"]: r for r in rows_of(run)}
    recorded = stages_of(run)
    assert len(recorded) == 1 and len(recorded[0]["trials"]) == 4
    resumed = start(run, resume=True)
    out, _ = resumed.communicate(timeout=600)
    kill_9(resumed)
    assert resumed.returncode == 0, out
    after = check_kept(before, run)
    stages = stages_of(run)
    assert stages[0] == recorded[0]                  # stage one is not voted again
    searched = [r for r in after.values() if r["consensus"] != "True"]
    assert sum(r["status"] == "completed" for r in searched) == 8
    stage_two = set(stages[1]["trials"])
    assert len(stage_two) == 4 and not stage_two & set(stages[0]["trials"])
    # stage two's trials keep stage one's vote in the outer slots (middle variant: slots 0 and 3)
    frozen = {int(p): v["op"] for p, v in stages[0]["frozen"].items()}
    for number in stage_two:
        layers = [layer.op for layer in load_spec(str(run / "trials" / str(number) / "spec.yaml")).layers]
        assert layers[0] == frozen[0] and layers[3] == frozen[3]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best"]["trial"] in stage_two           # the best is a full-depth candidate
    consensus = [r for r in after.values() if r["consensus"] == "True"]
    assert len(consensus) == 1 and summary["consensus"]["trial"] == int(consensus[0]["trial"])
    study = optuna.load_study(study_name="grow", storage=f"sqlite:///{run / 'study.db'}")
    flagged = [t for t in study.trials if t.user_attrs.get("consensus")]
    assert len(flagged) == 1 and flagged[0].state.name == "COMPLETE" and flagged[0].params == {}
