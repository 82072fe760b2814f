"""Ladders: parsing with field errors, planning sizes and budgets, running/resuming, fits and transfer."""

import json

import pytest

from composer import UserError
from scaling.ladder import LocalRunner, Trial, plan, run_ladder, train_trial
from scaling.ladder_parse import load_ladder, parse_count
from scaling.rules import param_count

ARCHS = {"attn": {"d_model": 64, "layers": ["attention", "mlp"]},
         "gdn": {"d_model": 64, "layers": ["gated_deltanet", "mlp"]},
         "hyb": {"d_model": 64, "layers": ["gated_deltanet", "mlp", "attention", "mlp"]}}
LAW = {"attn": (1.5, 30.0, 0.30), "gdn": (1.6, 30.0, 0.30), "hyb": (1.4, 30.0, 0.30)}   # E, A, alpha


def config(**changes):
    data = {"name": "t", "task": {"name": "text", "seq_len": 32}, "architectures": ARCHS,
            "sizes": ["60K", "200K", "600K"], "tolerance": 0.05, "budget": {"tokens_per_param": 2},
            "seeds": [0, 1], "predict_at": "5M", "bootstrap": 50}
    data.update(changes)
    return data


@pytest.mark.parametrize("text, value", [("20M", 20_000_000), ("1.5B", 1_500_000_000), ("300k", 300_000),
                                         (1e6, 1_000_000), (123, 123), ("2e5", 200_000)])
def test_parse_count(text, value):
    assert parse_count(text) == value


@pytest.mark.parametrize("bad", ["20X", "-5M", 0, True, "M"])
def test_parse_count_rejects(bad):
    with pytest.raises(ValueError):
        parse_count(bad)


def test_ladder_errors_name_the_field_and_line():
    text = "name: t\ntask: text\narchitectures: {a: {d_model: 64, layers: [mlp]}}\nsizes: [1M, 10Q]\n"
    with pytest.raises(UserError) as info:
        load_ladder(text)
    assert str(info.value) == "line 4: sizes[1]: expected a count like 20M, 1.5B or 300000, got '10Q'"
    with pytest.raises(UserError, match="budget: give exactly one of tokens_per_param, tokens, flops"):
        load_ladder(config(budget={"tokens": 1000, "flops": [1e12]}))
    with pytest.raises(UserError, match="sizes: sizes must be distinct and increasing"):
        load_ladder(config(sizes=["1M", "100K"]))
    with pytest.raises(UserError, match=r"architectures.attn.layers\[0\]: unknown primitive 'atention'"):
        load_ladder(config(architectures={"attn": {"d_model": 64, "layers": ["atention"]}}))
    with pytest.raises(UserError, match="unknown field 'size'"):
        load_ladder({**config(), "size": 3})


def test_plan_sizes_and_token_rules():
    ladder = load_ladder(config())
    trials = plan(ladder)
    assert len(trials) == 3 * 3 * 2
    for t in trials:
        n = param_count(t.spec)
        assert abs(n - t.target) <= 0.05 * t.target
        assert t.tokens == int(2 * n)


def test_plan_isoflop_budgets():
    ladder = load_ladder(config(budget={"flops": ["1e12", "3e12"], "max_tokens": "5M"}, seeds=[0]))
    trials = plan(ladder, seq_len=32)
    assert len(trials) == 3 * 3 * 2
    from composer.costs import model_cost
    for t in trials:
        expected = float(t.budget) / model_cost(t.spec, seq_len=32).train_flops_per_token
        assert t.tokens == min(int(expected), 5_000_000)


class FakeRunner:
    """Losses from a known law per architecture (seed 1 slightly worse): no training."""

    def __init__(self):
        self.seen: list[Trial] = []

    def run(self, trials, ladder):
        for t in trials:
            self.seen.append(t)
            E, A, alpha = LAW[t.arch]
            loss = E + A * param_count(t.spec) ** -alpha + 0.002 * t.seed
            yield t, {"val_loss": loss, "status": "completed", "tokens": t.tokens}


def test_run_ladder_fits_transfers_and_resumes(tmp_path):
    ladder = load_ladder(config())
    runner = FakeRunner()
    result = run_ladder(ladder, tmp_path, runner)
    assert len(runner.seen) == 18
    saved = json.loads((tmp_path / "t" / "ladder.json").read_text())
    assert len(saved["trials"]) == 18 and saved["fits"].keys() == {"attn", "gdn", "hyb"}
    for arch, (E, A, alpha) in LAW.items():
        assert saved["fits"][arch]["alpha"] == pytest.approx(alpha, rel=0.05)
        predicted = saved["fits"][arch]["prediction"]
        assert predicted["loss"] == pytest.approx(E + A * 5e6 ** -alpha + 0.001, abs=0.01)
    transfer = result["transfer"]
    assert transfer["ranking"]["60K"] == ["hyb", "attn", "gdn"]
    assert transfer["transfer"]["600K"] == {"spearman": 1.0, "kendall": 1.0, "pairwise": 1.0}
    assert transfer["noise_floor"]["60K"]["spearman"] == 1.0
    assert (tmp_path / "t" / "fits.png").is_file()
    again = FakeRunner()
    run_ladder(ladder, tmp_path, again)            # everything is done: nothing is trained again
    assert again.seen == []


def test_local_runner_trains_a_real_trial():
    ladder = load_ladder(config(sizes=["20K", "40K"], budget={"tokens": 256}, seeds=[0],
                                train={"batch_size": 4, "lr": 1e-3, "warmup_steps": 1}))
    trial = plan(ladder)[0]
    metrics = train_trial(trial, ladder.task, ladder.train)
    assert metrics["status"] == "completed" and metrics["tokens"] == 256
    assert 0 < metrics["val_loss"] < 10
    rows = list(LocalRunner().run([trial], ladder))
    assert rows[0][1]["val_loss"] == pytest.approx(metrics["val_loss"])   # same seed, same result


@pytest.mark.slow
def test_ray_runner_trains_the_same_trials_as_ray_tasks():
    """Ladder trials as Ray tasks (embedded cluster): every trial comes back, with the local result."""
    from scaling.ray_runner import RayRunner

    ladder = load_ladder(config(sizes=["20K", "40K"], budget={"tokens": 256}, seeds=[0],
                                train={"batch_size": 4, "lr": 1e-3, "warmup_steps": 1}))
    trials = plan(ladder)
    local = {(t.arch, t.size, t.seed): m["val_loss"] for t, m in LocalRunner(threads=1).run(trials, ladder)}
    remote = {(t.arch, t.size, t.seed): m["val_loss"] for t, m in RayRunner(threads=1).run(trials, ladder)}
    assert remote.keys() == local.keys() and len(remote) == len(trials)
    for key, loss in local.items():
        assert remote[key] == pytest.approx(loss)


def test_ladder_task_parameters_under_params_or_beside_the_name():
    flat = load_ladder(config(task={"name": "text", "seq_len": 64}))
    nested = load_ladder(config(task={"name": "text", "params": {"seq_len": 64}}))
    assert flat.task == nested.task and nested.task.flat() == {"name": "text", "seq_len": 64}
    with pytest.raises(UserError, match="task.params: give the task's parameters under `params`"):
        load_ladder(config(task={"name": "text", "seq_len": 64, "params": {"seq_len": 32}}))


def test_an_architecture_that_states_no_vocab_size_trains_at_the_task_s_and_one_that_states_it_keeps_it(tmp_path):
    stated = tmp_path / "stated.yaml"
    stated.write_text("d_model: 64\nvocab_size: 300\nlayers: [attention, mlp]\n")
    unstated = tmp_path / "unstated.yaml"
    unstated.write_text("d_model: 64\nlayers: [gated_deltanet, mlp]\n")
    ladder = load_ladder(config(architectures={"file_stated": str(stated), "file_unstated": str(unstated),
                                               "inline_unstated": ARCHS["attn"],
                                               "inline_stated": {**ARCHS["gdn"], "vocab_size": 300}},
                                sizes=["60K", "200K"], seeds=[0]))
    assert sorted(ladder.task_vocabulary) == ["file_unstated", "inline_unstated"]
    vocab = {t.arch: t.spec.vocab_size for t in plan(ladder, vocab_size=97)}
    assert vocab == {"file_stated": 300, "file_unstated": 97, "inline_unstated": 97, "inline_stated": 300}
