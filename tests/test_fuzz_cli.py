"""Fuzzing the command line: every outcome is success or one `error:` line with exit 2, never a traceback, in
bounded work, and nothing written outside the place the command was told to write.

`run_cli` runs `composer.cli.main` in this process (fast) inside a fresh temporary working directory, with
stdout and stderr captured at the file-descriptor level (so library loggers count too), and measures what the
command did: its CPU seconds, the peak of Python memory it allocated (tracemalloc) and every path it created or
changed. `check_outcome` holds the promise. The bounds are far above what any input needs (a command here
takes at most a few CPU seconds): they catch an alias bomb or a million-layer spec, not a slow machine.

Hypothesis settings: the profile `fuzz` (default: a few dozen examples per test, derandomized, so CI is
reproducible) or `fuzz-long` (HYPOTHESIS_PROFILE=fuzz-long: many more examples, random seeds); the tests marked
slow run a long variant whatever the profile. The other fuzz files (test_fuzz_specs.py, test_fuzz_data.py)
use the helpers here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from composer.cli import main

CPU_BOUND_S = 30.0                 # CPU seconds one command may use
MEMORY_BOUND = 300 * 2**20         # bytes of Python allocations one command may hold at its peak

settings.register_profile("fuzz", max_examples=25, derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                 HealthCheck.data_too_large])
settings.register_profile("fuzz-long", settings.get_profile("fuzz"), max_examples=500, derandomize=False)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "fuzz")
FUZZ = settings.get_profile(PROFILE if PROFILE in ("fuzz", "fuzz-long") else "fuzz")


def examples(n: int) -> settings:
    """The profile's settings with `n` examples (the default profile), or the long profile's count."""
    return settings(FUZZ, max_examples=n if PROFILE != "fuzz-long" else FUZZ.max_examples)


@dataclasses.dataclass
class Outcome:
    argv: list[str]
    rc: int | str
    stdout: str
    stderr: str
    cpu_s: float
    peak_bytes: int
    written: set[str]          # paths created or changed, relative to the working directory's parent


def snapshot(root: Path) -> dict[str, str]:
    """Every path under `root` with a digest of its content (folders: an empty digest)."""
    out = {}
    for path in root.rglob("*"):
        rel = str(path.relative_to(root))
        if path.is_symlink() or not path.is_file():
            out[rel] = ""
        else:
            out[rel] = hashlib.sha1(path.read_bytes()).hexdigest()
    return out


_warm: list[bool] = []


def warm_up() -> None:
    """Run each kind of command once on good input, untraced, so that the imports and caches of its first run
    do not count as an example's work."""
    if _warm:
        return
    _warm.append(True)
    with workdir(FILES) as cwd, contextlib.chdir(cwd), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        for argv in (["show", "spec.yaml"], ["search", "space.yaml", "--dry-run"], ["ladder", "ladder.yaml", "--plan"],
                     ["scale", "spec.yaml", "--d-model", "32", "--out", "out.yaml"], ["primitives"],
                     ["report", "a_dir"], ["confirm", "a_dir", "--plan"], ["export", "spec.yaml", "--out", "out_dir"],
                     ["eval", "a_dir", "--tasks", "x"]):
            with contextlib.suppress(BaseException):
                main(argv)


def run_cli(argv: list[str], cwd: Path, capfd: pytest.CaptureFixture) -> Outcome:
    """`composer ARGV` in this process, in `cwd`; see the module docstring."""
    warm_up()
    capfd.readouterr()
    before = snapshot(cwd.parent)
    tracemalloc.start()
    cpu = time.process_time()
    with contextlib.chdir(cwd):
        try:
            rc: int | str = main(argv)
        except SystemExit as e:       # --help, --version, or a usage error
            rc = e.code if isinstance(e.code, int) else 2
        except BaseException as e:    # noqa: BLE001 (any escape is the failure this file looks for)
            import traceback

            rc = f"raised {type(e).__name__}: {e}\n{traceback.format_exc()}"
    cpu = time.process_time() - cpu
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    after = snapshot(cwd.parent)
    captured = capfd.readouterr()
    written = {p for p, digest in after.items() if before.get(p) != digest}
    return Outcome(argv, rc, captured.out, captured.err, cpu, peak, written)


def check_outcome(outcome: Outcome, allowed: tuple[str, ...] = ()) -> None:
    """Success, or one `error:` line and exit 2; bounded work; writes only under the `allowed` paths (as given
    on the command line, relative to the working directory)."""
    where = f"composer {' '.join(map(repr, outcome.argv))}"
    assert isinstance(outcome.rc, int), f"{where}: {outcome.rc}"
    assert "Traceback" not in outcome.stderr + outcome.stdout, f"{where}: a traceback:\n{outcome.stderr}"
    assert outcome.rc in (0, 2), f"{where}: exit {outcome.rc}\n{outcome.stderr[-2000:]}"
    if outcome.rc == 2:
        lines = outcome.stderr.strip().splitlines()
        assert lines and lines[-1].startswith("error: "), f"{where}: no error line:\n{outcome.stderr[-2000:]}"
        assert [line for line in lines if line.startswith("error")] == lines[-1:], f"{where}: {outcome.stderr}"
        assert len(lines[-1]) <= 2100, f"{where}: an error line of {len(lines[-1])} characters"
    assert outcome.cpu_s < CPU_BOUND_S, f"{where}: {outcome.cpu_s:.1f} CPU seconds"
    assert outcome.peak_bytes < MEMORY_BOUND, f"{where}: {outcome.peak_bytes / 2**20:.0f} MB at the peak"
    allowed = tuple(os.path.normpath(os.path.join(WORK, a)) for a in allowed)
    stray = {p for p in outcome.written if not any(p == a or p.startswith(a + "/") for a in allowed)}
    assert not stray, f"{where}: wrote outside {allowed or 'nothing'}: {sorted(stray)[:10]}"


WORK = "work"


@contextlib.contextmanager
def workdir(files: dict[str, bytes | str] | None = None):
    """A fresh working directory holding `files` (relative name -> content) and a folder `a_dir`, inside a
    temporary folder that is watched too (so `--out ../x` stays inside it)."""
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        cwd = Path(tmp) / WORK
        cwd.mkdir()
        (cwd / "a_dir").mkdir()
        for name, content in (files or {}).items():
            path = cwd / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content.encode() if isinstance(content, str) else content)
        yield cwd


# ------------------------------------------------------------------------------------------------
# Command lines

SPEC = "d_model: 16\nvocab_size: 32\nmax_seq_len: 16\nlayers: [{op: attention, n_heads: 2, name: a}, mlp]\n"
SPACE = """name: fz
base: {d_model: 16}
layers:
  n_layers: {choice: [1, 2]}
  slot: {op: {choice: [attention, mlp]}}
task: {name: mqar, params: {vocab_size: 32, seq_len: 16, kv_pairs: 2, num_train: 32, num_test: 8}}
train: {steps: 2}
"""
LADDER = """name: lz
task: {name: mqar, params: {vocab_size: 32, seq_len: 16, kv_pairs: 2, num_train: 32, num_test: 8}}
architectures:
  a: {d_model: 16, layers: [mlp]}
sizes: [2K, 4K]
budget: {tokens: 1000}
"""
FILES = {"spec.yaml": SPEC, "space.yaml": SPACE, "ladder.yaml": LADDER, "a_file": "not yaml: [",
         "latin.yaml": b"d_model: 16\nname: caf\xe9\nlayers: [mlp]\n", "empty.yaml": ""}

# Hostile argument values: numbers out of range or not finite, paths that are folders, files, missing or
# escaping, and odd strings. Legitimate but expensive values (a 10^12-parameter target) are left out: they are
# bounded work too, only slow.
NUMBERS = ["nan", "inf", "-inf", "-1", "0", "1", "2", "3.5", "1e39", "99999999999999999999", "-0", "0x10", "1e-300"]
PATHS = ["spec.yaml", "space.yaml", "ladder.yaml", "a_file", "a_dir", "missing.yaml", "latin.yaml", "empty.yaml",
         "../escape", "/", "a_dir/../spec.yaml", "", " ", "-", "x" * 300, "nul\x01name"]
WORDS = ["", "auto", "mqar", "text", "mad:nope", "none", "é", "--", "a=b", "=", "seq_len=!!python/object:os.system",
         "seq_len=[1,", "kv_pairs=.nan", "num_train=-1"]
ANY = NUMBERS + PATHS + WORDS
# per command: its positionals (a drawn value each) and its options (flag -> the values to draw from; None
# for a switch). Each command's named outputs are the paths it may write, drawn as the values of OUTPUTS.
OUTPUTS = ["out.yaml", "out_dir", "a_dir/out.yaml"]
SPEC_PATHS = ["spec.yaml"] * len(PATHS) + PATHS          # half the time, the right kind of file
COMMANDS: dict[str, tuple[list[list[str]], dict[str, list[str] | None]]] = {
    "validate": ([SPEC_PATHS], {}),
    "show": ([SPEC_PATHS], {"--context": NUMBERS, "--dtype-bytes": NUMBERS, "--json": None}),
    "scale": ([SPEC_PATHS], {"--params": NUMBERS + ["1K", "20K", "1M", "1e30"], "--layers": NUMBERS + ["4", "4097"],
                        "--d-model": NUMBERS + ["32", "64"], "--method": ["auto", "stack", "stretch", "x"],
                        "--count": ["total", "active", "x"], "--tol": NUMBERS, "--context": NUMBERS,
                        "--out": OUTPUTS + PATHS}),
    "search": ([["space.yaml"] * len(PATHS) + PATHS], {"--dry-run": None, "--samples": NUMBERS, "--trials": NUMBERS, "--name": WORDS + PATHS,
                         "--max-concurrent": NUMBERS}),
    "ladder": ([["ladder.yaml"] * len(PATHS) + PATHS], {"--plan": None, "--workers": NUMBERS, "--threads": NUMBERS}),
    "primitives": ([["attention", "mlp", "nope", "", "moe"]], {"--json": None}),
    "report": ([PATHS], {"--out": OUTPUTS + PATHS, "--include-pruned": None}),
    "confirm": ([PATHS], {"--plan": None, "--seeds": NUMBERS, "--top-k": NUMBERS, "--sizes": NUMBERS}),
    "export": ([SPEC_PATHS], {"--out": OUTPUTS + PATHS, "--trial": WORDS + NUMBERS, "--seq-len": NUMBERS,
                         "--seed": NUMBERS}),
    "eval": ([PATHS], {"--tasks": WORDS, "--limit": NUMBERS, "--batch-size": NUMBERS, "--num-fewshot": NUMBERS,
                       "--device": ["cpu", "cuda", "x"], "--out": OUTPUTS + PATHS}),
}
# a real search would start Ray: give `search` --dry-run always; a ladder without --plan would train
ALWAYS = {"search": ["--dry-run"], "ladder": ["--plan"], "confirm": ["--plan"], "eval": ["--tasks", "x"]}


@st.composite
def command_lines(draw: st.DrawFn, commands: tuple[str, ...] = tuple(COMMANDS)) -> list[str]:
    command = draw(st.sampled_from(commands))
    positionals, options = COMMANDS[command]
    argv = [command] + [draw(st.sampled_from(values)) for values in positionals]
    for flag in draw(st.lists(st.sampled_from(sorted(options)), max_size=4, unique=True)) if options else []:
        values = options[flag]
        argv += [flag] if values is None else [flag, draw(st.sampled_from(values))]
    if draw(st.booleans()) and draw(st.integers(0, 9)) == 0:        # now and then: an argument argparse refuses
        argv.insert(draw(st.integers(0, len(argv))), draw(st.sampled_from(["--nope", "-x", "--json=3"])))
    always = ALWAYS.get(command, [])
    return argv if always and always[0] in argv else argv + always


def outputs_of(argv: list[str]) -> tuple[str, ...]:
    """The paths a command line names as its output (the value after --out)."""
    return tuple(argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--out" and argv[i + 1].strip())


@examples(120)
@given(argv=command_lines())
def test_command_lines_end_in_success_or_one_error_line(argv, capfd):
    with workdir(FILES) as cwd:
        outcome = run_cli(argv, cwd, capfd)
    check_outcome(outcome, allowed=outputs_of(argv))


@pytest.mark.slow
@settings(FUZZ, max_examples=600, derandomize=False)
@given(argv=command_lines())
def test_command_lines_long(argv, capfd):
    with workdir(FILES) as cwd:
        outcome = run_cli(argv, cwd, capfd)
    check_outcome(outcome, allowed=outputs_of(argv))


# ------------------------------------------------------------------------------------------------
# Examples the promise names, each once

@pytest.mark.parametrize("argv", [
    ["validate"], [], ["nonsense"], ["show", "spec.yaml", "--context"], ["validate", "spec.yaml", "extra"],
    ["train", "spec.yaml", "--set", "seq_len=!!python/object/apply:os.system [echo]"],
    ["train", "spec.yaml", "--set", "seq_len=[1, 2"], ["train", "spec.yaml", "--out", "a_file", "--steps", "1"],
    ["validate", "latin.yaml"], ["validate", "a_dir"], ["show", "spec.yaml", "--context", "-5"],
    ["search", "space.yaml", "--dry-run", "--samples", "100000000"], ["eval", ".", "--tasks", "x"],
    ["export", "spec.yaml", "--out", " "], ["export", "spec.yaml", "--out", "bundles/ /x"],
])
def test_named_mistakes_are_one_error_line(argv, capfd):
    with workdir(FILES) as cwd:
        outcome = run_cli(argv, cwd, capfd)
    check_outcome(outcome)
    assert outcome.rc == 2


def test_check_outcome_catches_a_traceback_a_second_line_and_a_stray_write():
    """The checks above can fail: each broken promise is caught."""
    ok = Outcome(["x"], 2, "", "error: bad\n", 0.1, 10, set())
    check_outcome(ok)
    check_outcome(dataclasses.replace(ok, written={"work/out/a.yaml", "x"}), allowed=("out", "../x"))
    for broken in (dataclasses.replace(ok, rc="raised ValueError"), dataclasses.replace(ok, rc=1),
                   dataclasses.replace(ok, stderr="warning\nerror: a\nerror: b\n"),
                   dataclasses.replace(ok, stderr="Traceback (most recent call last):\nerror: x\n"),
                   dataclasses.replace(ok, written={"work/runs/x"}), dataclasses.replace(ok, cpu_s=CPU_BOUND_S + 1),
                   dataclasses.replace(ok, peak_bytes=MEMORY_BOUND + 1)):
        with pytest.raises(AssertionError):
            check_outcome(broken)


# ------------------------------------------------------------------------------------------------
# A few cases that need a real process

def composer_process(*args: str, cwd: Path, limit_bytes: int | None = None, **kwargs) -> subprocess.CompletedProcess:
    def limit():
        if limit_bytes:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-m", "composer", *args], cwd=cwd, capture_output=True, text=True,
                          preexec_fn=limit, timeout=600, **kwargs)


def test_closed_stdout_is_not_a_traceback(tmp_path):
    """`composer show big.yaml | head -1`: the reader goes away while more than a pipe's buffer is still to be
    written; the command ends quietly (exit 1), without BrokenPipeError's traceback."""
    (tmp_path / "big.yaml").write_text("d_model: 8\nlayers:\n  - repeat: 2000\n    body: [mlp, mlp]\n")
    r = subprocess.run(f"'{sys.executable}' -m composer show big.yaml | head -1; exit ${{PIPESTATUS[0]}}",
                       shell=True, executable="/bin/bash", cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.stdout.startswith("layer") and r.stdout.count("\n") == 1
    assert r.stderr == "" and r.returncode == 1, r.stderr


def test_alias_bomb_under_a_memory_limit(tmp_path):
    """The 12-line "billion laughs" document: refused within 2 GB of address space, one error line."""
    levels = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"] + [
        f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in zip("abcdefghi", "bcdefghij")]
    (tmp_path / "bomb.yaml").write_text("\n".join(levels + ["d_model: 64", "layers: [mlp]"]) + "\n")
    r = composer_process("validate", "bomb.yaml", cwd=tmp_path, limit_bytes=2 * 2**30)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.startswith("error: bomb.yaml:") and r.stderr.count("\n") == 1, r.stderr
    assert "MAX_YAML_NODES" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.yaml"]
