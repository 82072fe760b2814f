"""Interrupts tell the truth: a run with an output folder checkpoints by steps and by time; SIGINT and SIGTERM
end `composer train` after the current step with a checkpoint, exit 130 / 143 and say how to resume; a run
killed with kill -9 resumes from its last periodic checkpoint to the same weights and the same metrics.jsonl as
an uninterrupted run; a checkpoint of another run in the folder is an error, never a size-mismatch traceback;
the folder holds spec.yaml, so `composer export` reads it."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import composer.training.setup as setup
from composer.cli import main
from composer.errors import UserError
from composer.interrupt import interrupt_signal, stop_on_signals
from composer.tasks import get_task
from composer.trainer import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
COMMON = dict(batch_size=4, threads=1, lr=3e-3)
DETERMINISTIC = ("step", "tokens", "val_loss", "accuracy", "train_loss", "lr", "params")


@pytest.fixture
def saves(monkeypatch):
    """The step of every checkpoint the trainer writes."""
    steps = []
    real = setup.save_checkpoint

    def spy(out_dir, model, optimizer, loop_state, fingerprint=None):
        steps.append(loop_state["step"])
        return real(out_dir, model, optimizer, loop_state, fingerprint)

    monkeypatch.setattr(setup, "save_checkpoint", spy)
    return steps


def test_periodic_checkpoints_by_steps(tmp_path, saves, tiny_spec, tiny_task):
    assert (TrainConfig().checkpoint.checkpoint_every, TrainConfig().checkpoint.checkpoint_seconds) == (500, 600)
    train(tiny_spec, tiny_task(), 12, eval_every=100, checkpoint_every=5, checkpoint_seconds=0, out_dir=tmp_path / "a",
          **COMMON)
    assert saves == [5, 10, 12]                 # every 5 steps, and the end
    saves.clear()
    train(tiny_spec, tiny_task(), 12, eval_every=100, checkpoint_every=0, checkpoint_seconds=0, out_dir=tmp_path / "b",
          **COMMON)
    assert saves == [12]                        # both off: the end only
    saves.clear()
    train(tiny_spec, tiny_task(), 12, eval_every=100, checkpoint_every=5, **COMMON)
    assert saves == []                          # no output folder, no checkpoint


def test_periodic_checkpoints_by_time(tmp_path, saves, tiny_spec, tiny_task):
    train(tiny_spec, tiny_task(), 6, eval_every=100, checkpoint_every=0, checkpoint_seconds=1e-9, out_dir=tmp_path / "a",
          **COMMON)
    assert saves == [1, 2, 3, 4, 5, 6]          # the interval has always passed
    saves.clear()
    train(tiny_spec, tiny_task(), 6, eval_every=100, checkpoint_every=0, checkpoint_seconds=3600, out_dir=tmp_path / "b",
          **COMMON)
    assert saves == [6]


def test_a_signal_inside_stop_on_signals_stops_after_the_step(tmp_path, saves, tiny_spec, tiny_task):
    """In-process: the handler only records the signal; the trainer saves at the end of the step it is in."""
    def on_step(progress):
        if progress["step"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    with stop_on_signals():
        result = train(tiny_spec, tiny_task(), 20, eval_every=100, log_every=1, on_step=on_step, out_dir=tmp_path,
                       **COMMON)
        assert interrupt_signal() == signal.SIGTERM
    assert interrupt_signal() is None and signal.getsignal(signal.SIGTERM) is previous    # handlers restored
    assert result.status == "interrupted" and result.step == 3 and result.metrics["interrupted_step"] == 3
    assert saves == [3]
    resumed = train(tiny_spec, tiny_task(), 20, eval_every=100, out_dir=tmp_path, **COMMON)
    assert resumed.status == "completed" and resumed.step == 20 and saves == [3, 20]


def cli_command(spec, out, steps=100_000):
    return [sys.executable, "-m", "composer", "train", str(spec), "--task", "mqar", "--set", "vocab_size=64",
            "--set", "seq_len=32", "--set", "kv_pairs=4", "--set", "num_test=16", "--steps", str(steps),
            "--batch-size", "2", "--threads", "1", "--log-every", "1", "--eval-every", "1000", "--out", str(out)]


def interrupt_after_first_step(command, signum):
    """Start `command`, send `signum` once it reports a step; (exit status, first step reported, stderr)."""
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        first = None
        for line in process.stderr:
            if line.startswith("step"):
                first = int(line.split()[1])
                process.send_signal(signum)
                break
        _, rest = process.communicate(timeout=120)
        return process.returncode, first, rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def checkpoint_step(out):
    return torch.load(out / "checkpoint" / "trainer.pt", weights_only=True)["loop"]["step"]


@pytest.mark.slow
def test_sigint_and_sigterm_save_exit_and_resume(tmp_path, tiny_spec_file):
    """~45 s on 2 busy cores: two CLI processes. Ctrl-C: exit 130, a checkpoint at the step it stopped after, a line naming it;
    the same command again continues from that step; SIGTERM then: exit 143, a later checkpoint."""
    spec = tiny_spec_file
    out = tmp_path / "run"
    code, first, stderr = interrupt_after_first_step(cli_command(spec, out), signal.SIGINT)
    assert code == 130 and first == 1, stderr
    stopped = checkpoint_step(out)
    last = stderr.strip().splitlines()[-1]
    assert last == (f"interrupted by SIGINT after step {stopped}: checkpoint saved in {out / 'checkpoint'}; run the "
                    "same command again to resume from it")
    assert "Traceback" not in stderr

    code, first, stderr = interrupt_after_first_step(cli_command(spec, out), signal.SIGTERM)
    assert code == 143 and first == stopped + 1, stderr      # resumed: the first step it trains is the next one
    assert checkpoint_step(out) > stopped
    assert stderr.strip().splitlines()[-1].startswith("interrupted by SIGTERM after step ")


KILLED_RUN = textwrap.dedent("""\
    import sys, time
    from pathlib import Path
    import composer.trainer as trainer
    from composer.tasks import get_task

    real = trainer.train_step

    def step(state, *args):
        if state.step == 7:                      # after the checkpoint at 4 and the evaluation at 6: wait to be killed
            Path(sys.argv[2]).write_text("ready")
            time.sleep(600)
        return real(state, *args)

    trainer.train_step = step
    trainer.train({spec}, get_task("mqar", **{task}), 12, out_dir=sys.argv[1], eval_every=3, checkpoint_every=4,
                  checkpoint_seconds=0, **{common})
    """)


@pytest.mark.slow
def test_kill_9_resumes_to_the_same_weights_and_metrics(tmp_path, tiny_spec, tiny_task, tiny_task_params):
    """~20 s on 2 busy cores (a Python process importing torch, then two short runs here)."""
    script = tmp_path / "run.py"
    script.write_text(KILLED_RUN.format(spec=tiny_spec, task=tiny_task_params, common=COMMON))
    out, ready = tmp_path / "killed", tmp_path / "ready"
    log = tmp_path / "stderr.txt"
    with open(log, "w") as stderr:
        process = subprocess.Popen([sys.executable, str(script), str(out), str(ready)], cwd=ROOT, stderr=stderr)
    try:
        deadline = time.monotonic() + 300
        while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready.exists(), f"the run did not reach step 7: {log.read_text()[-2000:]}"
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert checkpoint_step(out) == 4
    assert steps_of(out) == [3, 6]              # an evaluation after the checkpoint: the resume must drop it

    settings = dict(eval_every=3, checkpoint_every=4, checkpoint_seconds=0, **COMMON)
    resumed = train(tiny_spec, tiny_task(), 12, out_dir=out, **settings)
    full = train(tiny_spec, tiny_task(), 12, out_dir=tmp_path / "full", **settings)
    assert resumed.status == full.status == "completed" and resumed.step == 12
    a, b = load_file(out / "checkpoint" / "model.safetensors"), load_file(tmp_path / "full" / "checkpoint" /
                                                                          "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert steps_of(out) == [3, 6, 9, 12]
    assert curve(out) == curve(tmp_path / "full")


def steps_of(out):
    return [row["step"] for row in read_metrics(out)]


def curve(out):
    return [{k: row[k] for k in DETERMINISTIC} for row in read_metrics(out)]


def read_metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_another_run_into_the_same_folder_is_an_error(tmp_path, capsys, tiny_spec, tiny_task, tiny_task_params):
    out = tmp_path / "run"
    train(tiny_spec, tiny_task(), 4, out_dir=out, **COMMON)
    before = {p.name: p.read_bytes() for p in [*out.iterdir(), *(out / "checkpoint").iterdir()] if p.is_file()}
    cases = [
        ({**tiny_spec, "d_model": 48}, tiny_task_params, {}, "architecture "),
        (tiny_spec, {**tiny_task_params, "kv_pairs": 8}, {}, "task kv_pairs 4 there, 8 here"),
        (tiny_spec, tiny_task_params, {"lr": 1e-3}, "lr 0.003 there, 0.001 here"),
    ]
    for spec, task, changed, difference in cases:
        with pytest.raises(UserError) as info:
            train(spec, get_task("mqar", **task), 4, out_dir=out, **{**COMMON, **changed})
        assert info.value.path == "out" and difference in info.value.message
        assert f"{out} holds a checkpoint of another run" in info.value.message and "--no-resume" in info.value.message
    after = {p.name: p.read_bytes() for p in [*out.iterdir(), *(out / "checkpoint").iterdir()] if p.is_file()}
    assert after == before                      # nothing written

    spec = tmp_path / "wide.yaml"
    spec.write_text("d_model: 48\nlayers: [attention, mlp]\n")
    argv = ["train", str(spec), "--set", "vocab_size=64", "--set", "seq_len=32", "--set", "kv_pairs=4", "--set",
            "num_train=512", "--set", "num_test=64", "--steps", "4", "--batch-size", "4", "--threads", "1", "--lr",
            "3e-3", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --out: {out} holds a checkpoint of another run")

    over = train({**tiny_spec, "d_model": 48}, tiny_task(), 4, out_dir=out, resume=False, **COMMON)
    assert over.status == "completed" and over.step == 4          # --no-resume: starts this run over in the folder


def test_a_checkpoint_without_fingerprint_that_does_not_fit_is_an_error(tmp_path, tiny_spec, tiny_task):
    out = tmp_path / "run"
    train(tiny_spec, tiny_task(), 2, out_dir=out, **COMMON)
    (out / "checkpoint" / "run.json").unlink()          # as an older Composer wrote it
    with pytest.raises(UserError, match="does not fit this run or is damaged") as info:
        train({**tiny_spec, "d_model": 48}, tiny_task(), 2, out_dir=out, **COMMON)
    assert info.value.path == "out"


def test_the_folder_holds_its_spec_and_export_reads_it(tmp_path, tiny_spec, tiny_task):
    from composer.export.sources import resolve_source
    from composer.spec_parse import load_spec

    out = tmp_path / "run"
    unstated = {k: v for k, v in tiny_spec.items() if k != "vocab_size"}
    train(unstated, tiny_task(), 2, out_dir=out, **COMMON)
    assert load_spec(out / "spec.yaml") == load_spec(tiny_spec)         # fitted to the task: vocab 64, like the weights
    resolved = resolve_source(out)
    assert resolved.weights == out / "checkpoint" / "model.safetensors" and resolved.spec == load_spec(tiny_spec)


def test_a_save_killed_between_its_renames_loses_nothing(tmp_path, saves, tiny_spec, tiny_task):
    """kill -9 after the old checkpoint was moved aside and before the new one took its place: the old one is
    put back and the run resumes from it."""
    out = tmp_path / "run"
    settings = dict(eval_every=5, checkpoint_every=5, checkpoint_seconds=0, out_dir=out, **COMMON)
    train(tiny_spec, tiny_task(), 12, callback=lambda m: False, **settings)         # stops at step 5
    assert checkpoint_step(out) == 5
    (out / "checkpoint").rename(out / ".checkpoint.old")
    saves.clear()
    resumed = train(tiny_spec, tiny_task(), 12, **settings)
    assert resumed.step == 12 and saves == [10, 12] and steps_of(out) == [5, 10, 12]
