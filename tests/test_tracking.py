"""`composer train --log ...` (composer/tracking/): each backend through the library's own writer."""

from __future__ import annotations

import csv
import importlib.util
import json

import pytest

from composer.errors import UserError
from composer.tracking import check_backends, open_trackers

PARAMS = {"optimizer": {"lr": 0.001, "betas": [0.9, 0.95]}, "task": {"name": "mqar"}}


def log_two_steps(names, folder):
    tracker = open_trackers(names, folder, PARAMS, name="t")
    tracker.log_metrics({"train/loss": 2.5, "flag": True, "nan": float("nan"), "text": "x"}, step=1)
    tracker.log_metrics({"train/loss": 2.0, "eval/val_loss": 2.2}, step=2)
    tracker.close()


def test_csv_writes_metrics_and_params(tmp_path):
    log_two_steps(["csv"], tmp_path)
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [(r["step"], r["train/loss"], r["eval/val_loss"]) for r in rows] == [("1", "2.5", ""), ("2", "2.0", "2.2")]
    assert "flag" not in rows[0] and "nan" not in rows[0] and "text" not in rows[0]
    assert json.loads((tmp_path / "params.json").read_text()) == PARAMS


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed")
def test_tensorboard_events_read_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_two_steps(["tensorboard"], tmp_path)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 2.5), (2, 2.0)]
    assert [e.step for e in events.Scalars("eval/val_loss")] == [2]


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb not installed (pip install -e .[wandb])")
def test_wandb_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    log_two_steps(["wandb"], tmp_path)
    assert list((tmp_path / "wandb").glob("offline-run-*"))


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow not installed (pip install -e .[mlflow])")
def test_mlflow_local_files(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    log_two_steps(["mlflow"], tmp_path)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert [m.step for m in mlflow.MlflowClient().get_metric_history(runs[0].info.run_id, "train_loss")] == [1, 2]


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
    assert main(["train", str(spec), "--steps", "1", "--log", "csv"]) == 2
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
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["step"] for r in rows if r.get("eval/val_loss")] == ["2", "4"]
    assert json.loads((out / "params.json").read_text())["task"]["seq_len"] == 16


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
