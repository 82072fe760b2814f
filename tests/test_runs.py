"""Run folders: names are names, writes stay inside their root, one driver per folder (a lock that a kill -9
releases), damaged files give one error naming them; and the ladder / scale commands that write run folders."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import composer.cli as cli
from composer.errors import UserError
from composer.runs import RunDir, RunLock, check_not_run_file, contained, read_jsonl, safe_name
from scaling.ladder import Ladder, run_ladder
from scaling.ladder_parse import load_ladder

ROOT = Path(__file__).resolve().parents[1]
SPEC = "search_spaces/architectures/hybrid_pattern.yaml"


@pytest.mark.parametrize("name", ["quickstart", "run-2.b_c", "_x", "0", "a" * 100])
def test_safe_names(name):
    assert safe_name(name, "name") == name


@pytest.mark.parametrize("name", ["..", ".", "", "../../x", "/abs", "a/b", "a\\b", ".hidden", "-flag", "a b",
                                  "a" * 101, "x\n", None, 3, "é"])
def test_unsafe_names_are_refused_naming_the_field(name):
    with pytest.raises(UserError) as info:
        safe_name(name, "--name")
    assert info.value.path == "--name" and "expected a name" in str(info.value)


def test_contained_follows_symbolic_links(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    assert contained(root, root / "a" / "b") == (root / "a" / "b").resolve()
    (root / "out").symlink_to(tmp_path)
    with pytest.raises(UserError, match="outside"):
        contained(root, root / "out" / "x", "name")
    with pytest.raises(UserError, match="outside"):
        contained(root, root / ".." / "x")


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process that takes the folder's lock and keeps it until killed."""
    code = (f"import sys, time; from composer.runs import RunLock; RunLock({str(folder)!r}).acquire(); "
            "print('locked', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_driver_is_refused_and_a_kill_9_releases_the_lock(tmp_path):
    folder = tmp_path / "run"
    holder = hold_lock(folder)
    try:
        with pytest.raises(UserError) as info:
            RunLock(folder).acquire()
        message = str(info.value)
        assert f"is in use by pid {holder.pid} on host" in message and " since 20" in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with RunLock(folder) as lock:                  # the kernel released the dead holder's lock: stale
        assert lock.stale["pid"] == holder.pid
        assert json.loads((folder / ".lock").read_text())["pid"] == os.getpid()
    assert not (folder / ".lock").exists()


def test_a_lock_on_a_new_folder_leaves_nothing_when_nothing_was_written(tmp_path):
    with RunLock(tmp_path / "new"):
        assert (tmp_path / "new" / ".lock").is_file()
    assert not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        RunLock(tmp_path / "file").acquire()


def test_two_search_drivers_on_one_folder(tmp_path):
    """A second `composer search` into a folder in use (a new search, or --resume beside the live driver)
    stops with one error naming the holder, and writes nothing."""
    space = (ROOT / "search_spaces" / "quickstart.yaml").read_text()
    (tmp_path / "space.yaml").write_text(space)
    runs = tmp_path / "runs"
    run = RunDir(runs / "quickstart")
    run.create(space)
    before = sorted(p.name for p in run.root.iterdir())
    holder = hold_lock(run.root)
    try:
        for argv in (["search", str(tmp_path / "space.yaml"), "--runs-dir", str(runs)],
                     ["search", "--resume", str(run.root)]):
            result = subprocess.run([sys.executable, "-m", "composer", *argv], cwd=ROOT, capture_output=True,
                                    text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            errors = result.stderr.strip().splitlines()
            assert result.returncode == 2 and len(errors) == 1, result.stderr
            assert errors[0].startswith(f"error: {run.root} is in use by pid {holder.pid} on host ")
        assert sorted(p.name for p in run.root.iterdir()) == sorted([*before, ".lock"])
    finally:
        holder.kill()
        holder.wait()


def test_check_not_run_file(tmp_path):
    run = RunDir(tmp_path / "runs" / "q")
    run.create("name: q\n")
    (run.path("trials", "0")).mkdir(parents=True)
    for own in ("space.yaml", "study.db", "leaderboard.csv", "summary.json", "best.yaml", "trials/0/spec.yaml",
                "trials/new.yaml", "cache/x.json"):
        with pytest.raises(UserError, match="belongs to the run"):
            check_not_run_file(run.path(own), "--out")
    check_not_run_file(run.path("best_20M.yaml"), "--out")        # a new file beside the run's own is fine
    check_not_run_file(tmp_path / "space.yaml", "--out")           # no run there
    with pytest.raises(UserError, match="is a folder"):
        check_not_run_file(tmp_path, "--out")


def test_scale_out_never_overwrites_a_run_file(tmp_path, capsys):
    run = RunDir(tmp_path / "q")
    run.create("name: q\n")
    before = run.path("space.yaml").read_text()
    assert cli.main(["scale", SPEC, "--params", "2M", "--out", str(run.path("space.yaml"))]) == 2
    assert "error: --out: " in capsys.readouterr().err and run.path("space.yaml").read_text() == before
    assert cli.main(["scale", SPEC, "--params", "2M", "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


@pytest.mark.parametrize("params", ["1e30", "1e13", "2T"])
def test_scale_to_an_absurd_size_is_refused_at_once(tmp_path, capsys, params):
    assert cli.main(["scale", SPEC, "--params", params, "--out", str(tmp_path / "s.yaml")]) == 2
    assert capsys.readouterr().err.strip() == f"error: --params: expected at most 1e+12, got '{params}'"


LADDER = textwrap.dedent("""\
    name: {name}
    task: {{name: mqar, params: {{vocab_size: 32, seq_len: 16, kv_pairs: 2, num_train: 64, num_test: 16}}}}
    architectures: {{a: {{d_model: 16, layers: [mlp]}}}}
    sizes: {sizes}
    budget: {{tokens: 256}}
    """)


@pytest.mark.parametrize("name", ["../../x", "/tmp/x", "..", "a/b"])
def test_ladder_names_are_names(name):
    with pytest.raises(UserError) as info:
        load_ladder(LADDER.format(name=json.dumps(name), sizes="[1K, 2K]"))
    assert str(info.value).startswith("line 1: name: expected a name")


def test_ladder_sizes_are_bounded():
    with pytest.raises(UserError) as info:
        load_ladder(LADDER.format(name="t", sizes="[1K, 1e39]"))
    assert str(info.value) == "line 4: sizes[1]: expected at most 1e+12, got '1e39'"


def test_run_ladder_stays_inside_its_root_and_takes_the_lock(tmp_path):
    ladder = load_ladder(LADDER.format(name="t", sizes="[1K, 2K]"))
    bad = Ladder(name="../../x", task=ladder.task, architectures=ladder.architectures, sizes=ladder.sizes)
    with pytest.raises(UserError, match="expected a name"):
        run_ladder(bad, tmp_path / "runs")
    assert not (tmp_path / "runs").exists() and not (tmp_path.parent / "x").exists()
    holder = hold_lock(tmp_path / "runs" / "t")
    try:
        with pytest.raises(UserError, match=f"in use by pid {holder.pid}"):
            run_ladder(ladder, tmp_path / "runs")
    finally:
        holder.kill()
        holder.wait()
    (tmp_path / "runs" / "t" / "ladder.json").write_bytes(b"\x00\xff not json")
    with pytest.raises(UserError, match="ladder.json is damaged"):
        run_ladder(ladder, tmp_path / "runs")


def test_damaged_leaderboard_and_metrics_are_one_error_naming_the_file(tmp_path):
    run = RunDir(tmp_path)
    run.write_leaderboard([{"trial": 0, "status": "completed", "accuracy": 0.5}], ["accuracy"])
    assert run.read_leaderboard()[0]["accuracy"] == 0.5
    for damage in (b"\x00\xff\xfe binary", b"a,b\n1,2\n", b"trial,status\nzero,completed\n",
                   b"trial,status\n0,completed,extra,cells\n"):
        run.path("leaderboard.csv").write_bytes(damage)
        with pytest.raises(UserError, match="leaderboard"):
            run.read_leaderboard()
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1}\n\n{"step": 2}\n')
    assert read_jsonl(metrics) == [{"step": 1}, {"step": 2}]
    for damage, where in ((b'{"step": 1}\n{"step": \n', "metrics.jsonl:2"), (b"\xff\xfe", "not UTF-8"),
                          (b"[1, 2]\n", "expected a JSON object")):
        metrics.write_bytes(damage)
        with pytest.raises(UserError, match=where):
            read_jsonl(metrics)
    run.path("summary.json").write_text("{not json")
    with pytest.raises(UserError, match="summary.json is not valid JSON"):
        run.read_summary()
