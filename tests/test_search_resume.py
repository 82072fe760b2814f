"""Resume after kill -9 of the driver; Ctrl-C and SIGTERM tell the truth; kill -9 leaves no Ray process behind;
two drivers on one folder; a search across a two-node Ray cluster (all slow)."""

import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import optuna
import pytest

ROOT = Path(__file__).resolve().parents[1]
SPACE = textwrap.dedent("""\
    name: resumable
    base: {d_model: 32, defaults: {attention: {n_heads: 2}, gla: {n_heads: 2}}}
    layers:
      n_layers: {choice: [1, 2]}
      slot: {op: {choice: [attention, gla, short_conv]}, channel: mlp}
    task: {name: mqar, params: {vocab_size: 64, seq_len: 32, kv_pairs: 4, num_train: 2000, num_test: 100}}
    train: {steps: 60, lr: 3.0e-3, batch_size: 8, eval_every: 20}
    objectives: [{metric: accuracy, mode: max}]
    strategy: {name: random}
    scheduler: none
    resources: {cpus_per_trial: 1, max_concurrent: 1}
    trials: 6
    """)


def python(code: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    env = {**(env or os.environ), "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def finished_rows(run: Path, consensus: bool = False) -> list[dict]:
    """The finished searched trials (with `consensus`: the consensus trial trained after them instead)."""
    path = run / "leaderboard.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r["status"] != "running" and (r["consensus"] == "True") == consensus]


def processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line), read from /proc."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            out[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmdline)
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL a process we started and every process it started (Ray's node processes included)."""
    table = processes()
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, (ppid, _) in table.items() if ppid == parent and p not in tree]
        tree.update(children)
        frontier.extend(children)
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow
def test_resume_after_kill_9(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    run = tmp_path / "runs" / "resumable"
    driver = python(f"from composer.search import search; search({str(space)!r}, runs_dir={str(tmp_path / 'runs')!r})",
                    start_new_session=True)
    try:
        deadline = time.time() + 120
        while len(finished_rows(run)) < 2 and time.time() < deadline and driver.poll() is None:
            time.sleep(0.2)
        assert len(finished_rows(run)) >= 2, driver.stdout.read() if driver.poll() is not None else "timeout"
    finally:
        kill_tree(driver.pid)
        driver.wait()
    before = {r["trial"]: r for r in finished_rows(run)}
    assert len(before) < 6
    resumed = python(f"from composer.search import search; search(None, run_dir={str(run)!r}, resume=True)")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    after = finished_rows(run)
    assert len(after) == 6 and all(r["status"] == "completed" for r in after)
    assert [r["status"] for r in finished_rows(run, consensus=True)] == ["completed"]     # trained once, at the end
    by_trial = {r["trial"]: r for r in after}
    for number, row in before.items():        # finished trials are kept as they were, not re-run
        assert by_trial[number] == row
    study = optuna.load_study(study_name="resumable", storage=f"sqlite:///{run / 'study.db'}")
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 6 + 1 and set(states) <= {"COMPLETE", "FAIL"}     # + the consensus
    for trial in study.trials:
        retry = [t for t in study.trials if t.user_attrs.get("retry_of") == trial.number]
        if trial.state.name == "FAIL" and trial.params:     # cut short by the kill: asked again, same parameters
            # (a trial killed while it was being sampled has only some: the retry draws the rest)
            assert len(retry) == 1 and trial.params.items() <= retry[0].params.items()
        elif trial.state.name == "FAIL":     # killed between ask and sampling: nothing to retry
            assert retry == []
    # Tune sessions: the first driver's, the resumed trials', the consensus's
    assert (run / "best.yaml").is_file() and len(list((run / "tune").glob("session*"))) == 3


@pytest.mark.slow
@pytest.mark.cluster
def test_search_on_a_two_node_cluster(tmp_path):
    ray = [str(Path(sys.executable).with_name("ray"))]
    # a private test cluster: no token authentication (Ray 2.60 enables it for `ray start` by default)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    head_port = "6391"
    temp_dir = tempfile.mkdtemp(prefix="crt", dir="/tmp")       # short: Ray's socket paths have a length limit
    space = tmp_path / "space.yaml"
    space.write_text(SPACE.replace("trials: 6", "trials: 4").replace("max_concurrent: 1", "max_concurrent: 2"))
    try:
        subprocess.run([*ray, "start", "--head", f"--port={head_port}", "--num-cpus=1", "--include-dashboard=false", "--node-ip-address=127.0.0.1",
                        f"--temp-dir={temp_dir}", "--disable-usage-stats"], check=True, env=env,
                       capture_output=True)
        subprocess.run([*ray, "start", f"--address=127.0.0.1:{head_port}", "--num-cpus=1", "--node-ip-address=127.0.0.1",
                        f"--temp-dir={temp_dir}", "--disable-usage-stats"], check=True, env=env,
                       capture_output=True)
        driver = python(f"import ray; from composer.search import search; "
                        f"r = search({str(space)!r}, runs_dir={str(tmp_path / 'runs')!r}, address='127.0.0.1:{head_port}'); "
                        f"print('NODES', len(ray.nodes()), 'ROWS', len(r.rows))", env=env)
        out, _ = driver.communicate(timeout=300)
        assert driver.returncode == 0 and "NODES 2 ROWS 5" in out, out          # 4 trials + the consensus
    finally:
        stop_our_ray(temp_dir)


def stop_our_ray(temp_dir: str) -> None:
    """Kill only the Ray processes of our own cluster (their command lines name our temp dir), not every
    Ray process on the machine as `ray stop` would."""
    for pid, (_, cmdline) in processes().items():
        if temp_dir in cmdline and pid != os.getpid():
            kill_tree(pid)


def cli(*argv: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.Popen([sys.executable, "-m", "composer", *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, **kwargs)


def wait_for_rows(driver: subprocess.Popen, run: Path, count: int) -> None:
    deadline = time.time() + 180
    while len(finished_rows(run)) < count and time.time() < deadline and driver.poll() is None:
        time.sleep(0.2)
    assert len(finished_rows(run)) >= count, driver.stdout.read() if driver.poll() is not None else "timeout"


def session_processes(sid: int) -> dict[int, str]:
    """The live (not zombie) processes of session `sid`: the driver started with start_new_session, so every
    Ray process it started is in it."""
    out = {}
    for pid, (_, cmd) in processes().items():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[3]) == sid and stat[0] != "Z":
            out[pid] = cmd
    return out


def watchdogs_of(pid: int) -> list[int]:
    return [p for p, (_, cmd) in processes().items() if f"ray_watchdog.py {pid} " in cmd]


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_search_says_so_and_resumes(tmp_path, sig, code):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    run = tmp_path / "runs" / "resumable"
    driver = cli("search", str(space), "--runs-dir", str(tmp_path / "runs"))
    try:
        wait_for_rows(driver, run, 1)
        os.kill(driver.pid, sig)
        out, _ = driver.communicate(timeout=180)
    finally:
        kill_tree(driver.pid)
    assert driver.returncode == code, out
    name = signal.Signals(sig).name
    assert f"search interrupted by {name}:" in out and f"continue with: composer search --resume {run}" in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["signal"] == name and summary["planned_trials"] == 6
    finished = {r["trial"]: r for r in finished_rows(run) if r["status"] != "interrupted"}
    assert 1 <= len(finished) < 6 and summary["counts"]["completed"] == len(finished)
    assert summary["best"]["trial"] in {int(t) for t in finished}
    assert "search was interrupted" in (run / "best.yaml").read_text().splitlines()[0]
    assert not (run / ".lock").exists()
    if sig != signal.SIGINT:
        return
    resumed = cli("search", "--resume", str(run))
    out, _ = resumed.communicate(timeout=400)
    assert resumed.returncode == 0 and "search finished: 6 trials" in out, out
    after = {r["trial"]: r for r in finished_rows(run)}
    assert len(after) == 6 and all(r["status"] == "completed" for r in after.values())
    assert len(finished_rows(run, consensus=True)) == 1
    for number, row in finished.items():      # what finished before Ctrl-C is kept as it was
        assert after[number] == row
    assert json.loads((run / "summary.json").read_text())["interrupted"] is False


@pytest.mark.slow
def test_kill_9_leaves_no_ray_process_and_no_session_folder(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    run = tmp_path / "runs" / "resumable"
    driver = cli("search", str(space), "--runs-dir", str(tmp_path / "runs"))
    try:
        wait_for_rows(driver, run, 1)
        ray_processes = session_processes(driver.pid)
        assert any("raylet" in cmd for cmd in ray_processes.values()), ray_processes
        sessions = list(Path(tempfile.gettempdir(), "ray").glob(f"session_*_{driver.pid}"))
        assert len(sessions) == 1 and (sessions[0] / "composer_driver").is_file()
        assert len(watchdogs_of(driver.pid)) == 1
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        deadline = time.time() + 20          # Ray's own agents linger 30-60 s after their raylet
        while (session_processes(driver.pid) or watchdogs_of(driver.pid)) and time.time() < deadline:
            time.sleep(0.5)
        assert session_processes(driver.pid) == {} and watchdogs_of(driver.pid) == []
        assert not sessions[0].exists()
    finally:
        kill_tree(driver.pid)
        for pid in session_processes(driver.pid):
            kill_tree(pid)
    resumed = cli("search", "--resume", str(run), "--trials", "2")      # the stale lock does not stop a resume
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out


@pytest.mark.slow
def test_two_drivers_started_together_one_runs(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE.replace("trials: 6", "trials: 1"))
    drivers = [cli("search", str(space), "--runs-dir", str(tmp_path / "runs"), "--name", "same") for _ in range(2)]
    outs = [d.communicate(timeout=300)[0] for d in drivers]
    codes = sorted(d.returncode for d in drivers)
    assert codes == [0, 2], outs
    refused = outs[[d.returncode for d in drivers].index(2)].strip().splitlines()
    assert len(refused) == 1 and ("is in use by pid" in refused[0] or "already holds a search" in refused[0]), refused
    assert len(finished_rows(tmp_path / "runs" / "same")) == 1
    study = optuna.load_study(study_name="resumable", storage=f"sqlite:///{tmp_path / 'runs' / 'same' / 'study.db'}")
    assert len(study.trials) == 1 + 1           # the trial and the consensus
