"""Bounded work from bounded input, the training side: a run's memory is estimated from the spec before anything
is built, and a run that cannot fit is refused with the estimate and the memory available, in the trainer, a
search trial (status `constraint`) and a ladder. The estimate is held above what every primitive keeps for its
backward pass, and not far above it."""

import json

import pytest
import torch

import composer.training.memory as memory
import composer.training.setup as setup
from composer.errors import UserError
from composer.model import build_model
from composer.spec_parse import load_spec
from composer.tasks import get_task
from composer.trainer import TrainConfig, train
from composer.training.memory import WORKSPACE, MemoryLimitError, estimate_memory
from primitives.base import registered

HUGE_WIDTH = {"d_model": 12288, "layers": ["attention", "mlp"]}                      # 1.8B parameters
HUGE_LOOP = {"d_model": 256, "layers": [{"loop": {"times": 2000, "body": ["attention", "mlp"]}}]}
GIB = 2**30


@pytest.fixture
def nothing_built(monkeypatch):
    """Fail the test if the trainer builds a model."""
    def refuse(spec):
        raise AssertionError("the model was built before the memory check")

    monkeypatch.setattr(setup, "build_model", refuse)


def test_huge_width_is_refused_before_anything_is_built(monkeypatch, nothing_built, tmp_path, tiny_task):
    monkeypatch.setattr(memory, "available_memory", lambda device, share=1.0: 8 * GIB)
    with pytest.raises(MemoryLimitError) as info:
        train(HUGE_WIDTH, tiny_task(), 2, out_dir=tmp_path / "run")
    message = str(info.value)
    assert message.startswith("memory: training needs about ") and "8.0 GiB available" in message
    assert "weights, gradients and optimizer state" in message and "--no-memory-check" in message
    assert not (tmp_path / "run").exists()                       # nothing written either


def test_huge_loop_is_refused_on_this_machine(nothing_built):
    """2,000 iterations of a 256-wide block at batch 32 x 256 tokens: petabytes of activations, more than any
    machine has."""
    with pytest.raises(MemoryLimitError, match=r"training needs about [\d,.]+ [GMT]iB .* available"):
        train(HUGE_LOOP, get_task("mqar", seq_len=256), 2)


def test_the_estimate_scales_with_what_it_counts(tiny_spec):
    spec = load_spec({**tiny_spec, "vocab_size": 64})
    one = estimate_memory(spec, seq_len=32, batch_size=8, eval_batch_size=1)
    assert one.parameters == 16 * sum(p.numel() for p in build_model(spec).parameters())
    assert estimate_memory(spec, 32, 16, 1).activations == 2 * one.activations          # linear in the batch
    looped = load_spec({**tiny_spec, "layers": [{"loop": {"times": 10, "body": ["attention", "mlp"]}}]})
    assert estimate_memory(looped, 32, 8, 1).activations > 9 * one.activations / 2      # each iteration counts
    truncated = load_spec({**tiny_spec, "layers": [{"loop": {"times": 10, "grad_iters": 1, "body": ["attention", "mlp"]}}]})
    assert estimate_memory(truncated, 32, 8, 1).activations < 2 * one.activations      # only backpropagated ones


def test_memory_check_can_be_turned_off(monkeypatch, tiny_spec, tiny_task):
    monkeypatch.setattr(memory, "available_memory", lambda device, share=1.0: 1000)
    with pytest.raises(MemoryLimitError, match="1000.0 B available|0.0 MiB available"):
        train(tiny_spec, tiny_task(), 1, batch_size=2, threads=1)
    assert train(tiny_spec, tiny_task(), 1, batch_size=2, threads=1, memory_check=False).status == "completed"


def test_available_memory_is_read_for_this_machine():
    available = memory.available_memory(torch.device("cpu"))
    assert available is None or 0 < available < 2**50


def test_a_run_on_a_shared_gpu_may_take_only_its_share_of_the_memory(monkeypatch, tiny_spec):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (8 * GIB, 10 * GIB))
    cuda = torch.device("cuda")
    assert memory.available_memory(cuda) == 8 * GIB
    assert memory.available_memory(cuda, share=0.5) == 5 * GIB      # the other half is another trial's
    spec = load_spec({**tiny_spec, "vocab_size": 64})
    needs = estimate_memory(spec, 32, 2, 2).total
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (needs * 3 // 2, needs * 3 // 2))
    memory.check_memory(spec, 32, 2, 2, cuda)
    with pytest.raises(MemoryLimitError, match=r"available to a run holding 0.5 of it: use a smaller"):
        memory.check_memory(spec, 32, 2, 2, cuda, share=0.5)


def test_a_search_trial_on_a_fraction_of_a_gpu_is_held_to_that_fraction():
    from composer.search.trial import placement

    assert placement({"gpus_per_worker": 0.25}, None) == {"device": "cuda", "memory_share": 0.25}
    assert placement({"gpus_per_worker": 1}, None) == {"device": "cuda"}
    assert placement({"gpus_per_worker": 0}, None) == {"device": "cpu"}
    with pytest.raises(UserError, match="memory_share"):
        TrainConfig.from_dict({"memory_share": 1.5})


def kept_values(spec_data, batch_size, seq_len):
    """Values per token the model keeps for its backward pass, counted with saved-tensor hooks."""
    spec = load_spec(spec_data)
    torch.manual_seed(0)
    model = build_model(spec)
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(torch.randint(0, spec.vocab_size, (batch_size, seq_len)))
    return sum(storages.values()) / 4 / (batch_size * seq_len)


@pytest.mark.parametrize("op", sorted(registered()))
def test_the_estimate_covers_what_each_primitive_keeps(op):
    """Per sub-layer (two layers minus one): the estimate (what it counts as kept, times the backward pass's
    workspace) is at least what the layer really keeps, and what it counts as kept is at most 3x the real."""
    d, seq_len, batch = 128, 64, 2
    one = {"d_model": d, "vocab_size": 64, "max_seq_len": seq_len, "layers": [op]}
    two = {**one, "layers": [op, op]}
    measured = kept_values(two, batch, seq_len) - kept_values(one, batch, seq_len)
    estimates = [estimate_memory(load_spec(s), seq_len, batch, eval_batch_size=1) for s in (one, two)]
    counted = (estimates[1].activations - estimates[0].activations) / (4 * batch * seq_len * WORKSPACE)
    assert measured > 0
    assert WORKSPACE * counted >= measured, (op, counted, measured)
    assert counted <= 3 * measured, (op, counted, measured)


def test_a_search_trial_that_cannot_fit_is_a_constraint(monkeypatch, tmp_path, nothing_built):
    from ray import tune

    from composer.search.trial import run_trial

    reports = []
    monkeypatch.setattr(tune, "report", reports.append)
    monkeypatch.setattr(memory, "available_memory", lambda device, share=1.0: 8 * GIB)
    meta = {"trial": 3, "spec": HUGE_WIDTH, "arch_id": "x", "stripe": "AM", "cache_key": "k", "costs": {},
            "train": {"steps": 2, "batch_size": 4}}
    context = {"objectives": ["val_loss"], "modes": ["min"], "run_dir": str(tmp_path), "repeats": 1, "seed": 0,
               "task": {"name": "mqar", "params": {"vocab_size": 64, "seq_len": 32, "kv_pairs": 4}, "seq_len": 32}}
    run_trial({"meta": meta}, context)
    assert len(reports) == 1 and reports[0]["status"] == "constraint" and reports[0]["final"]
    assert "training needs about" in reports[0]["reason"] and "8.0 GiB available" in reports[0]["reason"]
    result = json.loads((tmp_path / "trials" / "3" / "result.json").read_text())
    assert result["status"] == "constraint" and result["reason"] == reports[0]["reason"]


def test_a_ladder_that_cannot_fit_is_refused_before_training(monkeypatch, tmp_path):
    from scaling import ladder as ladder_module
    from scaling.ladder_parse import load_ladder

    def no_training(*args, **kwargs):
        raise AssertionError("a trial trained before the memory check")

    monkeypatch.setattr(ladder_module, "train_trial", no_training)
    monkeypatch.setattr(memory, "available_memory", lambda device, share=1.0: 256 * 2**20)
    ladder = load_ladder({
        "name": "t", "task": {"name": "mqar", "vocab_size": 64, "seq_len": 32, "kv_pairs": 4},
        "sizes": ["50K", "20M"], "budget": {"tokens": 1000}, "train": {"batch_size": 4, "eval_batch_size": 8},
        "architectures": {"a": {"d_model": 64, "layers": ["attention", "mlp"]}}})
    with pytest.raises(UserError, match=r"architecture 'a' at size 20M: training needs about .* 256.0 MiB available"):
        ladder_module.run_ladder(ladder, out_root=tmp_path)
    assert not (tmp_path / "t" / "ladder.json").exists()
