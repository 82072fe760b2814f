import os

import pytest
import torch

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# -- the tiny model and task the training tests share ------------------------------------------------------------
@pytest.fixture
def tiny_spec():
    """Attention + MLP at width 32: trains a step in milliseconds."""
    return {"d_model": 32, "vocab_size": 64, "max_seq_len": 64, "layers": ["attention", "mlp"]}


@pytest.fixture
def tiny_spec_file(tmp_path):
    """The tiny spec as a YAML file (the vocabulary and context come from the task)."""
    path = tmp_path / "s.yaml"
    path.write_text("d_model: 32\nlayers: [attention, mlp]\n")
    return path


@pytest.fixture
def tiny_task_params():
    return dict(vocab_size=64, seq_len=32, kv_pairs=4, num_train=512, num_test=64)


@pytest.fixture
def tiny_task(tiny_task_params):
    """A function giving a fresh small MQAR task on each call."""
    from composer.tasks import get_task

    return lambda: get_task("mqar", **tiny_task_params)
