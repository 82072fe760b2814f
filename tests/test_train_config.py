"""TrainConfig, the one list of training settings: flat and nested forms, YAML, errors that name the field, the
CLI flags generated from it, the search space's and the ladder's `train:` blocks, and torch's thread count."""

import argparse
import dataclasses
import textwrap
import typing

import pytest
import torch
import yaml

import composer.trainer as trainer
from composer.cli.train import register, train_config_from_args
from composer.errors import UserError
from composer.fields import without_none
from composer.search.space_parse import load_space
from composer.tasks import mad_suite
from composer.trainer import Budget, TrainConfig, train, train_suite, train_sweep
from composer.training.config import SETTINGS
from scaling.ladder_parse import load_ladder


def other_value(key):
    """A valid value different from the setting's default, chosen from its declared type alone."""
    s = SETTINGS[key]
    if s.kind is bool:
        return not s.default
    if s.kind is str:
        return next(c for c in s.choices if c != s.default) if s.choices else "cpu"
    if s.kind is tuple:
        item = typing.get_args(without_none(s.type)[0])[0]
        return ("test", "holdout") if item is str else (0.5, 0.75)[: s.length or 2]
    return 7 if s.kind is int else 0.25


def parse_cli(argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["train", "spec.yaml", *argv])


def flag_argv(key, value):
    flag = "--" + key.replace("_", "-")
    if isinstance(value, bool):
        return [flag if value else "--no-" + flag[2:]]
    if isinstance(value, tuple):
        return [flag, *map(str, value)]
    return [flag, str(value)]


@pytest.mark.parametrize("key", sorted(SETTINGS))
def test_every_setting_round_trips_through_dict_yaml_and_cli(key):
    value = other_value(key)
    config = TrainConfig().with_settings(**{key: value})
    assert config != TrainConfig() and config.flat()[key] == value
    assert TrainConfig.from_dict(config.to_dict()) == config                   # nested form
    assert TrainConfig.from_dict(config.flat()) == config                      # flat form
    assert TrainConfig.load(yaml.safe_dump(config.to_dict())) == config        # YAML text
    assert train_config_from_args(parse_cli(flag_argv(key, value))) == config  # a generated CLI flag
    assert SETTINGS[key].help


def test_flat_and_nested_forms_mean_the_same_config(tmp_path):
    flat = TrainConfig.from_dict({"lr": "3e-3", "warmup_steps": 5, "tokens": 1.0e6, "lrs": [1e-3, 2e-3]})
    nested = TrainConfig.from_dict({"optimizer": {"lr": 3e-3, "lrs": [1e-3, 2e-3]}, "lr_schedule": {"warmup_steps": 5},
                                    "budget": {"tokens": 1_000_000}})
    assert flat == nested
    assert nested.optimizer.lr == 3e-3 and nested.lr_schedule.warmup_steps == 5
    assert nested.budget == Budget(tokens=1_000_000)          # a budget given replaces the default whole
    assert TrainConfig().budget == Budget(steps=1000)
    path = tmp_path / "train.yaml"
    path.write_text("optimizer: {lr: 3.0e-3, lrs: [1.0e-3, 2.0e-3]}\nwarmup_steps: 5\ntokens: 1000000\n")
    assert TrainConfig.load(str(path)) == flat
    from_file = train_config_from_args(parse_cli(["--config", str(path), "--lr", "0.5", "--steps", "9"]))
    assert from_file == flat.with_settings(lr=0.5, steps=9) and from_file.budget == Budget(steps=9)


@pytest.mark.parametrize("data, path, message", [
    ({"warmup": 5}, "train.warmup", "unknown field 'warmup'; did you mean 'warmup_steps'?"),
    ({"optimizer": {"weight_decy": 0.1}}, "train.optimizer.weight_decy",
     "unknown optimizer setting 'weight_decy'; did you mean 'weight_decay'?"),
    ({"schedule": "cosin"}, "train.schedule", "unknown schedule 'cosin'; did you mean 'cosine'?"),
    ({"warmup_steps": "five"}, "train.warmup_steps", "expected an integer >= 0, got 'five'"),
    ({"warmup_steps": -1}, "train.warmup_steps", "expected an integer >= 0, got -1"),
    ({"lr_schedule": {"warmup_steps": 2.5}}, "train.lr_schedule.warmup_steps", "expected an integer >= 0"),
    ({"batch_size": 0}, "train.batch_size", "expected a positive integer, got 0"),
    ({"lr": True}, "train.lr", "expected a positive number below 1e+30, got True"),
    ({"compile": "yes"}, "train.compile", "expected true or false, got 'yes'"),
    ({"betas": [0.9]}, "train.betas", "expected a list of 2 numbers >= 0"),
    ({"lr": 1e-3, "optimizer": {"lr": 2e-3}}, "train.optimizer.lr", "given twice (also at train.lr)"),
    ({"optimizer": 0.1}, "train.optimizer", "expected a mapping"),
])
def test_errors_name_the_field(data, path, message):
    with pytest.raises(UserError) as info:
        TrainConfig.from_dict(data)
    assert info.value.path == path and message in info.value.message


def test_errors_from_yaml_give_the_line_and_python_keywords_are_checked_before_training(tiny_spec, tiny_task):
    with pytest.raises(UserError) as info:
        TrainConfig.load("lr: 1.0e-3\nwarmup_steps: 2.5\n")
    assert (info.value.path, info.value.line) == ("warmup_steps", 2)
    with pytest.raises(UserError, match="did you mean 'warmup_steps'") as info:
        train(tiny_spec, tiny_task(), 1, warmup=5)
    assert info.value.path == "train.warmup"
    with pytest.raises(UserError) as info:
        train(tiny_spec, tiny_task(), 1, config={"batch_size": "big"})
    assert info.value.path == "train.batch_size"


def test_cli_flag_for_a_nested_setting_reaches_the_trainer(tmp_path, monkeypatch, capsys, tiny_spec_file):
    """`--warmup-steps 2` sets lr_schedule.warmup_steps: the first steps run at 1/2 and 2/2 of the peak
    (the default, 50 capped at a tenth of 30 steps, would give 1/3, 2/3, 3/3)."""
    seen = []

    def spy(state, lr, batch_size, grad_clip):
        seen.append((lr, batch_size, grad_clip, state.optimizer.param_groups[0]["betas"]))
        return real(state, lr, batch_size, grad_clip)

    real = trainer.train_step
    monkeypatch.setattr(trainer, "train_step", spy)
    spec = tiny_spec_file
    args = parse_cli(["--set", "vocab_size=64", "--set", "seq_len=32", "--set", "kv_pairs=4", "--set", "num_test=32",
                      "--steps", "30", "--batch-size", "4", "--lr", "0.01", "--warmup-steps", "2", "--schedule",
                      "constant", "--grad-clip", "0.5", "--betas", "0.8", "0.9", "--threads", "1", "--json"])
    args.spec = str(spec)
    assert args.func(args) == 0
    assert [round(lr, 6) for lr, *_ in seen[:3]] == [0.005, 0.01, 0.01]
    assert len(seen) == 30 and all(entry[1:] == (4, 0.5, (0.8, 0.9)) for entry in seen)
    capsys.readouterr()
    with pytest.raises(UserError) as info:
        train_config_from_args(parse_cli(["--warmup-steps", "-3"]))
    assert info.value.path == "--warmup-steps"


def test_budget_argument_replaces_the_configs_budget(tiny_spec, tiny_task):
    config = TrainConfig.from_dict({"steps": 50, "batch_size": 4, "threads": 1, "eval_every": 1000})
    assert train(tiny_spec, tiny_task(), 3, config).step == 3
    assert train(tiny_spec, tiny_task(), config=dataclasses.replace(config, budget=Budget(steps=2))).step == 2


def test_every_entry_point_restores_the_thread_count(tiny_spec, tiny_task):
    """Each public entry point runs with `threads` and puts torch's global thread count back, also when the
    run ends in an exception."""
    suite = mad_suite(tasks=["memorization"], num_train_examples=64, num_test_examples=16)
    before = torch.get_num_threads()
    outside = 3 if before != 3 else 2
    torch.set_num_threads(outside)
    try:
        calls = {
            "train": lambda cb: train(tiny_spec, tiny_task(), 2, batch_size=4, threads=1, eval_every=1, callback=cb),
            "train_sweep": lambda cb: train_sweep(tiny_spec, tiny_task(), 2, lrs=[1e-3], batch_size=4, threads=1,
                                                  eval_every=1, callback=cb),
            "train_suite": lambda cb: train_suite(tiny_spec, suite, 2, batch_size=4, threads=1, callback=cb),
        }
        for name, call in calls.items():
            inside: list[int] = []
            call(lambda m, seen=inside: seen.append(torch.get_num_threads()))
            assert inside and set(inside) == {1}, name
            assert torch.get_num_threads() == outside, name

            def fail(metrics):
                raise RuntimeError("boom")

            with pytest.raises(RuntimeError, match="boom"):
                call(fail)
            assert torch.get_num_threads() == outside, name
    finally:
        torch.set_num_threads(before)


SPACE = textwrap.dedent("""\
    name: t
    base: {d_model: 32}
    layers: [mlp]
    task: {name: mqar, params: {vocab_size: 64, seq_len: 32, kv_pairs: 4}}
    train: {steps: 10, lr: {float: [1.0e-4, 1.0e-2], log: true}, batch_size: 8}
    """)


def test_search_space_train_block_takes_every_setting_flat_or_by_section():
    flat = load_space(SPACE)
    nested = load_space(SPACE.replace(
        "train: {steps: 10, lr: {float: [1.0e-4, 1.0e-2], log: true}, batch_size: 8}",
        "train: {budget: {steps: 10}, optimizer: {lr: {float: [1.0e-4, 1.0e-2], log: true}}, batch_size: 8}"))
    assert nested.train == flat.train and list(nested.distributions()) == ["lr"]
    more = load_space(SPACE.replace("batch_size: 8}", "batch_size: 8, min_lr_ratio: 0.0, betas: [0.9, 0.99], "
                                    "schedule: {choice: [cosine, wsd]}}"))
    assert more.train["betas"] == (0.9, 0.99) and more.distributions()["schedule"].values == ("cosine", "wsd")
    assert load_space(SPACE.replace("steps: 10, ", "")).train["steps"] == 200      # the default budget


@pytest.mark.parametrize("replacement, path, message", [
    ("warmup_step: 2", "train.warmup_step", "did you mean 'warmup_steps'"),
    ("warmup_steps: -2", "train.warmup_steps", "expected an integer >= 0"),
    ("batch_size: {float: [1, 8]}", "train.batch_size", "expected `int` or `choice`"),
    ("seed: 3", "train.seed", "use the top-level `seed`"),
])
def test_search_space_train_errors_name_the_field_and_line(replacement, path, message):
    with pytest.raises(UserError) as info:
        load_space(SPACE.replace("batch_size: 8", replacement))
    assert (info.value.path, info.value.line) == (path, 5) and message in info.value.message


def test_ladder_train_block_is_checked():
    ladder = {"name": "t", "task": {"name": "text", "seq_len": 32}, "sizes": ["60K", "200K"],
              "architectures": {"a": {"d_model": 64, "layers": ["attention", "mlp"]}}}
    assert load_ladder({**ladder, "train": {"optimizer": {"lr": 3e-3}, "warmup_steps": 20}}).train.changed() == {
        "lr": 3e-3, "warmup_steps": 20}
    with pytest.raises(UserError, match="did you mean 'warmup_steps'"):
        load_ladder({**ladder, "train": {"warmup_step": 20}})
    with pytest.raises(UserError, match="use `budget`") as info:
        load_ladder({**ladder, "train": {"steps": 20}})
    assert info.value.path == "train.steps"


@pytest.mark.parametrize("flags, flag", [
    (["--seconds", "inf"], "--seconds"),
    (["--seconds", "nan"], "--seconds"),
    (["--seconds", "-1"], "--seconds"),
    (["--seconds", "0"], "--seconds"),
    (["--steps", "many"], "--steps"),
    (["--lr", "-1"], "--lr"),
    (["--eval-every", "0"], "--eval-every"),
    (["--threads", "-1"], "--threads"),
    (["--schedule", "cosin"], "--schedule"),
    (["--betas", "0.9", "nan"], "--betas"),
    (["--checkpoint-seconds", "-5"], "--checkpoint-seconds"),
    (["--device", "tpu9"], "--device"),
    (["--device", "cuda:99"], "--device"),
    pytest.param(["--device", "cuda"], "--device", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="CUDA is available here")),
])
def test_a_bad_cli_value_is_one_error_line_naming_the_flag(tmp_path, capsys, monkeypatch, flags, flag, tiny_spec_file):
    """Checked before a model is built: each ends in one `error:` line naming the flag, exit status 2."""
    from composer.cli import main

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(trainer, "train_step", no_training)
    spec = tiny_spec_file
    budget = [] if flags[0] == "--seconds" else ["--steps", "2"]
    code = main(["train", str(spec), "--set", "seq_len=32", "--set", "kv_pairs=4", *budget, *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {flag}: "), err
