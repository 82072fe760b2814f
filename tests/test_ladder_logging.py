"""Ladder tracking: `logging:` in the ladder file and `composer ladder --log` write per-trial trackers."""

import pytest
import yaml

from composer import UserError
from composer.cli import main
from composer.tracking.csv_files import read_metrics, read_params
from scaling.ladder import LocalRunner, run_ladder
from scaling.ladder_parse import load_ladder

TINY = {"name": "logged", "task": {"name": "text", "seq_len": 32},
        "architectures": {"attn": {"d_model": 64, "layers": ["attention", "mlp"]}},
        "sizes": ["20K", "40K"], "budget": {"tokens": 256}, "seeds": [0], "bootstrap": 0,
        "train": {"batch_size": 4, "lr": 1e-3, "warmup_steps": 1}}


def trial_dirs(root):
    return sorted(p for p in (root / "logged" / "trials").iterdir() if p.is_dir())


def test_ladder_logging_writes_csv_and_tensorboard_per_trial(tmp_path):
    ladder = load_ladder({**TINY, "logging": ["csv", "tensorboard"]})
    assert ladder.logging == ["csv", "tensorboard"]
    result = run_ladder(ladder, tmp_path, LocalRunner(threads=1))
    dirs = trial_dirs(tmp_path)
    assert [d.name for d in dirs] == ["attn-20K-tokens-s0", "attn-40K-tokens-s0"]
    for folder, row in zip(dirs, sorted(result["trials"], key=lambda r: r["target"])):
        [params] = read_params(folder)
        assert params["trial"]["size"] == row["size"] and params["trial"]["tokens"] == 256
        metrics = read_metrics(folder)
        assert metrics["eval/val_loss"][-1][1] == pytest.approx(row["metrics"]["val_loss"])
        assert not {"eval/lr", "eval/seed", "eval/batch_size", "eval/params"} & set(metrics)   # parameters
        assert list((folder / "tensorboard").glob("events.out.tfevents.*"))


def test_unknown_backend_is_one_error_naming_the_entry():
    text = yaml.safe_dump({**TINY, "logging": ["csv", "tensorbord"]}, sort_keys=False)
    with pytest.raises(UserError) as info:
        load_ladder(text)
    message = str(info.value)
    assert message.startswith("line ") and "logging[1]" in message and "tensorbord" in message
    with pytest.raises(UserError, match="logging: expected a list of loggers"):
        load_ladder({**TINY, "logging": "csv"})


def test_missing_package_is_refused_before_training(monkeypatch):
    import composer.tracking as tracking

    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name))
    with pytest.raises(UserError, match=r"logging\[0\]: wandb needs the wandb package"):
        load_ladder({**TINY, "logging": ["wandb"]})


def test_cli_log_overrides_the_file(tmp_path, capsys):
    path = tmp_path / "ladder.yaml"
    path.write_text(yaml.safe_dump({**TINY, "logging": ["tensorboard"]}))
    out = tmp_path / "runs"
    assert main(["ladder", str(path), "--runner", "local", "--threads", "1", "--out-root", str(out),
                 "--log", "csv"]) == 0
    for folder in trial_dirs(out):
        assert (folder / "metrics.csv").is_file() and not (folder / "tensorboard").exists()
    assert main(["ladder", str(path), "--plan", "--log", "nope"]) == 2
    assert "--log" in capsys.readouterr().err
