"""Search space parsing, errors (YAML path + line), stable parameter names, constraints, dry-run."""

import textwrap
from pathlib import Path

import optuna
import pytest

from composer import arch_id, load_spec
from composer.cli.search import dry_run
from composer.errors import UserError
from composer.search.space_layers import placement_positions
from composer.search.space_parse import load_space

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "search_spaces").glob("*.yaml"))
SHIPPED = [p for p in SHIPPED if p.name != "ladder_example.yaml"]

SPACE = textwrap.dedent("""\
    name: t
    base:
      d_model: {choice: [32, 64]}
      defaults: {attention: {n_heads: 2}}
    layers:
      n_layers: {choice: [1, 2, 3]}
      slot:
        op: {choice: [attention, mlp]}
        d_ff: {choice: [64, 128]}
    task: {name: mqar, params: {vocab_size: 64, seq_len: 32, kv_pairs: 4}}
    train: {steps: 10, lr: {float: [1.0e-4, 1.0e-2], log: true}}
    constraints: {max_params: 40000}
    """)


def error_of(text: str) -> UserError:
    with pytest.raises(UserError) as info:
        load_space(text)
    return info.value


def test_parse_and_sample_names_are_stable():
    space = load_space(SPACE)
    names = list(space.distributions())
    assert names == ["d_model", "lr", "n_layers", "layer0.op", "layer0.d_ff", "layer1.op", "layer1.d_ff",
                     "layer2.op", "layer2.d_ff"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        trial = study.ask()
        candidate = space.sample(trial)
        # every slot up to the largest depth is sampled, with the same choices each time
        assert {f"layer{i}.op" for i in range(3)} <= set(trial.params)
        for name, dist in trial.distributions.items():
            assert dist == study.trials[0].distributions.get(name, dist)
        # d_ff is sampled exactly for the slots whose primitive has it
        for i in range(3):
            assert (f"layer{i}.d_ff" in trial.params) == (trial.params[f"layer{i}.op"] == "mlp")
        spec = candidate.spec
        n = trial.params["n_layers"]
        assert len(spec.layers) == n and spec.d_model == trial.params["d_model"]
        assert [layer.op for layer in spec.layers] == [trial.params[f"layer{i}.op"] for i in range(n)]
        assert spec.vocab_size == 64 and spec.max_seq_len >= 32          # fitted to the task
        study.tell(trial, 0.0)


def test_size_counts_discrete_settings_and_inf_for_ranges():
    space = load_space(SPACE)
    assert space.size() == float("inf")
    fixed = load_space(SPACE.replace("{float: [1.0e-4, 1.0e-2], log: true}", "1.0e-3"))
    assert fixed.size() == 2 * 3 * (2 * 2) ** 3      # d_model, n_layers, per slot op x d_ff


def test_constraints_checked_with_the_cost_model():
    space = load_space(SPACE)
    small = load_spec({"d_model": 32, "vocab_size": 64, "layers": ["mlp"]})
    big = load_spec({"d_model": 64, "vocab_size": 64, "layers": [{"op": "mlp", "d_ff": 4096}] * 3})
    assert space.check_constraints(small) is None
    reason = space.check_constraints(big)
    assert reason.startswith("params ") and "max_params 40,000" in reason


@pytest.mark.parametrize("broken, replacement, path, line, message", [
    ("n_layers: {choice: [1, 2, 3]}", "n_layers: {choice: [0, 2]}", "layers.n_layers", 6, "expected integers >= 1"),
    ("op: {choice: [attention, mlp]}", "op: {choice: [atention, mlp]}", "layers.slot.op", 8,
     "unknown primitive 'atention'"),
    ("d_ff: {choice: [64, 128]}", "d_ff: {int: [64]}", "layers.slot.d_ff.int", 9, "expected [low, high]"),
    ("train: {steps: 10", "train: {stepz: 10", "train.stepz", 11, "unknown field 'stepz'"),
    ("constraints: {max_params: 40000}", "constraints: {max_params: -5}", "constraints.max_params", 12,
     "expected a positive number"),
    ("constraints: {max_params: 40000}", "strategy: {name: nsga2, options: {population_size: .nan}}",
     "strategy.options.population_size", 12, "expected a finite number, got nan"),
    ("constraints: {max_params: 40000}", "scheduler: {name: asha, grace_period: .inf}", "scheduler.grace_period",
     12, "expected a finite number, got inf"),
    ("constraints: {max_params: 40000}", "strategy: {name: tpe, options: {weights: [1.0, -.inf]}}",
     "strategy.options.weights[1]", 12, "expected a finite number"),
])
def test_errors_name_path_and_line(broken, replacement, path, line, message):
    error = error_of(SPACE.replace(broken, replacement))
    assert (error.path, error.line) == (path, line) and message in error.message


def test_more_errors():
    assert "is not a parameter of attention" in error_of(SPACE.replace(
        "op: {choice: [attention, mlp]}", "op: attention")).message
    assert error_of(SPACE.replace("name: t", "name: a/b")).path == "name"
    assert "missing required field" in error_of("name: x\nlayers: [mlp]\n").message
    assert error_of(SPACE.replace("{choice: [32, 64]}", "{choice: [32, 32]}")).message == \
        "the choices repeat a value"
    error = error_of(SPACE.replace("kv_pairs: 4", "kv_pairs: 40"))
    assert error.path.startswith("task") and error.line == 10 and "kv_pairs" in error.message
    with pytest.raises(UserError, match="file not found"):
        load_space("nope/missing.yaml")


def test_pattern_space_places_attention():
    assert placement_positions(8, 2, "spread") == [3, 7]
    assert placement_positions(6, 3, "spread") == [1, 3, 5]
    assert placement_positions(8, 2, "first") == [0, 1]
    assert placement_positions(8, 2, "last") == [6, 7]
    assert placement_positions(8, 2, "middle") == [3, 4]
    assert placement_positions(4, 0, "spread") == []
    space = load_space(textwrap.dedent("""\
        name: p
        base: {d_model: 32, defaults: {attention: {n_heads: 2}, gla: {n_heads: 2}}}
        layers:
          pattern: {n_layers: 4, n_attention: {int: [0, 4]}, mixer: {choice: [gla, short_conv]},
                    placement: {choice: [spread, first]}, channel: mlp}
        task: {name: mqar, params: {vocab_size: 64, seq_len: 32, kv_pairs: 4}}
        """))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        trial = study.ask()
        spec = space.sample(trial).spec
        ops = [layer.op for layer in spec.layers]
        p = trial.params
        expected = []
        for i in range(4):
            attention = i in placement_positions(4, p["n_attention"], p["placement"])
            expected += ["attention" if attention else p["mixer"], "mlp"]
        assert ops == expected


def test_identical_samples_have_identical_arch_ids():
    space = load_space(SPACE)
    study = optuna.create_study()
    fixed = {"d_model": 32, "lr": 1e-3, "n_layers": 1, "layer0.op": "mlp", "layer0.d_ff": 64,
             "layer1.op": "attention", "layer2.op": "mlp", "layer2.d_ff": 128}
    ids = set()
    for other in ("attention", "mlp"):        # an unused slot does not change the architecture
        study.enqueue_trial({**fixed, "layer1.op": other, "layer1.d_ff": 64})
        ids.add(arch_id(space.sample(study.ask()).spec))
    assert len(ids) == 1


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_spaces_dry_run(path):
    space = load_space(str(path))
    text = dry_run(space, 3)
    assert f"search space {space.name!r}" in text and "INVALID" not in text
    assert text.count("params ") == 3


def test_quickstart_is_the_documented_space():
    space = load_space(str(ROOT / "search_spaces" / "quickstart.yaml"))
    assert space.objectives == [{"metric": "accuracy", "mode": "max"}]
    assert space.scheduler["name"] == "asha" and space.task.name == "mqar"


def test_task_parameters_under_params_or_beside_the_name():
    """The ladder's form `{name: mqar, seq_len: 32}` and the nested `params:` form mean the same task."""
    nested = load_space(SPACE)
    flat = load_space(SPACE.replace("task: {name: mqar, params: {vocab_size: 64, seq_len: 32, kv_pairs: 4}}",
                                    "task: {name: mqar, vocab_size: 64, seq_len: 32, kv_pairs: 4}"))
    assert flat.task == nested.task and nested.task.params == {"vocab_size": 64, "seq_len": 32, "kv_pairs": 4}
    both = error_of(SPACE.replace("params: {vocab_size: 64,", "kv_pairs: 4, params: {vocab_size: 64,"))
    assert "task.params" in str(both) and "not both" in str(both)
    typo = error_of(SPACE.replace("params: {vocab_size: 64, seq_len: 32, kv_pairs: 4}", "kv_pair: 4"))
    assert "task" in str(typo) and "kv_pair" in str(typo)
