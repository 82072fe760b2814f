"""`--set PATH=VALUE`: one override syntax on train, search and ladder (composer/overrides.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from composer.atomic import write_atomic
from composer.cli import main
from composer.errors import UserError
from composer.overrides import apply_overrides, apply_to_source, parse_overrides, task_overrides, train_overrides
from composer.search.space_parse import TOP_KEYS, load_space
from composer.training.config import SETTINGS
from composer.yaml_source import read_source
from scaling.ladder_parse import LADDER_KEYS, load_ladder

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "search_spaces" / "quickstart.yaml"
LADDER = ROOT / "search_spaces" / "ladder_example.yaml"


def test_values_are_yaml_and_paths_dotted():
    o = parse_overrides(["train.warmup_steps=5", "seeds=[0, 1]", "task.params.data=a=b", "x.y=null"])
    assert [(x.path, x.value) for x in o] == [(("train", "warmup_steps"), 5), (("seeds",), [0, 1]),
                                               (("task", "params", "data"), "a=b"), (("x", "y"), None)]


@pytest.mark.parametrize("item", ["novalue", "=3", "a..b=1", "train.lr=!!python/name:os.system",
                                  "train.lr=!tag 3", "a=[1,"])
def test_malformed_items_are_user_errors(item):
    with pytest.raises(UserError) as e:
        parse_overrides([item])
    assert e.value.path.startswith("--set")


def test_space_overrides_reach_train_task_and_base():
    source = apply_to_source(read_source(SPACE), ["train.warmup_steps=5", "task.params.seq_len=64",
                                                  "base.d_model=96", "trials=3"], TOP_KEYS)
    space = load_space(source)
    assert space.trials == 3
    assert space.task.params["seq_len"] == 64
    assert space.data["base"]["d_model"] == 96
    assert space.data["train"]["warmup_steps"] == 5
    assert read_source(SPACE).data["trials"] != 3          # the file itself is untouched


@pytest.mark.parametrize("item, message", [
    ("tirals=3", "did you mean 'trials'"),
    ("train.warmup_step=5", "did you mean 'warmup_steps'"),
    ("train.warmup_steps=-1", "expected an integer >= 0"),
    ("task.params.seqlen=64", "did you mean 'seq_len'"),
    ("base.d_mdel=96", "did you mean 'd_model'"),
])
def test_space_override_mistakes_name_the_path(item, message):
    with pytest.raises(UserError) as e:
        apply_to_source(read_source(SPACE), [item], TOP_KEYS)
    assert message in e.value.message and e.value.path == f"--set {item.split('=')[0]}"


def test_ladder_overrides_keep_relative_paths_and_beside_form():
    ladder = load_ladder(apply_to_source(read_source(LADDER), ["seeds=[3]", "task.params.seq_len=64",
                                                               "train.warmup_steps=2"], LADDER_KEYS))
    assert ladder.seeds == [3] and ladder.task.params["seq_len"] == 64 and ladder.train.lr_schedule.warmup_steps == 2
    assert "hybrid" in ladder.architectures                # architectures/hybrid_pattern.yaml beside the file
    from scaling.ladder import ladder_summary

    assert {"torch", "git_commit", "host", "device"} <= set(ladder_summary(ladder)["provenance"])   # in ladder.json


def test_list_index_and_new_mappings():
    doc = apply_overrides({"layers": [{"op": "a"}, {"op": "b"}]},
                          parse_overrides(["layers.1.op=c", "constraints.max_params=5"]), ["layers", "constraints"])
    assert doc == {"layers": [{"op": "a"}, {"op": "c"}], "constraints": {"max_params": 5}}
    with pytest.raises(UserError, match="list index"):
        apply_overrides({"layers": []}, parse_overrides(["layers.3.op=c"]), ["layers"])


def test_train_command_alias_and_dotted_forms():
    items = ["seq_len=64", "task.params.kv_pairs=4", "task.num_train=100", "train.warmup_steps=5",
             "train.optimizer.lr=0.002"]
    assert task_overrides("mqar", items) == {"seq_len": 64, "kv_pairs": 4, "num_train": 100}
    assert train_overrides(items) == {"warmup_steps": 5, "optimizer": {"lr": 0.002}}
    assert set(train_overrides(items)) <= set(SETTINGS) | {"optimizer"}


@pytest.mark.parametrize("item, message", [
    ("seqlen=64", "did you mean 'seq_len'"),
    ("train.warmup_step=5", "did you mean 'warmup_steps'"),
    ("base.d_model=96", "the architecture is the spec file"),
])
def test_train_cli_errors_are_one_line(item, message, capsys):
    spec = ROOT / "search_spaces" / "architectures" / "gpt_small.yaml"
    assert main(["train", str(spec), "--steps", "1", "--set", item]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --set ") and message in err and "\n" not in err and "Traceback" not in err


def test_search_cli_set_with_resume_is_refused(capsys):
    assert main(["search", "--resume", "runs/x", "--set", "trials=2"]) == 2
    assert "keeps the space" in capsys.readouterr().err


def test_written_files_are_0644_under_the_usual_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "sub" / "f.txt", "x")
        os.umask(0o077)
        write_atomic(tmp_path / "g.txt", "y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "sub" / "f.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "sub").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "g.txt").stat().st_mode) == 0o600      # a stricter umask is respected
