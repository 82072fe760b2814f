"""kill -9 of a data-parallel run's driver (`composer train --workers 2`, with every Ray process it started): the
same command again resumes from the last checkpoint Ray Train kept and ends with an uninterrupted run's weights
and evaluations (a worker killed mid-run: tests/test_data_parallel_ray.py)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow        # three runs, each starting Ray and a Ray Train worker group: ~1.5 min

ROOT = Path(__file__).resolve().parent.parent
SPEC = "d_model: 32\nlayers: [{op: attention, n_heads: 2}, mlp, gla, mlp]\n"
ARGS = ["--task", "mqar", "--set", "vocab_size=64", "seq_len=32", "kv_pairs=4", "num_train=4000", "num_test=64",
        "--workers", "2", "--steps", "300", "--checkpoint-every", "50", "--eval-every", "100", "--log-every", "50",
        "--batch-size", "8", "--threads", "1", "--lr", "3e-3", "--warmup-steps", "2", "--seed", "1"]
TIMING = ("train_time_s", "tokens_per_s", "peak_memory_bytes", "workers", "worker_nodes")


def train_command(spec: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "composer", "train", str(spec), *ARGS, "--out", str(out)]


def run_to_the_end(spec: Path, out: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run(train_command(spec, out), cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout + proc.stderr


def committed(out: Path) -> bool:
    """Ray Train has committed a checkpoint: its run snapshot names one (a checkpoint folder alone may still be
    being written: a driver killed then resumes afresh, which this test does not check)."""
    return any("step_" in p.read_text() for p in (out / "ray_train").glob("*/checkpoint_manager_snapshot.json"))


def evaluations(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows if "val_loss" in row]


def test_a_killed_driver_resumes_from_the_last_checkpoint_to_an_uninterrupted_runs_weights(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_to_the_end(spec, whole)

    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    driver = subprocess.Popen(train_command(spec, killed), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not committed(killed) and time.time() < deadline and driver.poll() is None:
            time.sleep(0.05)
        assert driver.poll() is None, "the run ended before its first checkpoint: give it more steps"
        os.killpg(driver.pid, signal.SIGKILL)      # the driver and every Ray process it started
        driver.wait()
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not (killed / "result.json").exists()
    kept = sorted(int(p.name.split("_")[1]) for p in (killed / "ray_train").glob("*/step_*"))
    assert kept and kept[-1] < 300

    printed = run_to_the_end(spec, killed)
    step = int(printed.split("from its checkpoint at step ")[1].split()[0])
    assert step in kept and 0 < step < 300
    assert json.loads((killed / "result.json").read_text())["step"] == 300
    a, b = load_file(whole / "checkpoint" / "model.safetensors"), load_file(killed / "checkpoint" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=0)
    assert evaluations(killed) == evaluations(whole)
