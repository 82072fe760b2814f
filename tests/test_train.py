"""The trainer: budgets, schedules, stop signals, divergence, resume equality, sweeps, suites, the CLI, and
the ground truths hybrid design rests on (attention solves MQAR where a fixed-state mixer cannot; a small
model learns the shipped text)."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from composer.cli.train import register
from composer.errors import UserError
from composer.tasks import get_task, mad_suite
from composer.trainer import Budget, StopTraining, make_optimizer, train
from composer.training.schedule import lr_factor


def test_budget_forms_and_errors():
    assert Budget.of(10) == Budget(steps=10)
    assert Budget.of({"tokens": 1000}).total_steps(tokens_per_step=300) == 4
    assert Budget(steps=10, tokens=100).total_steps(tokens_per_step=50) == 2
    assert Budget(seconds=5).total_steps(64) is None
    assert Budget(seconds=10).progress(3, elapsed=5.0, tokens_per_step=64) == 0.5
    with pytest.raises(UserError, match="needs steps, tokens or seconds"):
        Budget()
    with pytest.raises(UserError) as e:
        Budget(steps=0)
    assert e.value.path == "budget.steps"
    with pytest.raises(UserError, match="unknown budget field 'epochs'"):
        Budget.of({"epochs": 3})


def test_schedules():
    assert lr_factor(0, 0.0, warmup_steps=4) == 0.25
    assert lr_factor(3, 0.1, warmup_steps=4) == 1.0 or lr_factor(3, 0.1, warmup_steps=4) == pytest.approx(1.0)
    assert lr_factor(10, 1.0, 4, "cosine", min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(10, 0.5, 4, "cosine", min_ratio=0.0) == pytest.approx(0.5)
    assert lr_factor(10, 0.7, 4, "wsd", decay_fraction=0.2) == 1.0
    assert lr_factor(10, 0.9, 4, "wsd", min_ratio=0.0, decay_fraction=0.2) == pytest.approx(0.5)
    with pytest.raises(UserError, match="unknown schedule"):
        lr_factor(10, 0.5, 4, "linear")


def test_no_weight_decay_on_norms_biases_embeddings(tiny_spec):
    from composer import build_model

    model = build_model({**tiny_spec, "tie_embeddings": False})
    opt = make_optimizer(model, 1e-3, 0.1)
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    assert id(model.head.weight) in decayed and id(model.embed.weight) not in decayed
    assert all(p.ndim >= 2 for p in opt.param_groups[0]["params"])
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_train_reports_quality_and_cost(tmp_path, tiny_spec, tiny_task):
    calls = []
    result = train(tiny_spec, tiny_task(), Budget(steps=6), batch_size=8, eval_every=3, out_dir=tmp_path,
                   callback=calls.append, threads=1)
    assert result.status == "completed" and result.step == 6
    m = result.metrics
    for key in ("val_loss", "accuracy", "tokens_per_s", "peak_memory_bytes", "params", "non_embedding_params",
                "active_params", "flops_per_token", "state_bytes", "step", "tokens", "status"):
        assert key in m, key
    assert m["tokens"] == 6 * 8 * 32 and m["params"] == sum(p.numel() for p in _model_params(tiny_spec))
    assert [c["step"] for c in calls] == [3, 6]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [3, 6]
    assert (tmp_path / "checkpoint" / "model.safetensors").exists()


def _model_params(spec):
    from composer import build_model

    spec = {**spec, "vocab_size": 64}
    return list(build_model(spec).parameters())


def test_token_budget_and_threads(tiny_spec, tiny_task):
    before = torch.get_num_threads()
    result = train(tiny_spec, tiny_task(), Budget(tokens=8 * 32 * 3 + 1), batch_size=8, threads=1)
    assert result.step == 4
    assert torch.get_num_threads() == before


def test_seconds_budget_ends_the_run(tiny_spec, tiny_task):
    result = train(tiny_spec, tiny_task(), Budget(seconds=0.5), batch_size=4, eval_every=10**6, threads=1)
    assert result.status == "completed" and result.step > 0
    assert 0.5 <= result.metrics["train_time_s"] < 5


@pytest.mark.parametrize("stop", ["false", "raise"])
def test_callback_stops_the_run(stop, tiny_spec, tiny_task):
    def callback(metrics):
        if metrics["step"] >= 4:
            if stop == "raise":
                raise StopTraining
            return False

    result = train(tiny_spec, tiny_task(), 20, batch_size=4, eval_every=2, callback=callback, threads=1)
    assert result.status == "stopped" and result.step == 4 and result.metrics["status"] == "stopped"


def test_divergence_is_a_status_not_an_exception(tiny_spec, tiny_task):
    result = train(tiny_spec, tiny_task(), 30, lr=1e6, batch_size=8, warmup_steps=1, grad_clip=1e9, threads=1)
    assert result.status == "diverged"
    assert result.diverged_step is not None and 0 < result.diverged_step < 30
    assert result.metrics["diverged_step"] == result.diverged_step


def test_resume_gives_the_same_result(tmp_path, tiny_spec, tiny_task):
    common = dict(batch_size=8, eval_every=5, lr=3e-3, threads=1)
    full = train(tiny_spec, tiny_task(), 10, out_dir=tmp_path / "full", **common)
    part = train(tiny_spec, tiny_task(), 10, out_dir=tmp_path / "part", callback=lambda m: m["step"] < 5, **common)
    assert part.status == "stopped" and part.step == 5
    resumed = train(tiny_spec, tiny_task(), 10, out_dir=tmp_path / "part", **common)
    assert resumed.status == "completed" and resumed.step == 10
    assert resumed.metrics["val_loss"] == full.metrics["val_loss"]
    a = load_file(tmp_path / "full" / "checkpoint" / "model.safetensors")
    b = load_file(tmp_path / "part" / "checkpoint" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [5, 10]


def test_lr_sweep_keeps_the_best(tiny_spec, tiny_task):
    result = train(tiny_spec, tiny_task(), 8, lrs=[1e-5, 3e-3, 1e6], batch_size=8, threads=1)
    rows = {r["lr"]: r for r in result.sweep}
    assert rows[1e6]["status"] == "diverged"
    assert result.metrics["lr"] == 3e-3
    assert result.metrics["accuracy"] >= rows[1e-5]["accuracy"]


def test_mad_suite_reports_each_task_and_the_mean(tiny_spec):
    suite = mad_suite(tasks=["memorization", "compression"], num_train_examples=64, num_test_examples=16)
    progress = []
    result = train(tiny_spec, suite, 2, batch_size=4, threads=1, callback=progress.append)
    m = result.metrics
    assert set(result.members) == {"memorization/baseline", "compression/baseline"}
    assert m["accuracy"] == pytest.approx((m["accuracy/memorization"] + m["accuracy/compression"]) / 2)
    # after each member: the running mean over the members done so far
    assert [(p["member"], p["members_done"], p["members_total"]) for p in progress] == [
        ("memorization/baseline", 1, 2), ("compression/baseline", 2, 2)]
    assert progress[0]["accuracy"] == progress[0]["member_accuracy"] == m["accuracy/memorization"]
    assert progress[1]["accuracy"] == pytest.approx(m["accuracy"])


def test_mad_suite_members_evaluate_once_unless_asked(tmp_path, tiny_spec):
    suite = mad_suite(tasks=["memorization"], num_train_examples=64, num_test_examples=16)
    train(tiny_spec, suite, 10, batch_size=4, threads=1, out_dir=tmp_path / "once")
    curve = (tmp_path / "once" / "memorization__baseline" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in curve] == [10]
    train(tiny_spec, suite, 10, batch_size=4, threads=1, out_dir=tmp_path / "asked", eval_every=5)
    curve = (tmp_path / "asked" / "memorization__baseline" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in curve] == [5, 10]


def test_bad_arguments_are_user_errors(tiny_spec, tiny_task):
    with pytest.raises(UserError, match="unknown task"):
        train(tiny_spec, "nope", 1)
    with pytest.raises(UserError, match="unknown schedule"):
        train(tiny_spec, tiny_task(), 1, schedule="step")


def _cli(argv):
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_train_json(tmp_path, capsys, tiny_spec_file):
    spec = tiny_spec_file
    code = _cli(["train", str(spec), "--task", "mqar", "--set", "vocab_size=64", "--set", "seq_len=32",
                 "--set", "kv_pairs=4", "--set", "num_test=32", "--steps", "3", "--batch-size", "4", "--threads",
                 "1", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "completed" and out["metrics"]["step"] == 3
    with pytest.raises(UserError, match="expected PATH=VALUE"):
        _cli(["train", str(spec), "--set", "seq_len"])
    with pytest.raises(UserError, match="--data applies to the text task only"):
        _cli(["train", str(spec), "--data", "x.txt"])


@pytest.mark.slow
def test_small_model_learns_the_shipped_text():
    """A 2-layer byte-level model goes well below the unigram entropy of the sample (3.02 nats) in 300 steps
    of 16 x 128 tokens: measured 1.51 nats (2.18 bits/byte), 15 s on one idle core (45 s under load)."""
    task = get_task("text", seq_len=128)
    spec = {"d_model": 64, "max_seq_len": 128, "layers": ["attention", "mlp", "attention", "mlp"]}
    result = train(spec, task, 300, lr=3e-3, batch_size=16, threads=1)
    assert result.metrics["val_loss"] < task.unigram_entropy() - 0.8
    assert math.isfinite(result.metrics["bits_per_byte"])


MQAR_SETTING = dict(vocab_size=64, seq_len=32, kv_pairs=8, num_train=100_000, num_test=500)
MQAR_STEPS = 800


@pytest.mark.slow
def test_attention_solves_mqar_where_a_fixed_state_mixer_does_not():
    """Zoology's separation, scaled to 2 CPU cores: MQAR at vocab 64, seq_len 32, 8 kv pairs (every query slot
    used), width 64, two mixer layers each followed by an MLP, 1 head, post-norm, batch 64, lr 3e-3 (cosine
    over 800 steps, 50 warmup), no weight decay. Attention stops once it reaches 0.99; retnet (fixed decay,
    a 32 x 64 state per layer) trains the full 800 steps and must stay at least 0.2 below.

    Measured with this test's settings (seed 0, 1 thread, 2 shared cores): attention 0.9998 at step 300
    (curve 0.03, 0.17, 1.0 every 100 steps), 11 s; retnet 0.124 after 800 steps, 34 s. Before the embedding
    init was fixed (std 0.02 -> d^-1/2): attention 0.998 at step 500, seeds 1 and 2 1.000 and 0.996; retnet
    0.096 after 1,500 steps, 0.03 at lr 1e-2. Zoology's own settings (seq 256, 16+ pairs) need ~100x this
    budget.

    Post-norm because it learns the induction circuit fastest here: with the pre-norm default attention
    reaches 0.90 after 800 steps (still climbing), which would make the test several times longer.
    """
    task = get_task("mqar", **MQAR_SETTING)

    def spec(op):
        layer = {"op": op, "n_heads": 1}
        return {"d_model": 64, "max_seq_len": 32, "norm_position": "post", "layers": [layer, "mlp", layer, "mlp"]}

    common = dict(lr=3e-3, batch_size=64, weight_decay=0.0, warmup_steps=50, eval_every=100, threads=1)
    attention = train(spec("attention"), task, MQAR_STEPS, callback=lambda m: m["accuracy"] < 0.99, **common)
    retnet = train(spec("retnet"), task, MQAR_STEPS, **common)
    assert attention.status == "stopped" and attention.metrics["accuracy"] >= 0.99
    assert retnet.status == "completed" and retnet.step == MQAR_STEPS
    assert retnet.metrics["accuracy"] <= attention.metrics["accuracy"] - 0.2
