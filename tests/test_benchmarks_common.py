"""The benchmarks' text helpers: Tiny Shakespeare by default (never downloaded), nanoGPT's training split with the
last tenth held out (validation, then test; or validation alone, as nanoGPT's), and the shipped spaces the
benchmarks run (discovery.yaml) parse and plan."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from benchmarks.common import NANOGPT_SPLIT, TINY_SHAKESPEARE, add_data_argument, default_data, text_task
from composer.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]


def test_the_default_corpus_is_tiny_shakespeare_next_to_the_repo():
    assert TINY_SHAKESPEARE == (ROOT.parent / "shared" / "data" / "tinyshakespeare.txt")
    assert default_data() == (str(TINY_SHAKESPEARE) if TINY_SHAKESPEARE.is_file() else None)
    parser = argparse.ArgumentParser()
    add_data_argument(parser)
    assert parser.parse_args([]).data == default_data()
    assert parser.parse_args(["--data", "corpus.txt"]).data == "corpus.txt"


def test_text_task_settings_hold_out_the_last_tenth():
    split = {"val_fraction": 0.05, "test_fraction": 0.05}
    assert text_task("a.txt", seq_len=64) == {"name": "text", "data": "a.txt", **split, "seq_len": 64}
    assert text_task(None, seq_len=64) == {"name": "text", **split, "seq_len": 64}   # shipped sample
    assert text_task(None, **NANOGPT_SPLIT) == {"name": "text", "val_fraction": 0.1, "test_fraction": 0}


@pytest.mark.skipif(not TINY_SHAKESPEARE.is_file(), reason="../shared/data/tinyshakespeare.txt not present")
def test_the_last_tenth_of_tiny_shakespeare_is_held_out():
    text = TINY_SHAKESPEARE.read_text()
    cut, test_cut = int(len(text) * 0.9), int(len(text) * 0.95)
    for params in ({}, NANOGPT_SPLIT):
        config = text_task(default_data(), seq_len=64, **params)
        task = get_task(config["name"], **{k: v for k, v in config.items() if k != "name"})
        assert len(task.train_tokens) == len(text[:cut].encode())
        assert bytes(task.split_tokens["holdout"][:50].tolist()).decode() == text[cut:cut + 50]
    assert len(task.val_tokens) == len(text[cut:].encode())                 # nanoGPT's: validation alone
    config = text_task(default_data(), seq_len=64)
    task = get_task(config["name"], **{k: v for k, v in config.items() if k != "name"})
    assert len(task.val_tokens) == len(text[cut:test_cut].encode())
    assert len(task.split_tokens["test"]) == len(text[test_cut:].encode())


def test_the_discovery_space_parses_with_its_confirm_block():
    from composer.confirm import parse_confirm
    from composer.search.space_parse import load_space

    space = load_space(str(ROOT / "search_spaces" / "discovery.yaml"))
    assert space.trials >= 32 and space.objectives[0]["metric"] == "val_loss"
    config = parse_confirm(space.data["confirm"])
    assert config.seeds == "auto" and config.baselines == ("transformer",) and config.sizes == ("10x",)
    assert config.tokens is None and config.tokens_per_param >= 10 and config.tolerance == 0.02
    ops = set(space.data["layers"]["slot"]["op"]["choice"])
    assert ops == {"attention", "mamba2", "gated_deltanet", "gla", "short_conv"} and space.data["layers"]["n_layers"] >= 6
