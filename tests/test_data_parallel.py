"""Data-parallel training without Ray: each worker's rows of a batch, the loss weighting that makes DDP's average the
whole batch's gradient (rows with different numbers of labelled positions included), DDP and FSDP2 workers
equal to one process over several steps (two gloo processes), the checkpoint they write in the single-process
format, and the one-line errors for bad settings, given before anything starts.

The same runs on Ray Train (TorchTrainer, checkpoints, a killed worker, a search trial) are in
tests/test_data_parallel_ray.py."""

import multiprocessing
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from composer.errors import UserError
from composer.tasks import IGNORE, SyntheticTask, get_task
from composer.trainer import TrainConfig, train
from composer.training.data_parallel import agree, prepare, save
from composer.training.fingerprint import run_fingerprint
from composer.training.ray_train import check_settings
from composer.training.setup import fit_spec, set_up
from composer.training.step import train_step

ROOT = Path(__file__).resolve().parents[1]
SPEC = {"d_model": 32, "layers": [{"op": "attention", "n_heads": 2}, "mlp", "gla", "mlp"]}
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"


class Ragged(SyntheticTask):
    """Next-token prediction where each row labels a different number of positions (1 to 12)."""

    name, vocab_size, seq_len = "ragged", 16, 12

    def __init__(self):
        super().__init__(seed=0, num_train=512, num_test=32)

    def generate(self, n, gen, train):
        x = torch.randint(self.vocab_size, (n, self.seq_len), generator=gen)
        keep = torch.arange(self.seq_len) < torch.randint(1, self.seq_len + 1, (n, 1), generator=gen)
        return x, torch.where(keep, torch.roll(x, -1, 1), IGNORE)


@pytest.mark.parametrize("task", [
    get_task("mqar", vocab_size=64, seq_len=32, kv_pairs=4, num_train=100, num_test=10),
    get_task("mad:in_context_recall", seq_len=32, vocab_size=16, num_train_examples=50, num_test_examples=10),
    Ragged(),
    pytest.param("text", marks=pytest.mark.skipif(not SHAKESPEARE.is_file(), reason="no Tiny Shakespeare")),
])
def test_the_workers_rows_are_the_batch(task):
    if task == "text":
        task = get_task("text", data=str(SHAKESPEARE), seq_len=16)
    for step in (0, 7, 30):                   # 30 x 6 rows passes an epoch of the 100-example set
        inputs, targets = task.train_batch(step, 6)
        for world in (1, 2, 3, 6):
            per = 6 // world
            rows = [task.train_rows(step, 6, r * per, (r + 1) * per) for r in range(world)]
            assert torch.equal(torch.cat([x for x, _ in rows]), inputs)
            assert torch.equal(torch.cat([y for _, y in rows]), targets)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_of(config, task):
    return {"spec": fit_spec(SPEC, task), "task": task, "config": config, "threads": 1}


def worker(rank, world, port, run, steps, out, results):
    dist.init_process_group("gloo", rank=rank, world_size=world, init_method=f"tcp://127.0.0.1:{port}")
    try:
        state = prepare(run, rank, world, torch.device("cpu"))
        losses = []
        for _ in range(steps):
            loss = train_step(state, 3e-3, run["config"].runtime.batch_size, 0.5)
            losses.append(agree(state, loss, 0.0, False, False).loss)
        save(state, out, run["spec"], run["config"])
        if rank == 0:
            results.put(losses)
    finally:
        dist.destroy_process_group()


def one_process(config, task, steps, out):
    state = set_up(SPEC, task, config, None)
    losses = [train_step(state, 3e-3, config.runtime.batch_size, 0.5) for _ in range(steps)]
    state.save(out)
    return losses


@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp"])
def test_two_gloo_workers_train_like_one_process_and_save_its_checkpoint(tmp_path, fsdp):
    task, steps = Ragged(), 6
    config = TrainConfig.from_dict({"batch_size": 8, "seed": 3, "threads": 1, "workers": 2, "fsdp": fsdp})
    context = multiprocessing.get_context("spawn")
    results, port = context.Queue(), free_port()
    workers = [context.Process(target=worker, args=(r, 2, port, run_of(config, task), steps, str(tmp_path / "two"),
                                                    results)) for r in range(2)]
    for w in workers:
        w.start()
    losses = results.get(timeout=240)
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    reference = one_process(config.with_settings(workers=1, fsdp=False), task, steps, tmp_path / "one")
    assert losses == pytest.approx(reference, abs=1e-5, rel=0)
    two = load_file(tmp_path / "two" / "checkpoint" / "model.safetensors")
    one = load_file(tmp_path / "one" / "checkpoint" / "model.safetensors")
    assert two.keys() == one.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], atol=1e-5, rtol=0)
    # the workers' checkpoint is the single-process format: a single process resumes from it
    resumed = set_up(SPEC, task, config.with_settings(workers=1, fsdp=False), tmp_path / "two")
    assert resumed.step == steps
    state_two = torch.load(tmp_path / "two" / "checkpoint" / "trainer.pt", weights_only=True)["optimizer"]
    state_one = torch.load(tmp_path / "one" / "checkpoint" / "trainer.pt", weights_only=True)["optimizer"]
    assert state_two["param_groups"] == state_one["param_groups"]
    for index, moments in state_one["state"].items():
        for name, value in moments.items():
            torch.testing.assert_close(state_two["state"][index][name], value, atol=1e-5, rtol=0)


@pytest.mark.parametrize("settings, path, message", [
    ({"workers": 2, "batch_size": 5}, "workers", "batch_size 5 does not split over 2 workers: give a multiple of 2"),
    ({"fsdp": True}, "fsdp", "fsdp shards the model over data-parallel workers: give workers >= 2"),
    ({"workers": 2, "device": "cuda:1"}, "device", "give cpu or cuda (one GPU per worker)"),
])
def test_bad_data_parallel_settings_are_one_line_errors_before_anything_starts(settings, path, message):
    config = TrainConfig().with_settings(**settings)
    with pytest.raises(UserError, match=re.escape(message)) as e:
        check_settings(config)
    assert e.value.path == path
    with pytest.raises(UserError, match=re.escape(message)):       # train() checks them first, Ray unstarted
        train(SPEC, "mqar", steps=2, task_params={"num_train": 10, "num_test": 4}, **settings)


def test_more_workers_than_cpus_is_refused_before_ray_starts(monkeypatch):
    import os

    import ray

    if ray.is_initialized():
        pytest.skip("Ray already runs in this process")
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    with pytest.raises(UserError, match="3 workers need 3 CPUs \\(1 each\\) but this machine has 2") as e:
        train(SPEC, "mqar", steps=2, batch_size=6, workers=3, task_params={"num_train": 10, "num_test": 4})
    assert e.value.path == "workers"
    with pytest.raises(UserError, match="a worker asks for 3 CPUs but the largest node of this machine has 2"):
        train(SPEC, "mqar", steps=2, batch_size=6, workers=2, threads=3, task_params={"num_train": 10, "num_test": 4})
    assert not ray.is_initialized()


def test_gpu_workers_without_cuda_or_without_enough_gpus_are_refused_before_ray_starts(monkeypatch):
    import ray

    if ray.is_initialized():
        pytest.skip("Ray already runs in this process")
    small = {"steps": 2, "batch_size": 6, "task_params": {"num_train": 10, "num_test": 4}}
    if not torch.cuda.is_available():
        for fsdp in (False, True):
            with pytest.raises(UserError, match="'cuda': CUDA is not available on this machine") as e:
                train(SPEC, "mqar", workers=2, device="cuda", fsdp=fsdp, **small)
            assert e.value.path == "device"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(UserError, match=re.escape("3 workers need 3 GPUs (1 each) but this machine has 2")) as e:
        train(SPEC, "mqar", workers=3, device="cuda", **small)
    assert e.value.path == "workers" and not ray.is_initialized()


def test_how_many_workers_train_a_run_is_not_part_of_its_identity():
    task = get_task("mqar", num_train=10, num_test=4)
    spec = fit_spec(SPEC, task)
    one = run_fingerprint(spec, task, TrainConfig())
    assert run_fingerprint(spec, task, TrainConfig().with_settings(workers=4, fsdp=True, worker_restarts=0)) == one


def composer(*argv):
    return subprocess.run([sys.executable, "-m", "composer", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_the_cli_names_the_flag_of_a_bad_worker_setting(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("d_model: 32\nlayers: [attention, mlp]\n")
    for argv, message in [
        (["--workers", "0"], "error: --workers: expected an integer >= 1 at most 4,096, got 0"),
        (["--workers", "2", "--batch-size", "3"], "error: --workers: batch_size 3 does not split over 2 workers"),
        (["--fsdp"], "error: --fsdp: fsdp shards the model over data-parallel workers: give workers >= 2"),
        (["--address", "127.0.0.1:1"], "error: --address: --address names the Ray cluster of data-parallel workers"),
    ]:
        done = composer("train", str(spec), "--steps", "2", *argv)
        assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith(message), done.stderr
        assert "Traceback" not in done.stderr
