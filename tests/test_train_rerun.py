"""Running `composer train --out DIR` again: a finished run with the same settings says it is complete and
changes nothing; a larger budget continues it, and every tracking file is appended to, never rewritten."""

from pathlib import Path

from composer.cli import main
from composer.tracking.csv_files import read_metrics, read_params
from composer.trainer import completed_run, train
from composer.training.config import TrainConfig

TASK = ["--set", "seq_len=16", "kv_pairs=2", "vocab_size=32", "num_train=64", "num_test=8"]
FLAGS = ["--eval-every", "2", "--batch-size", "2", "--warmup-steps", "0", "--threads", "1", *TASK]


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def spec_file(tmp_path: Path) -> str:
    path = tmp_path / "s.yaml"
    path.write_text("d_model: 16\nvocab_size: 32\nlayers: [attention, mlp]\n")
    return str(path)


def test_a_finished_run_run_again_says_so_and_changes_nothing(tmp_path, capsys):
    spec, out = spec_file(tmp_path), tmp_path / "run"
    argv = ["train", spec, "--steps", "4", *FLAGS, "--out", str(out), "--log", "csv", "tensorboard"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    before = folder_bytes(out)
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert f"{out}: this run is complete (step 4; budget steps=4); nothing was changed" in captured.err
    assert "eval at step" not in captured.err and captured.out == first      # nothing trained, the same summary
    assert folder_bytes(out) == before                                        # not a byte written, no new event file
    assert main(["train", spec, "--steps", "3", *FLAGS, "--out", str(out)]) == 0     # a smaller budget: complete too
    assert "this run is complete (step 4; budget steps=3)" in capsys.readouterr().err
    assert folder_bytes(out) == before


def test_a_larger_budget_continues_and_appends(tmp_path, capsys):
    spec, out = spec_file(tmp_path), tmp_path / "run"
    assert main(["train", spec, "--steps", "4", *FLAGS, "--out", str(out), "--log", "csv"]) == 0
    csv_before = (out / "metrics.csv").read_text()
    capsys.readouterr()
    assert main(["train", spec, "--steps", "8", *FLAGS, "--out", str(out), "--log", "csv"]) == 0
    err = capsys.readouterr().err
    assert f"resuming {out} from its checkpoint at step 4 (budget steps=8)" in err
    assert "eval at step 6:" in err and "eval at step 2:" not in err
    assert (out / "metrics.csv").read_text().startswith(csv_before)                  # appended to
    assert [step for step, _ in read_metrics(out)["eval/val_loss"]] == [2, 4, 6, 8]
    assert [p["budget"]["steps"] for p in read_params(out)] == [4, 8]       # one line per start
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4


def test_a_time_budget_reached_is_not_trained_one_step_more(tmp_path, tiny_spec, tiny_task):
    """A `--seconds` run used to take one more step (and re-evaluate) each time it was run again."""
    out = tmp_path / "run"
    first = train(tiny_spec, tiny_task(), {"seconds": 0.3}, out_dir=out, batch_size=4, threads=1, eval_every=5)
    before = folder_bytes(out)
    again = train(tiny_spec, tiny_task(), {"seconds": 0.3}, out_dir=out, batch_size=4, threads=1, eval_every=5)
    assert again.status == "completed" and again.step == first.step
    assert again.metrics["val_loss"] == first.metrics["val_loss"]
    assert folder_bytes(out) == before
    config = TrainConfig.from_dict({"seconds": 0.3, "batch_size": 4, "eval_every": 5})
    assert completed_run(tiny_spec, tiny_task(), config, out).step == first.step
    assert completed_run(tiny_spec, tiny_task(), config.with_settings(seconds=1e6), out) is None    # budget left
    assert completed_run(tiny_spec, tiny_task(), config.with_settings(lr=0.5), out) is None         # another run
