"""Data-parallel training on Ray Train (TorchTrainer, gloo on CPU), all in one embedded Ray session: two workers
with global batch B train like one process with batch B (losses to 1e-5 over 20 steps, DDP and FSDP2); a run
stopped and resumed ends with an uninterrupted run's weights and metrics; a worker killed mid-run makes Ray Train
restart the workers from the last checkpoint, nothing lost (and with no restarts left, one clear error); a ladder
trial on `workers_per_trial` workers trains like one process (a search trial spanning two nodes:
tests/test_data_parallel_cluster.py). All slow: each run starts a Ray Train
worker group (~10 s here)."""

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from composer.errors import UserError
from composer.trainer import train

pytestmark = pytest.mark.slow

SPEC = {"d_model": 32, "layers": [{"op": "attention", "n_heads": 2}, "mlp", "gla", "mlp"]}
TASK = {"vocab_size": 64, "seq_len": 32, "kv_pairs": 4, "num_train": 2000, "num_test": 64}
SETTINGS = {"steps": 20, "lr": 3e-3, "batch_size": 8, "warmup_steps": 2, "eval_every": 10, "log_every": 1,
            "threads": 1, "seed": 1}
TIMING = ("train_time_s", "tokens_per_s", "peak_memory_bytes", "workers", "worker_nodes")


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    from composer.ray_cluster import start_ray

    start_ray(None, verbose=False)
    yield
    import ray

    ray.shutdown()


def run(out=None, on_step=None, callback=None, **settings):
    losses = {}

    def record(p):
        losses[p["step"]] = p["loss"]
        if on_step is not None:
            on_step(p)

    result = train(SPEC, "mqar", task_params=TASK, out_dir=out, on_step=record, callback=callback,
                   **{**SETTINGS, **settings})
    return result, [losses[s] for s in sorted(losses)]


def weights(out):
    return load_file(Path(out) / "checkpoint" / "model.safetensors")


def same_weights(a, b, atol=1e-6):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0)


def curve(out):
    """metrics.jsonl without what timing changes."""
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    result, losses = run(out)
    return out, result, losses


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    out = tmp_path_factory.mktemp("two")
    result, losses = run(out, workers=2, checkpoint_every=10)
    return out, result, losses


def test_two_workers_with_batch_b_train_like_one_process_with_batch_b(one_worker, two_workers):
    (out1, one, losses1), (out2, two, losses2) = one_worker, two_workers
    assert len(losses1) == len(losses2) == 20
    assert losses2 == pytest.approx(losses1, abs=1e-5, rel=0)
    assert two.status == "completed" and two.step == 20 and two.metrics["workers"] == 2
    assert two.metrics["val_loss"] == pytest.approx(one.metrics["val_loss"], abs=1e-5)
    same_weights(weights(out2), weights(out1), atol=1e-5)
    # the same outputs as one process: spec.yaml, metrics.jsonl (same keys, same evaluations), checkpoint/
    assert (out2 / "spec.yaml").read_text() == (out1 / "spec.yaml").read_text()
    assert [set(r) for r in curve(out2)] == [set(r) for r in curve(out1)]
    assert [r["step"] for r in curve(out2)] == [10, 20]
    assert not (out2 / "ray_train").exists()            # Ray's copy of the checkpoint is gone once it is in out/


def test_fsdp_workers_train_like_one_process(one_worker, tmp_path):
    out1, one, losses1 = one_worker
    fsdp, losses = run(tmp_path, workers=2, fsdp=True)
    assert losses == pytest.approx(losses1, abs=1e-5, rel=0)
    same_weights(weights(tmp_path), weights(out1), atol=1e-5)


def test_a_stopped_run_resumes_to_an_uninterrupted_runs_weights(two_workers, tmp_path):
    out2, two, _ = two_workers
    stopped, _ = run(tmp_path, workers=2, callback=lambda m: m["step"] < 10)
    assert stopped.status == "stopped" and stopped.step == 10
    resumed, losses = run(tmp_path, workers=2)
    assert resumed.status == "completed" and resumed.step == 20 and sorted(losses) and len(losses) == 10
    same_weights(weights(tmp_path), weights(out2))
    assert curve(tmp_path) == curve(out2)
    # and on in one process, from the workers' checkpoint
    more, _ = run(tmp_path, steps=20)
    assert more.step == 20 and more.metrics["val_loss"] == pytest.approx(resumed.metrics["val_loss"], abs=1e-6)


def ray_train_workers():
    """The pids of this process's Ray Train workers (descendants of this process, not other users' Ray)."""
    children: dict[int, list[int]] = {}
    commands = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                commands[int(entry.name)] = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [os.getpid()]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            if "RayTrainWorker" in commands.get(child, ""):
                found.append(child)
            todo.append(child)
    return found


def test_a_killed_worker_restarts_the_workers_from_the_last_checkpoint(two_workers, tmp_path):
    out2, _, _ = two_workers
    killed, steps = [], []

    def kill_one(p):
        steps.append(p["step"])
        if p["step"] == 13 and not killed:
            victims = ray_train_workers()
            assert len(victims) == 2
            os.kill(victims[-1], signal.SIGKILL)
            killed.append(victims[-1])

    result, _ = run(tmp_path, on_step=kill_one, workers=2, checkpoint_every=10)
    assert killed and result.status == "completed" and result.step == 20
    restart = next(i for i in range(1, len(steps)) if steps[i] <= steps[i - 1])
    assert steps[:13] == list(range(1, 14)) and steps[restart:] == list(range(11, 21))     # from step 10's checkpoint
    same_weights(weights(tmp_path), weights(out2))      # trained on from step 10's checkpoint: nothing lost
    assert curve(tmp_path) == curve(out2)               # the evaluation at step 10 once, not twice


def test_a_killed_worker_with_no_restarts_left_is_one_clear_error(tmp_path):
    def kill_one(p):
        if p["step"] == 13:
            os.kill(ray_train_workers()[-1], signal.SIGKILL)

    with pytest.raises(UserError, match="data-parallel training stopped after 0 restarts of the workers: worker "
                                        r"\d failed .*; its last checkpoint is kept in .*ray_train: the same command "
                                        "run again resumes from it") as e:
        run(tmp_path, on_step=kill_one, workers=2, checkpoint_every=10, worker_restarts=0)
    assert e.value.path == "workers"
    resumed, losses = run(tmp_path, workers=2)           # and it does
    assert resumed.status == "completed" and len(losses) == 10


def test_a_ladder_trial_on_two_workers_trains_like_one_process():
    from scaling.ladder import LocalRunner, plan
    from scaling.ladder_parse import load_ladder
    from scaling.ray_runner import RayRunner
    from tests.test_scaling_ladder import ARCHS, config

    settings = {"batch_size": 4, "lr": 1e-3, "warmup_steps": 1}
    one = load_ladder(config(architectures={"attn": ARCHS["attn"]}, sizes=["20K", "40K"], budget={"tokens": 256},
                             seeds=[0], train=settings))
    two = load_ladder(config(architectures={"attn": ARCHS["attn"]}, sizes=["20K", "40K"], budget={"tokens": 256},
                             seeds=[0], train=settings, workers_per_trial=2))
    trials = plan(one)[:1]
    (_, local), = LocalRunner(threads=1).run(trials, one)
    (_, parallel), = RayRunner(threads=2).run(trials, two)      # the trial's 2 CPUs, one per worker
    assert parallel["status"] == "completed" and parallel["workers"] == 2 and parallel["tokens"] == 256
    assert parallel["val_loss"] == pytest.approx(local["val_loss"], abs=1e-5)
