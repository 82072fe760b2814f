"""Search progress (composer/search/callbacks.py): elapsed time, an ETA, and the running trials' steps."""

from __future__ import annotations

from composer.search.callbacks import clock, eta, format_progress


def test_eta_is_mean_duration_times_rounds_left():
    assert eta([], 5, 2) is None                      # nothing finished yet: no estimate
    assert eta([10.0, 30.0], 4, 2) == 40.0            # 20 s a trial, 2 rounds of 2
    assert eta([10.0, 30.0], 3, 2) == 40.0            # a partial round still takes a round
    assert eta([10.0], 3, 0) == 30.0                  # nothing running: one at a time
    assert eta([10.0], 0, 1) == 0.0


def test_clock():
    assert clock(5) == "0:05" and clock(125.4) == "2:05" and clock(3725) == "1:02:05"


def test_progress_line_shows_elapsed_eta_and_running_steps():
    state = {"total": 8, "finished": 3, "running": 2, "counts": {"completed": 3, "running": 2}, "metric": "acc",
             "best": {"acc": 0.5, "trial": 1, "stripe": "A M"}, "elapsed_s": 65.0, "eta_s": 120.0,
             "steps": {3: 40, 4: 10}}
    line = format_progress(state)
    assert line.startswith("[3/8] completed 3; running 2 (trial 3 step 40, trial 4 step 10)")
    assert "elapsed 1:05, ETA 2:00" in line and "best acc 0.5 (trial 1: A M)" in line
    assert "ETA" not in format_progress({**state, "eta_s": None, "steps": {}})


def test_warmup_fraction_follows_budget_progress():
    from composer.training.config import TrainConfig
    from composer.training.schedule import lr_factor

    # a seconds budget: half-way through a 10% warmup is half the peak, whatever the step count
    assert lr_factor(3, 0.05, 50, "constant", warmup_fraction=0.1) == 0.5
    assert lr_factor(3, 0.0, 50, "constant", warmup_fraction=0.1) == 0.01
    assert lr_factor(3, 0.2, 50, "constant", warmup_fraction=0.1) == 1.0      # warmup_steps=50 no longer applies
    assert lr_factor(3, 0.2, 50, "constant") == 4 / 50
    config = TrainConfig.from_dict({"warmup_fraction": 0.05, "seconds": 60})
    assert config.lr_schedule.warmup_fraction == 0.05


def test_the_consensus_is_shown_apart_from_the_searched_trials():
    from types import SimpleNamespace

    from composer.search.callbacks import Recorder

    space = SimpleNamespace(objective_names=lambda: ["val_loss"], modes=lambda: ["min"], trials=2, seed=0)
    recorder = Recorder.__new__(Recorder)
    recorder.space, recorder.metrics, recorder.durations, recorder.steps = space, ["val_loss"], [], {}
    recorder.started = 0.0
    recorder.by_trial = {
        0: {"trial": 0, "status": "completed", "val_loss": 2.0, "stripe": "A M"},
        1: {"trial": 1, "status": "completed", "val_loss": 2.5, "stripe": "S2 M"},
        2: {"trial": 2, "status": "completed", "val_loss": 1.5, "stripe": "A S2", "consensus": True}}
    state = recorder.state()
    assert (state["finished"], state["total"], state["best"]["trial"]) == (2, 2, 0)
    line = format_progress(state)
    assert line.startswith("[2/2] completed 2; running 0")
    assert line.endswith("best val_loss 2 (trial 0: A M); consensus (trial 2: A S2) 1.5")
    recorder.by_trial[2].update(status="running", val_loss=None)
    assert format_progress(recorder.state()).endswith("; consensus (trial 2: A S2) running")


def test_the_closing_summary_counts_searched_trials_and_says_what_the_consensus_is():
    from types import SimpleNamespace

    from composer import load_spec
    from composer.cli.search import summary_text

    rows = [{"trial": 0, "status": "completed", "stripe": "A M"}, {"trial": 1, "status": "pruned", "stripe": "M M"},
            {"trial": 2, "status": "completed", "stripe": "A M", "consensus": True}]
    scored = {"trial": 2, "metric": "val_loss", "value": 2.0, "best_value": 2.0, "beats_best": False,
              "same_as_best": True}
    result = SimpleNamespace(rows=rows, run_dir="runs/x", best_row=rows[0], consensus=load_spec(
        {"d_model": 16, "layers": ["attention", "mlp"]}), summary={
        "counts": {"completed": 2, "pruned": 1}, "elapsed_s": 3.0, "planned_trials": 2, "consensus": scored,
        "objectives": [{"metric": "val_loss", "mode": "min"}]})
    text = summary_text(result)
    assert text.startswith("search finished: 2 trials (completed 1, pruned 1) in 3.0 s")
    assert "    trained as trial 2: the best single trial's architecture (val_loss 2.0)" in text
    scored.update(same_as_best=False, value=1.5, beats_best=True)
    assert "    trained as trial 2: val_loss 1.5, beats the best single trial (2.0)" in summary_text(result)
    rows[2].update(status="constraint", reason="params 1,000 > max_params 500")
    scored.update(trial=None)
    assert summary_text(result).splitlines()[4] == "    trial 2 (the consensus): constraint: params 1,000 > max_params 500"


def test_the_running_count_is_the_trials_that_run_until_the_next_line(tmp_path, capsys):
    """Two trials at a time: when one finishes, its successor starts just after; the line shown then says 2."""
    from types import SimpleNamespace

    from composer.runs import RunDir
    from composer.search.callbacks import Recorder

    space = SimpleNamespace(objective_names=lambda: ["val_loss"], modes=lambda: ["min"], trials=3, seed=0)
    states = []
    recorder = Recorder(RunDir(tmp_path), space, [], progress=states.append, show=True)

    def trial(n):
        meta = {"trial": n, "arch_id": f"a{n}", "stripe": "A M", "train": {"lr": 1e-3}, "params": {}}
        return SimpleNamespace(config={"meta": meta}, last_result={"final": True, "status": "completed",
                                                                    "val_loss": 2.0 + n})

    t0, t1, t2 = trial(0), trial(1), trial(2)
    recorder.on_trial_start(0, [], t0)
    recorder.on_trial_start(0, [], t1)
    recorder.on_trial_complete(0, [], t0)
    recorder.on_trial_start(0, [], t2)            # the successor of trial 0: two run again
    assert [(s["event"], s["trial"], s["running"]) for s in states] == [
        ("started", 0, 1), ("started", 1, 2), ("finished", 0, 1), ("started", 2, 2)]
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("[1/3] completed 1; running 2")
    recorder.on_trial_complete(0, [], t1)
    recorder.on_trial_complete(0, [], t2)
    assert (states[-1]["finished"], states[-1]["running"]) == (3, 0)
