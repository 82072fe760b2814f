"""Fuzzing the documents: mutated architecture specs, search spaces and ladders, read by `composer validate`,
`show`, `search --dry-run` and `ladder --plan`. Every outcome is success or one `error:` line with exit 2, in
bounded work, writing nothing (see test_fuzz_cli.py for the harness).

A document is mutated as data (a value replaced by a hostile one, a key dropped or added, a block wrapped in a
huge repeat or loop, a list multiplied) and then as text (a byte flipped, the text cut, an alias bomb or a
non-UTF-8 byte added).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fuzz_cli import FUZZ, LADDER, SPACE, SPEC, check_outcome, examples, run_cli, workdir

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURES = [p.read_text() for p in sorted((ROOT / "search_spaces" / "architectures").glob("*.yaml"))]
SPECS = ARCHITECTURES + [SPEC, """
d_model: 32
defaults: {attention: {n_heads: 2}}
layers:
  - {op: attention, name: shared, rope_base: 500.0}
  - loop: {times: 2, inject: add, halting: act, ponder_cost: 0.01, body: [mlp, {op: moe, n_experts: 4, top_k: 1}]}
  - parallel: [attention, mamba2]
    combine: concat
    split: [0.5, 0.5]
  - {share: shared, adapter: {kind: lora, rank: 4}}
  - repeat: 2
    body: [gla, {op: mlp, expansion: 2.0}, short_conv, rglru, mingru]
""", "d_model: 24\npattern: DMAM\nlegend: {D: gated_deltanet, M: mlp, A: {op: attention, n_heads: 3}}\n"]
SPACES = [SPACE, SPACE.replace("slot: {op: {choice: [attention, mlp]}}",
                               "slot: {op: {choice: [attention, gla, mamba2]}, channel: mlp}\n  loop: {choice: [1, 2]}"),
          SPACE.replace("  n_layers: {choice: [1, 2]}\n  slot: {op: {choice: [attention, mlp]}}",
                        "  pattern: {n_layers: 4, n_attention: {choice: [1, 2]}, mixer: {choice: [gla, mamba2]}}")
          + "constraints: {max_params: 1e6}\nstrategy: {name: random}\nobjectives: [{metric: val_loss, mode: min}]\n"]
LADDERS = [LADDER, LADDER.replace("budget: {tokens: 1000}", "budget: {tokens_per_param: 2, min_tokens: 500}\n"
                                  "seeds: [0, 1]\npredict_at: 1M\nbootstrap: 10\ntolerance: 0.2")]

NAN, INF = math.nan, math.inf
HOSTILE: list[Any] = [NAN, INF, -INF, -1, 0, 1, 2, -0.5, 0.5, 1e-300, 1e308, 10**30, 2**31, 2**63, -(2**40),
                      1_000_000, "", " ", "x" * 3000, "../..", "/", "nan", "1e39", "1M", None, True, False, [], {},
                      [None], {"x": 1}, [1, 2], "mlp", "attention", "moe", "share", {"choice": []},
                      {"choice": [1, 1]}, {"int": [1, 10**12]}, {"int": [5, 1]}, {"float": [NAN, 1]},
                      {"float": [0, 1], "log": True}, {"choice": [0, -1]}, b"\x00\xff", "é\u202e"]
FIELD_NAMES = ["op", "name", "share", "repeat", "loop", "parallel", "body", "times", "d_model", "layers", "defaults",
               "pattern", "legend", "n_heads", "rope_base", "expansion", "aux_loss_coef", "ponder_cost", "split",
               "combine", "halting", "choice", "int", "float", "n_layers", "slot", "slots", "task", "train", "lr",
               "steps", "constraints", "max_params", "seed", "sizes", "seeds", "budget", "tokens", "bootstrap",
               "architectures", "strategy", "scheduler", "resources", "cpus_per_trial", "zzz"]


# "billion laughs": 9 levels of 9 aliases each
BOMB = ("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))).encode()


def paths(data: Any, at: tuple = ()) -> list[tuple]:
    """Every place in nested data: a tuple of keys and indices."""
    out = [at]
    if isinstance(data, dict):
        for key, value in data.items():
            out += paths(value, at + (key,))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            out += paths(value, at + (i,))
    return out


def get(data: Any, at: tuple) -> Any:
    for key in at:
        data = data[key]
    return data


def put(data: Any, at: tuple, value: Any) -> Any:
    if not at:
        return value
    get(data, at[:-1])[at[-1]] = value
    return data


@st.composite
def mutated(draw: st.DrawFn, documents: list[str]) -> bytes:
    """A valid document, mutated 1-3 times as data and now and then as text; returned as bytes."""
    data = yaml.safe_load(draw(st.sampled_from(documents)))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.sampled_from(paths(data)))
        value = get(data, at)
        op = draw(st.sampled_from(["replace", "replace", "drop", "add", "wrap", "multiply"]))
        if op == "replace" or (op == "drop" and not at):
            new = draw(st.one_of(st.sampled_from(HOSTILE), st.integers(), st.floats(), st.text(max_size=8)))
            data = put(data, at, copy.deepcopy(new))          # HOSTILE's lists and mappings stay as written
        elif op == "drop":
            parent = get(data, at[:-1])
            del parent[at[-1]]
        elif op == "add" and isinstance(value, dict):
            value[draw(st.sampled_from(FIELD_NAMES))] = copy.deepcopy(draw(st.sampled_from(HOSTILE)))
        elif op == "wrap":
            times = draw(st.sampled_from([1, 2, 0, -3, 5000, 10**6, 10**12]))
            block = draw(st.sampled_from(["repeat", "loop"]))
            wrapped = {"repeat": times, "body": [value]} if block == "repeat" else {"loop": {"times": times,
                                                                                          "body": [value]}}
            data = put(data, at, wrapped)
        elif op == "multiply" and isinstance(value, list):
            value *= draw(st.sampled_from([2, 50, 5000]))
    try:
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode()
    except yaml.YAMLError:
        text = repr(data).encode()
    edit = draw(st.sampled_from(["none"] * 6 + ["flip", "cut", "bomb", "latin", "nul", "anchor"]))
    if edit == "flip" and text:
        i = draw(st.integers(0, len(text) - 1))
        text = text[:i] + bytes([draw(st.sampled_from(b"[]{}:,&*!|>-#'\"\n\t %@`"))]) + text[i + 1:]
    elif edit == "cut":
        text = text[:draw(st.integers(0, len(text)))]
    elif edit == "bomb":
        text = BOMB + text
    elif edit == "latin":
        text = text.replace(b"e", b"\xe9", 1)
    elif edit == "nul":
        text = text + b"\x00"
    elif edit == "anchor":
        text = b"x: &x [1, 2]\ny: *x\n" + text
    return text


def run_document(argv: list[str], document: bytes, capfd) -> None:
    with workdir({"doc.yaml": document}) as cwd:
        outcome = run_cli(argv, cwd, capfd)
    check_outcome(outcome)


@examples(100)
@given(document=mutated(SPECS), command=st.sampled_from(["validate", "show"]))
def test_mutated_specs(document, command, capfd):
    run_document([command, "doc.yaml"], document, capfd)


@examples(40)
@given(document=mutated(SPACES))
def test_mutated_search_spaces(document, capfd):
    run_document(["search", "doc.yaml", "--dry-run", "--samples", "2"], document, capfd)


@examples(30)
@given(document=mutated(LADDERS))
def test_mutated_ladders(document, capfd):
    run_document(["ladder", "doc.yaml", "--plan"], document, capfd)


@pytest.mark.slow
@settings(FUZZ, max_examples=400, derandomize=False)
@given(data=st.data())
def test_mutated_documents_long(data, capfd):
    kind = data.draw(st.sampled_from(["spec", "space", "ladder"]))
    documents, argv = {"spec": (SPECS, ["show", "doc.yaml"]),
                       "space": (SPACES, ["search", "doc.yaml", "--dry-run", "--samples", "2"]),
                       "ladder": (LADDERS, ["ladder", "doc.yaml", "--plan"])}[kind]
    run_document(argv, data.draw(mutated(documents)), capfd)


def test_seed_documents_are_valid(capfd):
    """The documents the mutations start from succeed, so a mutation is what a failure is about."""
    for documents, argv in ((SPECS, ["show", "doc.yaml"]), (SPACES, ["search", "doc.yaml", "--dry-run"]),
                            (LADDERS, ["ladder", "doc.yaml", "--plan"])):
        for document in documents:
            with workdir({"doc.yaml": document}) as cwd:
                outcome = run_cli(argv, cwd, capfd)
            check_outcome(outcome)
            assert outcome.rc == 0, outcome.stderr
