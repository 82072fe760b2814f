"""Measured costs in a search: objectives and constraints read from a space (their context, did-you-mean, the
max_seq_len rule, errors with YAML path and line), a candidate measured and rejected before it trains, the
measurements cached in the run folder, the Pareto front's hypervolume, the report's measured axes and the
model card's measured section. A tiny real search ties them together (slow)."""

import json
import textwrap

import optuna
import pytest

import composer.measure
from composer import arch_id
from composer.errors import UserError
from composer.search.pareto import hypervolume
from composer.search.runner import DefineByRun
from composer.search.space_parse import load_space

SPACE = textwrap.dedent("""\
    name: m
    base: {d_model: 32, max_seq_len: 512, defaults: {attention: {n_heads: 2}, gla: {n_heads: 2}}}
    layers:
      n_layers: 2
      slot: {op: {choice: [attention, gla]}, channel: mlp}
    task: {name: mqar, params: {vocab_size: 64, seq_len: 32, kv_pairs: 4, num_train: 200, num_test: 50}}
    train: {steps: 6, lr: 3.0e-3, batch_size: 8, eval_every: 3, warmup_steps: 1}
    objectives:
      - {metric: accuracy, mode: max}
      - {metric: decode_ms_per_token, context: 512}
    constraints: {state_bytes: {max: 20000, context: 256}}
    measure: {repeats: 2, prefill_repeats: 1, decode_tokens: 2, warmup: 0}
    strategy: {name: random}
    scheduler: {name: fifo}
    resources: {cpus_per_trial: 1, max_concurrent: 1}
    trials: 4
    """)


def error_of(text: str) -> UserError:
    with pytest.raises(UserError) as info:
        load_space(text)
    return info.value


# -- reading ---------------------------------------------------------------------------------------------------
def test_a_measured_objective_carries_its_context_and_is_reported_as_metric_at_context():
    space = load_space(SPACE.replace("context: 512}", "context: 0.5K}"))
    assert space.objective_names() == ["accuracy", "decode_ms_per_token@512"]
    assert space.objectives[1] == {"metric": "decode_ms_per_token", "mode": "min", "context": 512}
    assert "context" not in space.objectives[0]
    assert space.measured_needs() == {512: {"decode_ms_per_token"}, 256: {"state_bytes"}}
    assert space.constraints.measured()["state_bytes"].max == 20000
    assert space.measure.repeats == 2 and space.measure.device == "cpu"


@pytest.mark.parametrize("broken, replacement, path, line, message", [
    ("{metric: decode_ms_per_token, context: 512}", "{metric: decode_ms_per_tokens, context: 512}",
     "objectives[1].metric", 10, "unknown measured metric 'decode_ms_per_tokens'; did you mean 'decode_ms_per_token'?"),
    ("{metric: decode_ms_per_token, context: 512}", "{metric: decode_ms_per_token}", "objectives[1].context", 10,
     "decode_ms_per_token is measured at a context length: give `context`"),
    ("{metric: decode_ms_per_token, context: 512}", "{metric: decode_ms_per_token, context: 2M}",
     "objectives[1].context", 10, "expected a context length in [1, 1,048,576]"),
    ("{metric: decode_ms_per_token, context: 512}", "{metric: decode_ms_per_token, context: 1K}",
     "objectives[1].context", 10, "context 1,024 is beyond the model's max_seq_len 512 (the longest context it "
                                  "declares); set `base.max_seq_len: 1024`"),
    ("{state_bytes: {max: 20000, context: 256}}", "{peak_memory_byte: {max: 1e9, context: 256}}",
     "constraints.peak_memory_byte", 11, "did you mean 'peak_memory_bytes'?"),
    ("{state_bytes: {max: 20000, context: 256}}", "{state_bytes: {context: 256}}", "constraints.state_bytes", 11,
     "give `max` (or `min`, for a speed) beside `context`"),
    ("{state_bytes: {max: 20000, context: 256}}", "{state_bytes: {max: 20000}}", "constraints.state_bytes.context",
     11, "missing required field"),
    ("{state_bytes: {max: 20000, context: 256}}", "{state_bytes: 20000}", "constraints.state_bytes", 11,
     "expected a mapping"),
    ("{repeats: 2,", "{device: tpu, repeats: 2,", "measure.device", 12, "expected cpu, cuda or cuda:N, got 'tpu'"),
    ("{repeats: 2,", "{repeats: 0,", "measure.repeats", 12, "expected an integer >= 1"),
])
def test_measured_fields_fail_with_path_and_line(broken, replacement, path, line, message):
    error = error_of(SPACE.replace(broken, replacement))
    assert (error.path, error.line) == (path, line) and message in error.message, (error.path, error.line, error)


def test_a_longer_base_max_seq_len_allows_a_longer_context():
    space = load_space(SPACE.replace("max_seq_len: 512", "max_seq_len: 32768").replace("context: 512}",
                                                                                          "context: 32K}"))
    assert space.objective_names()[1] == "decode_ms_per_token@32768"


def test_a_measured_objective_is_not_held_to_the_task_s_metrics():
    from composer.search.setup import check_objectives

    check_objectives(load_space(SPACE))         # decode_ms_per_token@512 is no metric mqar reports


# -- a candidate measured before it trains ---------------------------------------------------------------------
def fake_runner(calls):
    """A stand-in for the child process: state bytes from the cost model (as the protocol measures them), decode
    time growing with attention layers, so the test is exact and fast."""
    from composer.costs import model_cost

    def run(spec, context, settings):
        calls.append((arch_id(spec), context))
        attention = sum(1 for layer in spec.layers if getattr(layer, "op", None) == "attention")
        return {"arch_id": arch_id(spec), "context": context, "device": settings.device,
                "threads": settings.threads, "state_bytes": model_cost(spec, context, dtype_bytes=4).state_bytes,
                "peak_memory_bytes": 10 ** 8, "decode_ms_per_token": {"median": 1.0 + attention},
                "prefill_tokens_per_s": {"median": 1000.0}}
    return run


def test_a_candidate_that_breaks_a_measured_bound_is_rejected_before_it_trains(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(composer.measure, "measure_in_child", fake_runner(calls))
    define = DefineByRun(load_space(SPACE), tmp_path)
    metas = {}
    for ops in (("gla", "gla"), ("attention", "gla"), ("gla", "gla")):
        trial = optuna.trial.FixedTrial({"layer0.op": ops[0], "layer1.op": ops[1]})
        metas.setdefault(ops, []).append(define(trial)["meta"])
    recurrent, hybrid = metas["gla", "gla"][0], metas["attention", "gla"][0]
    assert "status" not in recurrent and recurrent["costs"]["decode_ms_per_token@512"] == 1.0
    assert recurrent["costs"]["state_bytes@256"] == recurrent["costs"]["state_bytes@512"]
    assert hybrid["status"] == "constraint"
    assert hybrid["reason"].startswith("state_bytes@256 ") and "> max 20,000 (measured on cpu, 1 thread(s))" in \
        hybrid["reason"]
    # each distinct architecture measured once per context, kept in the run folder's measure/
    assert len(calls) == 4 and len(list((tmp_path / "measure").iterdir())) == 4
    assert metas["gla", "gla"][1]["costs"] == recurrent["costs"]


def test_a_failed_measurement_fails_the_candidate_with_the_reason(tmp_path, monkeypatch):
    def broken(spec, context, settings):
        raise composer.measure.MeasureError(f"measuring context {context:,} took longer than timeout_s 1 s")

    monkeypatch.setattr(composer.measure, "measure_in_child", broken)
    meta = DefineByRun(load_space(SPACE), tmp_path)(optuna.trial.FixedTrial({"layer0.op": "gla",
                                                                             "layer1.op": "gla"}))["meta"]
    assert meta["status"] == "failed" and meta["reason"] == "measuring context 256 took longer than timeout_s 1 s"


# -- the front ---------------------------------------------------------------------------------------------------
def test_hypervolume_with_its_reference_point():
    rows = [{"status": "completed", "a": 1.0, "b": 3.0}, {"status": "completed", "a": 2.0, "b": 1.0},
            {"status": "completed", "a": 3.0, "b": 3.0}, {"status": "failed", "a": 0.0, "b": 0.0},
            {"status": "completed", "a": 1.0, "b": float("nan")}]
    got = hypervolume(rows, ["a", "b"], ["min", "min"])
    # reference: the worst value + a tenth of the range, (3.2, 3.2); the front (1, 3), (2, 1) dominates
    # 2.2 x 0.2 + 1.2 x 2.0
    assert got["reference_point"] == pytest.approx([3.2, 3.2]) and got["trials"] == 3
    assert got["hypervolume"] == pytest.approx(2.2 * 0.2 + 1.2 * 2.0)
    # b maximised: reference (3.2, 0.8); (1, 3) dominates the other two: 2.2 x 2.2
    assert hypervolume(rows, ["a", "b"], ["min", "max"])["hypervolume"] == pytest.approx(2.2 * 2.2)
    assert hypervolume(rows, ["a"], ["min"]) is None
    assert hypervolume(rows[3:], ["a", "b"], ["min", "min"]) is None


def test_dominated_volume_by_hand():
    from composer.search.pareto import dominated_volume, non_dominated

    # two boxes to (4, 4, 4): 3 x 2 x 1 + 2 x 3 x 2, less their overlap 2 x 2 x 1
    assert dominated_volume([(1, 2, 3), (2, 1, 2)], (4, 4, 4)) == pytest.approx(6 + 12 - 4)
    # a dominated point, a duplicate and a point outside the reference add nothing
    assert dominated_volume([(1, 2, 3), (2, 1, 2), (3, 3, 3), (1, 2, 3), (0, 0, 5)], (4, 4, 4)) == pytest.approx(14)
    assert dominated_volume([(1, 1, 1, 1)], (2, 3, 4, 5)) == pytest.approx(1 * 2 * 3 * 4)
    assert dominated_volume([(4, 0)], (4, 4)) == 0.0 and dominated_volume([], (1, 1)) == 0.0
    assert non_dominated([(1, 2), (2, 1), (2, 2), (1, 2)]) == [(1, 2), (2, 1)]


@pytest.mark.parametrize("modes", [["min", "min"], ["min", "max", "min"], ["max", "min", "max", "min"]])
def test_hypervolume_agrees_with_optunas_plot(modes):
    """Optuna's public plot_hypervolume_history ends at the hypervolume of all the trials given."""
    import random
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_hypervolume_history

    rng = random.Random(len(modes))
    metrics = [f"m{i}" for i in range(len(modes))]
    rows = [{"status": "completed", **{m: round(rng.uniform(0, 10), 1) for m in metrics}} for _ in range(30)]
    got = hypervolume(rows, metrics, modes)
    study = optuna.create_study(directions=["minimize" if m == "min" else "maximize" for m in modes])
    study.add_trials([optuna.trial.create_trial(values=[r[m] for m in metrics]) for r in rows])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        axes = plot_hypervolume_history(study, got["reference_point"])
    assert got["hypervolume"] > 0
    assert got["hypervolume"] == pytest.approx(float(axes.lines[0].get_ydata()[-1]), rel=1e-9)
    plt.close(axes.figure)


def test_the_closing_summary_states_the_front_and_its_hypervolume():
    from types import SimpleNamespace

    from composer.cli.search import summary_text

    rows = [{"trial": 0, "status": "completed", "stripe": "A M"}, {"trial": 1, "status": "completed", "stripe": "M M"}]
    summary = {"elapsed_s": 3.0, "planned_trials": 2, "objectives": [{"metric": "val_loss", "mode": "min"}],
               "hypervolume": {"hypervolume": 1.23456, "reference_point": [3.2, 0.25], "trials": 2}}
    result = SimpleNamespace(rows=rows, run_dir="runs/x", best_row=None, consensus=None, pareto=rows, summary=summary)
    assert ("  Pareto front: 2 trials, hypervolume 1.235 (reference point [3.2, 0.25])  -> runs/x/pareto.json"
            in summary_text(result).splitlines())
    summary["hypervolume"] = None          # no completed trial
    assert "  Pareto front: 2 trials  -> runs/x/pareto.json" in summary_text(result).splitlines()
    del summary["hypervolume"]             # one objective
    assert "Pareto" not in summary_text(result)


# -- the report and the card -------------------------------------------------------------------------------------
def test_the_report_draws_the_measured_axes(tmp_path):
    from composer.report import figures
    from composer.report.run_data import read_run
    from composer.runs import RunDir

    run = RunDir(tmp_path)
    rows = [{"trial": i, "status": "completed", "accuracy": 0.1 * i, "params": 1000 + i,
             "decode_ms_per_token@512": 1.0 + i, "peak_memory_bytes@512": 10 ** 8 + i, "state_bytes@512": 99,
             "prefill_tokens_per_s@512": 5.0, "peak_memory_bytes@256": 7} for i in range(3)]
    run.write_leaderboard(rows, ["accuracy", "decode_ms_per_token@512"])
    (tmp_path / "summary.json").write_text(json.dumps({
        "objectives": [{"metric": "accuracy", "mode": "max"},
                       {"metric": "decode_ms_per_token", "mode": "min", "context": 512}],
        "measure": {"device": "cpu"}, "hypervolume": {"hypervolume": 0.5, "reference_point": [0.0, 3.3]}}))
    data = read_run(tmp_path, progress=lambda *_: None)
    assert [o["metric"] for o in data.objectives] == ["accuracy", "decode_ms_per_token@512"]
    assert figures.measured_axes(data) == ["decode_ms_per_token@512", "peak_memory_bytes@512"]
    labels = [label for label, _, _ in figures.pareto_panels(data)]
    assert labels[-2:] == ["decode ms / token at 512, measured (cpu)", "peak memory (bytes) at 512, measured (cpu)"]
    assert figures.pareto_figure(data) is not None
    from composer.report import build_report

    page = build_report(tmp_path, tmp_path / "report", progress=lambda *_: None).read_text()
    assert "Pareto front hypervolume 0.5 (reference point [0, 3.3])" in page


def test_the_model_card_states_the_measured_numbers_and_their_device():
    from composer.export.card import measured_lines, results_rows

    measured = {"context": 8192, "device": "cuda:0", "device_name": "NVIDIA H100", "threads": 1, "batch": 1,
                "dtype": "bfloat16", "torch": "2.x", "decode_tokens": 16, "memory_kind": "max_memory_allocated",
                "prefill_tokens_per_s": {"median": 50000.0, "min": 49000.0, "max": 51000.0, "n": 3},
                "decode_ms_per_token": {"median": 1.25, "min": 1.2, "max": 1.3, "n": 5},
                "peak_memory_bytes": 123456789, "state_bytes": 65536}
    text = "\n".join(measured_lines([measured]))
    assert "on **cuda:0** (NVIDIA H100), 1 thread(s), batch 1, bfloat16" in text
    assert "| 8,192 | 50,000 (49,000-51,000) | 1.25 (1.2-1.3) | 123,456,789 bytes | 65,536 bytes |" in text
    assert measured_lines([]) == []
    assert [k for k, _ in results_rows({"accuracy": 0.5, "decode_ms_per_token@8192": 1.2})] == ["accuracy"]


# -- a real search -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_tiny_search_measures_rejects_and_reports(tmp_path, capsys):
    import ray

    from composer.cli import main
    from composer.search import search

    try:
        result = search(SPACE.replace("trials: 4", "trials: 3"), runs_dir=tmp_path, progress=lambda state: None)
    finally:
        ray.shutdown()
    run = tmp_path / "m"
    rows = {int(r["trial"]): r for r in result.rows}
    rejected = [r for r in rows.values() if r["status"] == "constraint"]
    assert rejected and all(r["reason"].startswith("state_bytes@256 ") for r in rejected)
    for r in rejected:       # never trained: no learning curve
        assert not (run / "trials" / str(r["trial"]) / "metrics.jsonl").exists()
    done = [r for r in rows.values() if r["status"] == "completed"]
    assert done and all(isinstance(r["decode_ms_per_token@512"], float) for r in done)
    header = (run / "leaderboard.csv").read_text().splitlines()[0].split(",")
    assert {"decode_ms_per_token@512", "state_bytes@256", "peak_memory_bytes@512"} <= set(header)
    measured = sorted(p.name for p in (run / "measure").iterdir())
    assert len(measured) == 2 * len({r["arch_id"] for r in rows.values()})
    pareto = json.loads((run / "pareto.json").read_text())
    assert pareto["hypervolume"]["hypervolume"] >= 0 and len(pareto["hypervolume"]["reference_point"]) == 2
    assert main(["export", str(run), "--out", str(tmp_path / "bundle")]) == 0
    card = (tmp_path / "bundle" / "README.md").read_text()
    assert "## Measured inference cost" in card and "on **cpu**" in card
    assert main(["report", str(run)]) == 0
