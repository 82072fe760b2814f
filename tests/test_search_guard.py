"""A search is checked before anything is written, its folder is where the user said, and a resume is checked
against the study. None of these start Ray: every error here comes before it."""

import json
import os
import signal
import socket
import textwrap
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml

import composer.cli as cli
from composer.errors import UserError
from composer.interrupt import Interruption
from composer.runs import RunDir
from composer.search import load_space, search
from composer.search.resume import verify_resume
from composer.search.runner import SearchInterrupted, tune_stopper
from composer.search.setup import COST_METRICS, RUN_METRICS, reported_metrics

TINY = textwrap.dedent("""\
    name: tiny
    base: {d_model: 32, defaults: {attention: {n_heads: 2}, gla: {n_heads: 2}}}
    layers:
      n_layers: {choice: [1, 2]}
      slot: {op: {choice: [attention, gla]}, channel: mlp}
    task: {name: mqar, params: {vocab_size: 64, seq_len: 32, kv_pairs: 4, num_train: 200, num_test: 20}}
    train: {steps: 20, lr: {float: [1.0e-3, 1.0e-2], log: true}, batch_size: 8, eval_every: 5}
    objectives: [{metric: accuracy, mode: max}]
    strategy: {name: random}
    scheduler: {name: asha, grace_period: 1, reduction_factor: 2}
    resources: {cpus_per_trial: 1, max_concurrent: 1}
    trials: 8
    """)


def run_cli(capsys, *argv):
    code = cli.main(["search", *map(str, argv)])
    return code, capsys.readouterr().err.strip().splitlines()


def write_space(tmp_path, text=TINY, **replace):
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


BROKEN = [
    ({"strategy: {name: random}": "strategy: {name: randum}"}, "strategy.name: unknown strategy 'randum'"),
    ({"strategy: {name: random}": "strategy: {name: tpe, options: {bogus: 1}}"}, "strategy.options: bad options"),
    ({"strategy: {name: random}": "strategy: grid"}, "strategy.name: "),
    ({"scheduler: {name: asha, grace_period: 1, reduction_factor: 2}": "scheduler: {name: hyperband}"},
     "scheduler.name: unknown scheduler 'hyperband'"),
    ({"reduction_factor: 2": "reduction_factor: 2, bogus: 3"}, "scheduler: bad scheduler options"),
    ({"scheduler: {name: asha, grace_period: 1, reduction_factor: 2}": "scheduler: {name: none, grace_period: 1}"},
     "scheduler: scheduler 'none' takes no options"),
    ({"metric: accuracy": "metric: acuracy"}, "objectives[0].metric: trials on task mqar do not report 'acuracy'; "
                                              "did you mean 'accuracy'?"),
    ({"metric: accuracy": "metric: bits_per_byte"}, "objectives[0].metric: trials on task mqar do not report"),
    ({"cpus_per_trial: 1": "cpus_per_trial: 1000"}, "resources.cpus_per_trial: a trial asks for 1000 CPUs but this "
                                                    "machine has"),
    ({"cpus_per_trial: 1": "cpus_per_trial: 1, gpus_per_trial: 64"}, "resources.gpus_per_trial: a trial asks for 64 "
                                                                     "GPUs"),
]


@pytest.mark.parametrize("replace, message", BROKEN)
def test_errors_are_found_before_anything_is_written(tmp_path, capsys, replace, message):
    space = write_space(tmp_path, **replace)
    runs = tmp_path / "runs"
    for dry in ([], ["--dry-run"]):
        code, errors = run_cli(capsys, space, "--runs-dir", runs, *dry)
        assert code == 2 and len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0], errors
        assert not runs.exists()


def test_objectives_accept_every_metric_trials_report(tmp_path):
    space = load_space(TINY)
    for metric in ("val_loss", "accuracy", *COST_METRICS, *RUN_METRICS):
        load = TINY.replace("metric: accuracy", f"metric: {metric}")
        assert metric in reported_metrics(load_space(load))
    suite = load_space(TINY.replace("task: {name: mqar, params: {vocab_size: 64, seq_len: 32, kv_pairs: 4, "
                                    "num_train: 200, num_test: 20}}",
                                    "task: {name: mad, params: {tasks: [memorization], num_train_examples: 8, "
                                    "num_test_examples: 4}}"))
    assert reported_metrics(suite) == ("accuracy", "accuracy/memorization", *COST_METRICS)
    assert "val_loss" not in reported_metrics(suite) and "accuracy" in reported_metrics(space)


def test_task_metrics_are_what_evaluate_returns():
    """`Task.metrics` (what the objective check trusts) is held equal to a real evaluation's keys."""
    from composer import build_model, load_spec
    from composer.tasks import get_task

    tasks = [get_task("mqar", vocab_size=64, seq_len=16, kv_pairs=2, num_train=8, num_test=4),
             get_task("mad:memorization", num_train_examples=8, num_test_examples=4),
             get_task("text", seq_len=16, max_val_windows=4)]
    for task in tasks:
        spec = load_spec({"d_model": 16, "vocab_size": task.vocab_size, "max_seq_len": task.seq_len,
                          "layers": ["mlp"]})
        torch.manual_seed(0)
        assert set(task.evaluate(build_model(spec), 4)) == set(task.metrics), task.name


def test_run_metrics_are_what_a_trained_run_reports():
    from composer import train

    result = train({"d_model": 16, "layers": ["mlp"]}, "mqar", {"steps": 2}, batch_size=2, eval_every=2,
                   task_params={"vocab_size": 32, "seq_len": 16, "kv_pairs": 2, "num_train": 8, "num_test": 4})
    assert set(COST_METRICS) | set(RUN_METRICS) <= set(result.metrics)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_address_is_a_clear_error(tmp_path, capsys):
    space = write_space(tmp_path)
    runs = tmp_path / "runs"
    for dry in ([], ["--dry-run"]):
        code, errors = run_cli(capsys, space, "--runs-dir", runs, "--address", f"127.0.0.1:{free_port()}", *dry)
        assert code == 2 and len(errors) == 1 and errors[0].startswith("error: --address: no Ray cluster answers "
                                                                       "at 127.0.0.1:"), errors
        assert not runs.exists()
    code, errors = run_cli(capsys, space, "--runs-dir", runs, "--address", "nonsense")
    assert code == 2 and errors == ["error: --address: expected host:port (or auto), got 'nonsense'"]


@pytest.mark.parametrize("name", ["..", ".", "../../x", "/tmp/abs", "a/b", ".hidden"])
def test_space_and_cli_names_stay_inside_runs(tmp_path, capsys, name):
    space = write_space(tmp_path, **{"name: tiny": f"name: {json.dumps(name)}"})
    code, errors = run_cli(capsys, space, "--runs-dir", tmp_path / "runs")
    assert code == 2 and len(errors) == 1 and errors[0].startswith(f"error: {space}:1: name: expected a name")
    space = write_space(tmp_path)
    code, errors = run_cli(capsys, space, "--runs-dir", tmp_path / "runs", "--name", name)
    assert code == 2 and len(errors) == 1 and errors[0].startswith("error: --name: expected a name"), errors
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]


def test_a_run_folder_through_a_symlink_out_of_runs_is_refused(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "runs" / "tiny").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UserError, match="outside"):
        search(TINY, runs_dir=tmp_path / "runs")
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_a_new_search_needs_an_empty_folder(tmp_path):
    (tmp_path / "runs" / "tiny").mkdir(parents=True)
    (tmp_path / "runs" / "tiny" / "study.db").write_text("an earlier search's")
    with pytest.raises(UserError, match="is not empty"):
        search(TINY, runs_dir=tmp_path / "runs")


# -- resume verification -----------------------------------------------------------------------------------
def fake_run(tmp_path, trials=3) -> RunDir:
    """A run folder as a search leaves it (space.yaml, run.json, study, leaderboard, trial folders), without
    training anything."""
    from composer import arch_id

    space = load_space(TINY)
    run = RunDir(tmp_path / "tiny")
    run.create(yaml.safe_dump(space.data, sort_keys=False))
    study = optuna.create_study(storage=run.study_url, study_name="tiny", direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    rows = []
    for _ in range(trials):
        trial = study.ask()
        candidate = space.sample(trial)
        study.tell(trial, 0.5)
        run.trial_dir(trial.number).mkdir(parents=True)
        rows.append({"trial": trial.number, "status": "completed", "accuracy": 0.5,
                     "arch_id": arch_id(candidate.spec), "params_json": json.dumps(candidate.params, sort_keys=True)})
    run.write_leaderboard(rows, ["accuracy"])
    return run


def verify(run: RunDir) -> None:
    verify_resume(run, load_space(str(run.path("space.yaml"))))


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def test_an_intact_run_resumes_and_trials_and_resources_may_change(tmp_path):
    run = fake_run(tmp_path)
    verify(run)
    edit(run.path("space.yaml"), "trials: 8", "trials: 20")
    edit(run.path("space.yaml"), "cpus_per_trial: 1", "cpus_per_trial: 2")
    verify(run)


def damage_study(run):
    run.path("study.db").unlink()


def empty_study(run):
    run.path("study.db").write_bytes(b"")


def garble_study(run):
    run.path("study.db").write_bytes(b"\x00not sqlite\xff" * 100)


def other_study(run):
    run.path("study.db").unlink()
    optuna.create_study(storage=run.study_url, study_name="someone_else")


def fewer_trials(run):
    first = optuna.load_study(study_name="tiny", storage=run.study_url).trials[0]
    run.path("study.db").unlink()
    optuna.create_study(storage=run.study_url, study_name="tiny", direction="maximize").add_trial(first)


def duplicate_rows(run):
    lines = run.path("leaderboard.csv").read_text().splitlines()
    run.path("leaderboard.csv").write_text("\n".join([*lines, lines[1]]) + "\n")


def garble_leaderboard(run):
    run.path("leaderboard.csv").write_bytes(b"\xff\xfe\x00\x01")


def swap_params(run):
    rows = run.read_leaderboard()
    rows[0]["params_json"], rows[1]["params_json"] = rows[1]["params_json"], '{"n_layers": 7}'
    run.write_leaderboard(rows, ["accuracy"])


def stray_trial_folder(run):
    run.trial_dir(9).mkdir()


def rename_space(run):
    edit(run.path("space.yaml"), "name: tiny", "name: tiny2")


def widen_choices(run):
    edit(run.path("space.yaml"), "- 1\n    - 2", "- 1\n    - 2\n    - 3")


def change_width(run):
    edit(run.path("space.yaml"), "d_model: 32", "d_model: 48")


RESUME_CASES = [
    (damage_study, "study.db is missing but the leaderboard holds 3 trials"),
    (empty_study, "study.db holds no study (emptied?) but the leaderboard holds 3 trials"),
    (garble_study, "study.db is not a readable Optuna study"),
    (other_study, "study.db holds the study 'someone_else', not 'tiny'"),
    (fewer_trials, "leaderboard.csv has trial 1 but"),
    (duplicate_rows, "leaderboard.csv lists trial 0 more than once"),
    (garble_leaderboard, "leaderboard.csv is not a readable leaderboard"),
    (swap_params, "leaderboard.csv trial 0 has other parameters than"),
    (stray_trial_folder, "trials/9 has no trial in"),
    (rename_space, "space.yaml was edited after the search started"),
    (widen_choices, "space.yaml was edited after the search started"),
    (change_width, "space.yaml was edited after the search started"),
]


@pytest.mark.parametrize("damage, message", RESUME_CASES, ids=[c[0].__name__ for c in RESUME_CASES])
def test_resume_refuses_a_folder_that_disagrees_with_its_study(tmp_path, damage, message):
    run = fake_run(tmp_path)
    damage(run)
    with pytest.raises(UserError) as info:
        verify(run)
    assert message in str(info.value)


WITHOUT_FINGERPRINT = [
    (rename_space, "study.db holds the study 'tiny', not 'tiny2'"),
    (widen_choices, "drew 'n_layers' from choices [1, 2] but"),
    (change_width, "but its parameters build another architecture"),
]


@pytest.mark.parametrize("damage, message", WITHOUT_FINGERPRINT, ids=[c[0].__name__ for c in WITHOUT_FINGERPRINT])
def test_resume_checks_the_space_against_the_study_without_a_fingerprint(tmp_path, damage, message):
    """A folder made before run.json existed: the study itself shows the edit."""
    run = fake_run(tmp_path)
    run.path("run.json").unlink()
    verify(run)
    damage(run)
    with pytest.raises(UserError) as info:
        verify(run)
    assert message in str(info.value)


def test_a_refused_resume_writes_nothing(tmp_path, capsys):
    run = fake_run(tmp_path)
    run.path("study.db").unlink()
    before = {p: p.stat().st_mtime_ns for p in run.root.rglob("*")}
    code, errors = run_cli(capsys, "--resume", run.root)
    assert code == 2 and len(errors) == 1 and "study.db is missing" in errors[0]
    assert {p: p.stat().st_mtime_ns for p in run.root.rglob("*")} == before


def test_the_first_signal_stops_the_run_and_the_second_acts_at_once():
    import ray.cloudpickle

    interruption = Interruption()
    stopper = tune_stopper(interruption)
    before = signal.getsignal(signal.SIGINT)
    with interruption.catch():
        assert not stopper.stop_all() and os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "1"
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        assert interruption.signum == signal.SIGTERM and stopper.stop_all() and not stopper("t", {})
        with pytest.raises(KeyboardInterrupt):              # the second signal: what it did before
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        ray.cloudpickle.loads(ray.cloudpickle.dumps(stopper))        # Tune pickles its run config
    assert signal.getsignal(signal.SIGINT) is before
    assert SearchInterrupted(None, signal.SIGINT).exit_code == 130
    assert SearchInterrupted(None, signal.SIGTERM).exit_code == 143
