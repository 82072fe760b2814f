"""`composer train --log ...` (composer/tracking/): each backend through the library's own writer."""

from __future__ import annotations

import importlib.util

import pytest

from composer.errors import UserError
from composer.tracking import RUN_CONSTANTS, check_backends, open_trackers
from composer.tracking.csv_files import read_metrics, read_params

needs_mlflow = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None,
                                  reason="mlflow not installed (pip install -e .[mlflow])")
needs_wandb = pytest.mark.skipif(importlib.util.find_spec("wandb") is None,
                                 reason="wandb not installed (pip install -e .[wandb])")


PARAMS = {"optimizer": {"lr": 0.001, "betas": [0.9, 0.95]}, "task": {"name": "mqar"}}


def log_two_steps(names, folder):
    tracker = open_trackers(names, folder, PARAMS, name="t")
    tracker.log_metrics({"train/loss": 2.5, "flag": True, "nan": float("nan"), "text": "x"}, step=1)
    tracker.log_metrics({"train/loss": 2.0, "eval/val_loss": 2.2}, step=2)
    tracker.close()


def test_csv_writes_metrics_and_params(tmp_path):
    log_two_steps(["csv"], tmp_path)
    assert read_metrics(tmp_path) == {"train/loss": [(1, 2.5), (2, 2.0)], "eval/val_loss": [(2, 2.2)]}
    assert (tmp_path / "metrics.csv").read_text().splitlines()[:2] == ["step,metric,value", "1,train/loss,2.5"]
    assert read_params(tmp_path) == [PARAMS]


def test_csv_files_are_appended_to_never_rewritten(tmp_path):
    log_two_steps(["csv"], tmp_path)
    before = (tmp_path / "metrics.csv").read_text()
    tracker = open_trackers(["csv"], tmp_path, {"optimizer": {"lr": 0.002}}, name="t")
    tracker.log_metrics({"train/loss": 1.5, "eval/accuracy": 0.5}, step=3)   # a metric not seen before
    tracker.close()
    after = (tmp_path / "metrics.csv").read_text()
    assert after.startswith(before) and after[len(before):] == "3,train/loss,1.5\n3,eval/accuracy,0.5\n"
    assert read_params(tmp_path) == [PARAMS, {"optimizer": {"lr": 0.002}}]


def test_csv_refuses_a_metrics_file_of_another_layout(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,train/loss\n1,2.5\n")
    with pytest.raises(UserError, match="csv could not start logging .*move it aside"):
        open_trackers(["csv"], tmp_path, PARAMS)
    assert (tmp_path / "metrics.csv").read_text() == "step,train/loss\n1,2.5\n"


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed")
def test_tensorboard_events_read_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_two_steps(["tensorboard"], tmp_path)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 2.5), (2, 2.0)]
    assert [e.step for e in events.Scalars("eval/val_loss")] == [2]


@needs_wandb
def test_wandb_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    log_two_steps(["wandb"], tmp_path)
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def mlflow_runs(uri):
    """(run, {metric: [steps]}, params) of every run in the MLflow store at `uri`."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    out = []
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            steps = {key: [m.step for m in client.get_metric_history(run.info.run_id, key)] for key in run.data.metrics}
            out.append((run, steps, run.data.params))
    return out


@needs_mlflow
def test_mlflow_logs_into_a_database_in_the_run_folder(tmp_path, monkeypatch):
    """The installed MLflow (3.x refuses the old `mlruns/` file store): a SQLite store inside the folder, nothing
    written in the working directory, `/` kept in metric names, settings as parameters."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    work, folder = tmp_path / "cwd", tmp_path / "run"
    work.mkdir()
    monkeypatch.chdir(work)
    log_two_steps(["mlflow"], folder)
    assert (folder / "mlflow.db").is_file() and list(work.iterdir()) == []
    [(run, steps, params)] = mlflow_runs(f"sqlite:///{folder / 'mlflow.db'}")
    assert steps == {"train/loss": [1, 2], "eval/val_loss": [2]}
    assert params == {"optimizer.lr": "0.001", "optimizer.betas": "[0.9, 0.95]", "task.name": "mqar"}
    assert run.info.status == "FINISHED" and run.info.run_name == "t"
    assert run.info.artifact_uri.startswith((folder / "mlartifacts").resolve().as_uri())


@needs_mlflow
def test_mlflow_tracking_uri_wins(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{elsewhere}")
    log_two_steps(["mlflow"], tmp_path / "run")
    assert not (tmp_path / "run" / "mlflow.db").exists()
    [(_, steps, _)] = mlflow_runs(f"sqlite:///{elsewhere}")
    assert steps["train/loss"] == [1, 2]


@needs_mlflow
@needs_wandb
def test_a_backend_that_cannot_start_is_one_error_and_closes_the_others(tmp_path, monkeypatch, capsys):
    """MLflow's refusal of a file store (the old default) after W&B started: one `error:` line, exit 2, the W&B
    run finished, nothing trained."""
    import wandb

    from composer.cli import main

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    spec = tmp_path / "s.yaml"
    spec.write_text("d_model: 16\nvocab_size: 32\nlayers: [mlp]\n")
    out = tmp_path / "run"
    code = main(["train", str(spec), "--steps", "2", "--batch-size", "2", "--set", "seq_len=16", "kv_pairs=2",
                 "vocab_size=32", "num_train=64", "num_test=8", "--out", str(out), "--log", "wandb", "mlflow"])
    err = capsys.readouterr().err
    assert code == 2 and wandb.run is None
    [line] = err.strip().splitlines()
    assert line.startswith("error: --log: mlflow could not start logging in ") and "MlflowException" in line
    assert not (out / "checkpoint").exists() and not (out / "metrics.jsonl").exists()


def test_unknown_or_missing_backend_is_a_user_error(monkeypatch):
    with pytest.raises(UserError, match="did you mean 'tensorboard'"):
        check_backends(["tensorbord"])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"pip install -e \.\[wandb\]"):
        check_backends(["wandb"])


def test_train_cli_log_needs_out(capsys, tmp_path):
    from composer.cli import main

    spec = tmp_path / "s.yaml"
    spec.write_text("d_model: 16\nvocab_size: 32\nlayers: [mlp]\n")
    assert main(["train", str(spec), "--steps", "1", "--log", "csv", "--set", "vocab_size=32", "seq_len=16",
                 "kv_pairs=2"]) == 2
    assert "--log" in capsys.readouterr().err


def test_train_cli_logs_each_evaluation(capsys, tmp_path):
    from composer.cli import main

    spec = tmp_path / "s.yaml"
    spec.write_text("d_model: 16\nvocab_size: 32\nlayers: [mlp]\n")
    out = tmp_path / "run"
    assert main(["train", str(spec), "--steps", "4", "--eval-every", "2", "--batch-size", "2", "--warmup-steps", "0",
                 "--set", "seq_len=16", "kv_pairs=2", "vocab_size=32", "num_train=64", "num_test=8", "--out", str(out),
                 "--log", "csv"]) == 0
    err = capsys.readouterr().err
    assert "eval at step 2:" in err and "eval at step 4:" in err
    metrics = read_metrics(out)
    assert [step for step, _ in metrics["eval/val_loss"]] == [2, 4] and "train/loss" in metrics
    assert not {f"eval/{key}" for key in RUN_CONSTANTS} & set(metrics)     # settings and costs are parameters
    [params] = read_params(out)
    assert params["task"]["seq_len"] == 16 and params["runtime"]["seed"] == 0 and params["runtime"]["batch_size"] == 2
    assert params["costs"]["params"] > 0


def test_run_constants_are_the_trainers_static_metrics():
    """RUN_CONSTANTS (what tracking logs as parameters, not metrics) is what every evaluation repeats."""
    from composer.spec_parse import load_spec
    from composer.tasks import get_task
    from composer.training.config import TrainConfig
    from composer.training.setup import set_up

    task = get_task("mqar", vocab_size=32, seq_len=16, kv_pairs=2, num_train=8, num_test=8)
    state = set_up(load_spec("d_model: 16\nvocab_size: 32\nlayers: [mlp]\n"), task, TrainConfig(), None)
    assert set(state.static) == set(RUN_CONSTANTS)


def test_search_logging_uses_tune_logger_callbacks(tmp_path):
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from composer.search.callbacks import tune_loggers

    kinds = [type(c) for c in tune_loggers(["csv"], tmp_path, "s")]
    assert kinds == [JsonLoggerCallback, CSVLoggerCallback]
    assert CSVLoggerCallback in [type(c) for c in tune_loggers(None, tmp_path, "s")]     # back by default


def test_space_logging_is_checked_before_anything_runs():
    from composer.search.space_parse import load_space

    with pytest.raises(UserError, match="did you mean 'tensorboard'") as e:
        load_space({"name": "s", "task": "mqar", "layers": [{"op": "mlp"}], "base": {"d_model": 16},
                    "logging": ["tensorbord"]})
    assert e.value.path == "logging"


@needs_mlflow
def test_search_mlflow_logger_uses_a_database_in_the_run_folder(tmp_path, monkeypatch):
    from mlflow import MlflowClient
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    from composer.search.callbacks import tune_loggers

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    [_, callback] = tune_loggers(["mlflow"], tmp_path, "space")
    uri = f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    assert isinstance(callback, MLflowLoggerCallback) and callback.tracking_uri == uri
    experiment = MlflowClient(tracking_uri=uri).get_experiment_by_name("space")
    assert experiment.artifact_location == (tmp_path / "mlartifacts").resolve().as_uri()
