"""A search on a two-node Ray cluster started here (`ray start --head` and `ray start --address ...`, separate
processes with one CPU each): its trial trains on two data-parallel workers (Ray Train), which can only fit one per
node, so the one model's training spans both nodes. Slow (~1-2 min: two node starts and a Ray Train run)."""

import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from tests.test_search_resume import python, stop_our_ray

SPACE = textwrap.dedent("""\
    name: spanning
    base: {d_model: 32, defaults: {attention: {n_heads: 2}}}
    layers:
      n_layers: {choice: [1]}
      slot: {op: {choice: [attention]}, channel: mlp}
    task: {name: mqar, params: {vocab_size: 64, seq_len: 32, kv_pairs: 4, num_train: 500, num_test: 32}}
    train: {steps: 6, lr: 3.0e-3, batch_size: 8, eval_every: 3}
    objectives: [{metric: accuracy, mode: max}]
    strategy: {name: random}
    scheduler: none
    aggregate: {train: false}
    resources: {cpus_per_trial: 2, workers_per_trial: 2, max_concurrent: 1}
    trials: 1
    """)


def composer_result(path):
    """A trial's result.json as Composer writes it (one object with its provenance), not Tune's (JSON lines)."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) and "provenance" in data else None


@pytest.mark.slow
@pytest.mark.cluster
def test_a_data_parallel_trial_spans_both_nodes_of_a_cluster(tmp_path):
    ray = [str(Path(sys.executable).with_name("ray"))]
    env = {**__import__("os").environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    port = "6393"
    temp_dir = tempfile.mkdtemp(prefix="crd", dir="/tmp")       # short: Ray's socket paths have a length limit
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    try:
        subprocess.run([*ray, "start", "--head", f"--port={port}", "--include-dashboard=false", *common], check=True,
                       env=env, capture_output=True)
        subprocess.run([*ray, "start", f"--address=127.0.0.1:{port}", *common], check=True, env=env,
                       capture_output=True)
        driver = python(f"import ray; from composer.search import search; "
                        f"r = search({str(space)!r}, runs_dir={str(tmp_path / 'runs')!r}, address='127.0.0.1:{port}'); "
                        f"print('NODES', len(ray.nodes()), 'ROWS', len(r.rows))", env=env)
        out, _ = driver.communicate(timeout=400)
        assert driver.returncode == 0 and "NODES 2 ROWS 1" in out, out
    finally:
        stop_our_ray(temp_dir)
    results = [composer_result(p) for p in (tmp_path / "runs").rglob("result.json")]
    results = [r for r in results if r is not None]
    assert len(results) == 1, out
    result = results[0]
    assert result["status"] == "completed" and result["step"] == 6
    assert result["workers"] == 2 and result["worker_nodes"] == 2       # one worker on each node
