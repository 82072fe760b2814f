"""Fuzzing what `composer train` reads: data files for the text task (empty, binary, Latin-1, malformed JSON,
a broken parquet, tiny) and hostile training flags. Every outcome is success or one `error:` line with exit 2,
in bounded work, writing only into `--out` (see test_fuzz_cli.py for the harness). Each example trains at most
two steps of a tiny model, so there are few of them by default.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fuzz_cli import FUZZ, SPEC, check_outcome, examples, outputs_of, run_cli, workdir

TINY = ["--steps", "1", "--batch-size", "2", "--eval-batch-size", "2", "--eval-every", "1"]
TEXT = ["--set", "seq_len=8", "--set", "val_fraction=0.5"]
MQAR = ["--set", "seq_len=16", "--set", "kv_pairs=2", "--set", "num_train=16", "--set", "num_test=4",
        "--set", "vocab_size=32"]
SUFFIXES = [".txt", ".md", ".json", ".jsonl", ".parquet", ".csv", ""]


@st.composite
def data_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """(file name, content): text of any size from empty up, in UTF-8 or not, as JSON(L) records or not."""
    suffix = draw(st.sampled_from(SUFFIXES))
    kind = draw(st.sampled_from(["text", "bytes", "latin", "records", "json", "parquet"]))
    if kind == "text":
        content = draw(st.text(max_size=400)).encode("utf-8", "surrogatepass")
    elif kind == "bytes":
        content = draw(st.binary(max_size=400))
    elif kind == "latin":
        content = (draw(st.text(alphabet="abcé ü\n", min_size=0, max_size=300))).encode("latin-1")
    elif kind == "records":
        values = st.one_of(st.text(max_size=60), st.integers(), st.none(), st.lists(st.integers(), max_size=3))
        rows = draw(st.lists(st.dictionaries(st.sampled_from(["text", "body", ""]), values, max_size=2), max_size=8))
        content = "\n".join(json.dumps(r) for r in rows).encode()
        if draw(st.booleans()):
            content = content[:draw(st.integers(0, len(content)))]
    elif kind == "json":
        content = json.dumps(draw(st.one_of(st.lists(st.text(max_size=30), max_size=5),
                                            st.dictionaries(st.text(max_size=5), st.text(max_size=30), max_size=3),
                                            st.integers()))).encode()
    else:
        content = b"PAR1" + draw(st.binary(max_size=60)) + b"PAR1"
    return f"data{suffix}", content


def train_argv(data: str) -> list[str]:
    return ["train", "spec.yaml", "--task", "text", "--data", data, *TINY, *TEXT]


def check_data_file(file: tuple[str, bytes], capfd) -> None:
    name, content = file
    with workdir({"spec.yaml": SPEC.replace("vocab_size: 32", "vocab_size: 256"), name: content}) as cwd:
        outcome = run_cli(train_argv(name), cwd, capfd)
    check_outcome(outcome)


@examples(12)
@given(file=data_files())
def test_data_files(file, capfd):
    check_data_file(file, capfd)


@pytest.mark.slow
@settings(FUZZ, max_examples=150, derandomize=False)
@given(file=data_files())
def test_data_files_long(file, capfd):
    check_data_file(file, capfd)


# Training flags: for each, good values and bad ones (out of range, not numbers), drawn half and half. A budget
# flag gets only small values or invalid ones (a valid budget of 10^39 steps is a long run, not a mistake).
FLAGS: dict[str, tuple[list, list]] = {
    "--lr": (["1e-3", "0.1"], ["nan", "inf", "-1", "0", "1e300", "x"]),
    "--weight-decay": (["0", "0.1"], ["nan", "-1", "inf"]),
    "--betas": ([["0.9", "0.95"], ["0", "0.5"]], [["nan", "0.9"], ["-1", "0.5"], ["inf", "0.1"]]),
    "--grad-clip": (["1", "0.5"], ["nan", "0", "-1"]),
    "--schedule": (["cosine", "wsd", "constant"], ["nope", ""]),
    "--warmup-steps": (["0", "1"], ["-1", "nan", "1.5"]),
    "--min-lr-ratio": (["0", "0.5"], ["nan", "-1", "inf"]),
    "--steps": (["1", "2"], ["0", "-1", "nan", "1.5", "x"]),
    "--seconds": (["1"], ["inf", "nan", "-1", "0"]),
    "--eval-every": (["1"], ["0", "-1", "nan"]),
    "--eval-batch-size": (["2"], ["0", "-1", "nan"]),
    "--checkpoint-every": (["1"], ["0", "-1"]),
    "--batch-size": (["1", "2"], ["0", "-1", "nan", "1e12"]),
    "--threads": (["1"], ["0", "-1", "nan"]),
    "--device": (["cpu"], ["cuda", "cuda:7", "tpu", "", "meta"]),
    "--log-every": (["1"], ["0", "-1"]),
    "--task": (["mqar"], ["nope", "mad:nope", ""]),
    "--out": (["out_dir", "a_dir/run"], ["a_file", "spec.yaml", "a_dir"]),
    "--config": (["config.yaml"], ["a_file", "a_dir", "missing.yaml"]),
    "--set": (["kv_pairs=2"], ["seq_len=-1", "kv_pairs=.nan", "bogus=1", "=", "seq_len=!!binary aGk=", "seq_len=[1,"]),
}
BUDGETS = ("--steps", "--seconds")
# Values past a setting's upper bound (betas below 1, seeds below 2^63): one error line, never torch's.
PAST_UPPER_BOUNDS = {"--betas": [["2", "3"], ["0.9", "1"]], "--seed": ["100000000000000000000000", "-1"]}


@st.composite
def train_lines(draw: st.DrawFn) -> list[str]:
    argv = ["train", "spec.yaml", *MQAR, "--batch-size", "2", "--eval-batch-size", "2"]
    flags = draw(st.lists(st.sampled_from(sorted(FLAGS)), min_size=1, max_size=3, unique=True))
    if all(flag in flags for flag in BUDGETS):
        flags.remove("--seconds")         # argparse takes one budget; the other combinations are drawn
    if not any(flag in BUDGETS for flag in flags):
        argv += ["--steps", "1"]
    for flag in flags:
        good, bad = FLAGS[flag]
        value = draw(st.sampled_from(good if draw(st.booleans()) else bad))
        argv += [flag, *value] if isinstance(value, list) else [flag, value]
    return argv


@examples(15)
@given(argv=train_lines())
def test_train_flags(argv, capfd):
    with workdir({"spec.yaml": SPEC, "a_file": "x", "config.yaml": "warmup_steps: 0\n"}) as cwd:
        outcome = run_cli(argv, cwd, capfd)
    check_outcome(outcome, allowed=outputs_of(argv))


@pytest.mark.parametrize("flag, value", [(f, v) for f, values in PAST_UPPER_BOUNDS.items() for v in values])
def test_values_past_upper_bounds_are_one_error_line(flag, value, capfd):
    argv = ["train", "spec.yaml", *MQAR, *TINY, flag, *(value if isinstance(value, list) else [value])]
    with workdir({"spec.yaml": SPEC}) as cwd:
        outcome = run_cli(argv, cwd, capfd)
    check_outcome(outcome)


def test_a_one_character_data_file_is_one_error_line(capfd):    # its training split is empty
    check_data_file(("one.txt", b"a"), capfd)


def test_a_malformed_jsonl_file_is_one_line(tmp_path):    # not the datasets library's log line and then ours
    from test_fuzz_cli import composer_process

    (tmp_path / "spec.yaml").write_text(SPEC.replace("vocab_size: 32", "vocab_size: 256"))
    (tmp_path / "bad.jsonl").write_text('{"text": "hi"\n')
    r = composer_process(*train_argv("bad.jsonl"), cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr


def test_a_learning_rate_past_its_bound_is_one_error_line(capfd):    # 1e300 overflowed float32 in torch.optim
    argv = ["train", "spec.yaml", *MQAR, *TINY, "--lr", "1e300"]
    with workdir({"spec.yaml": SPEC}) as cwd:
        outcome = run_cli(argv, cwd, capfd)
    check_outcome(outcome)
    assert outcome.rc == 2 and "lr" in outcome.stderr
