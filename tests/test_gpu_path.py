"""The parts of the GPU path that a CPU can hold: fused AdamW over fp32 master weights, a search trial
trains on the device its resources give it, and `compile` trains like eager (slow: inductor compiles on CPU).
bf16 autocast (training/step.py) and fla's kernels run only on CUDA: benchmarks/bench_gpu.py checks them there."""

import pytest
import torch

from composer.search.trial import placement
from composer.trainer import train
from composer.training.setup import FUSED_ADAMW_DEVICES, make_optimizer


def test_adamw_is_fused_on_cuda_and_cpu_over_fp32_master_weights():
    assert "cuda" in FUSED_ADAMW_DEVICES
    optimizer = make_optimizer(torch.nn.Linear(4, 4), 1e-3, 0.1)
    assert optimizer.defaults["fused"] is True
    assert all(p.dtype == torch.float32 for g in optimizer.param_groups for p in g["params"])   # bf16 only in autocast


@pytest.mark.parametrize("context, device, expected", [
    ({"workers": 1, "gpus_per_worker": 0}, None, {"device": "cpu"}),          # no GPU given: none taken
    ({"workers": 1, "gpus_per_worker": 1}, None, {"device": "cuda"}),         # Tune's visible GPU
    ({"workers": 1, "gpus_per_worker": 0.5}, None, {"device": "cuda", "memory_share": 0.5}),   # a share of one
    ({"workers": 1, "gpus_per_worker": 1}, "cuda:0", {"device": "cuda:0"}),   # the trial's own train.device
    ({"workers": 2, "gpus_per_worker": 1}, None, {"workers": 2, "device": "cuda"}),
    ({"workers": 2, "gpus_per_worker": 0}, "cuda", {"workers": 2, "device": "cpu"}),
])
def test_a_trial_trains_on_the_device_its_resources_give_it(context, device, expected):
    assert placement(context, device) == expected


@pytest.mark.slow
def test_compile_trains_like_eager():
    spec = {"d_model": 32, "layers": [{"op": "attention", "n_heads": 2}, "mlp"]}
    settings = {"steps": 3, "batch_size": 4, "lr": 3e-3, "warmup_steps": 1, "log_every": 1, "threads": 1,
                "task_params": {"vocab_size": 32, "seq_len": 16, "kv_pairs": 2, "num_train": 64, "num_test": 8}}
    runs = {}
    for compiled in (False, True):
        losses = []
        train(spec, "mqar", compile=compiled, on_step=lambda p, out=losses: out.append(p["loss"]), **settings)
        runs[compiled] = losses
    assert len(runs[True]) == 3 and runs[True] == pytest.approx(runs[False], abs=1e-4)
