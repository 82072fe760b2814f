"""The search report: figures from a fake run directory, a self-contained page, checked in headless Chromium."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess

import pytest
import yaml

from composer import arch_id, load_spec, stripe
from composer.report import build_report
from composer.report.figures import cost_axis, pareto_front, pareto_panels
from composer.report.run_data import read_run
from composer.units import duration, human

ARCHS = [["attention", "mlp"], ["mamba2", "mlp", "attention", "mlp"], ["gla", "mlp"], ["attention", "moe"],
         ["gated_deltanet", "mlp", "gated_deltanet", "mlp"]]
QUIET = {"progress": lambda *_: None}
COLUMNS = "trial,status,reason,arch_id,val_loss,accuracy,params,flops_per_token,state_bytes,reused,params_json,note"


def fake_run(root, study_trials=12):
    """runs/<name>/ as the search writes it: leaderboard (trial order), summary.json naming the objective,
    consensus.yaml, trials/<id>/, study.db, ladder.json. Trial 4 has the lowest loss but was pruned; trial 6
    is a duplicate of trial 2 that reused its result; the accuracy column is there to tempt a reader that
    guesses the quality column instead of reading the objective."""
    run = root / "runs" / "demo"
    rows = []
    for i, layers in enumerate(ARCHS[:5]):
        folder = run / "trials" / str(i)
        folder.mkdir(parents=True)
        spec = {"d_model": 32, "layers": layers}
        (folder / "spec.yaml").write_text(yaml.safe_dump(spec))
        history = [{"step": s, "tokens": 1000 * s, "val_loss": 3.0 - 0.1 * s - 0.05 * i} for s in range(1, 6)]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
        status, reason = ("pruned", "stopped early by the scheduler") if i == 4 else ("completed", "")
        rows.append([i, status, reason, arch_id(load_spec(spec)), history[-1]["val_loss"], 0.1 * i, 1000 * (i + 1),
                     5000.0 * (5 - i), 64 * (i + 1), "", '"{""n_layers"": 2}"', "ok"])
    rows.append([5, "completed", "", "x", 2.9, 0.9, 999, 1.0, 1, "", "{}", "<script>alert(1)</script>"])  # spec broken
    rows.append([6, "completed", "", *rows[2][3:9], True, "{}", "ok"])       # the same architecture as trial 2
    lines = [COLUMNS] + [",".join(map(str, r)) for r in rows]
    (run / "leaderboard.csv").write_text("\n".join(lines) + "\n")
    (run / "summary.json").write_text(json.dumps({
        "strategy": "tpe", "objectives": [{"metric": "val_loss", "mode": "min"}], "best": {"trial": 3},
        "elapsed_s": 125.4}))
    (run / "consensus.yaml").write_text(yaml.safe_dump({"d_model": 32, "layers": ARCHS[3],
                                                        "description": "per-layer majority vote of the top 3"}))
    (run / "trials" / "5").mkdir()
    (run / "trials" / "5" / "spec.yaml").write_text("d_model: 32\nlayers: [nonexistent_op]\n")
    (run / "trials" / "6").mkdir()       # a reused duplicate: no curve of its own
    (run / "trials" / "6" / "spec.yaml").write_text(yaml.safe_dump({"d_model": 32, "layers": ARCHS[2]}))
    if study_trials:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(study_name="demo", storage=f"sqlite:///{run / 'study.db'}")
        study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-2, log=True) * 100
                       + t.suggest_int("n_layers", 2, 8) * 0.01, n_trials=study_trials)
        study.enqueue_trial({}, user_attrs={"consensus": True})        # the consensus: no parameters of its own
        study.optimize(lambda t: 0.5, n_trials=1)
    (run / "ladder.json").write_text(json.dumps({"fits": {"A M": {"E": 1.5, "A": 20.0, "alpha": 0.3}}}))
    return run


def leaderboard_headers(text):
    table = text[text.index('<table id="leaderboard"'):]
    return re.findall(r"<th[^>]*>([^<]*)</th>", table[:table.index("</thead>")])


def test_pareto_front():
    points = [(1, 3.0), (2, 2.0), (2, 2.5), (3, 2.2), (4, 1.0)]
    assert pareto_front(points, lower_is_better=True) == [(1, 3.0), (2, 2.0), (4, 1.0)]
    assert pareto_front(points, lower_is_better=False) == [(1, 3.0)]


def test_human_units():
    assert [human(v) for v in (0, 64, 999, 1000, 4992, 169344, 999_950, 1_234_567, 2.5e9)] == [
        "0", "64", "999", "1K", "4.99K", "169K", "1M", "1.23M", "2.5G"]
    assert human(168_500, 4) == "168.5K"
    assert [duration(s) for s in (42.4, 125.4, 3600, 7800)] == ["42 s", "2 min 5 s", "1 h", "2 h 10 min"]


def test_report_files_and_page(tmp_path):
    messages = []
    page = build_report(fake_run(tmp_path), progress=messages.append)
    out = page.parent
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["architectures.png", "best_so_far.png", "importances.png", "learning_curves.png", "pareto.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in out.glob("*.png"))
    text = page.read_text()
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,[A-Za-z0-9+/=]{100,}"', text)) == 5
    assert text.count("<tr><td>") == 6  # six trials: the reused duplicate (trial 6) is not a row of its own
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "<script>alert" not in text
    assert "A S2 A M" not in text and "S2 M A M" in text  # stripes in the table
    # ranked by the objective (val_loss, lowest first), full-budget trials before the pruned one; trial 0 counts
    order = re.findall(r"<tr><td>(\d+)</td>", text)
    assert order == ["3", "2", "1", "0", "5", "4"]
    assert "alpha=0.3" in text
    assert any("warning: trial 5" in m for m in messages) and any(m.startswith("[5/5]") for m in messages)
    assert "http://" not in text and "https://" not in text  # opens offline


def test_page_leads_with_best_consensus_counts_and_objective(tmp_path):
    text = build_report(fake_run(tmp_path), **QUIET).read_text()
    head = text[:text.index("<h2>Figures</h2>")]
    assert text.index("<h2>Figures</h2>") < text.index("<h2>Leaderboard</h2>")
    best = stripe(load_spec({"d_model": 32, "layers": ARCHS[3]}))
    assert "val_loss (lower is better)" in head and "strategy tpe" in head and "2 min 5 s" in head
    best_card = head[head.index("Best architecture"):head.index("Consensus")]
    assert best in best_card and "trial 3" in best_card and "val_loss 2.35" in best_card and "4K params" in best_card
    consensus_card = head[head.index("Consensus"):head.index("Trials")]
    assert best in consensus_card and "majority vote of the top 3" in consensus_card
    assert "the same architecture as trial 3" in consensus_card
    assert "6 completed" in head and "1 pruned" in head and "1 duplicate reused" in head
    assert "<code>A</code>=attention" in head and "<code>E</code>=moe" in head    # the symbols' legend


def test_without_summary_the_best_is_the_top_full_budget_trial(tmp_path):
    run = fake_run(tmp_path, study_trials=0)
    (run / "summary.json").unlink()
    (run / "consensus.yaml").write_text(yaml.safe_dump({"d_model": 32, "layers": ["mlp", "attention"]}))
    text = build_report(run, **QUIET).read_text()
    head = text[:text.index("<h2>Figures</h2>")]
    assert "val_loss (lower is better)" in head and "wall time" not in head     # guessed from the columns
    assert "trial 3 · val_loss 2.35" in head and "an architecture no trial trained" in head


def test_leaderboard_is_compact_sortable_and_marks_duplicates(tmp_path):
    text = build_report(fake_run(tmp_path), **QUIET).read_text()
    headers = leaderboard_headers(text)
    assert headers == ["trial", "status", "architecture", "val_loss", "accuracy", "params", "FLOPs/token",
                       "state bytes"]
    board = text[text.index('<table id="leaderboard"'):text.index("</table>", text.index('<table id="leaderboard"'))]
    assert "params_json" not in board and "n_layers" not in board and 'class="sortable"' in board
    row = re.search(r"<tr><td>2</td>.*?</tr>", board).group(0)       # trial 2 carries its duplicate's mark
    assert "+1 reused" in row and "trial 6 sampled the same architecture" in row
    assert 'data-v="3000">3K<' in row and 'data-v="15000.0">15K<' in row    # human units, raw value to sort by
    pruned = re.search(r"<tr><td>4</td>.*?</tr>", board).group(0)
    assert 'class="text partial"' in pruned and 'title="stopped early by the scheduler"' in pruned
    # the raw columns one click away: every column and every row of leaderboard.csv, duplicates included
    raw = text[text.index("<details>"):text.index("</details>")]
    assert re.findall(r"<th[^>]*>([^<]*)</th>", raw) == COLUMNS.split(",")
    assert raw.count("<tr><td") == 7 and "n_layers" in raw


def test_duplicates_fold_into_the_trial_that_trained(tmp_path):
    run = read_run(fake_run(tmp_path, study_trials=0), **QUIET)
    assert len(run.trials) == 7
    assert [t.trial_id for t in run.leaderboard] == ["3", "2", "1", "0", "5", "4"]
    assert next(t for t in run.trials if t.trial_id == "2").reused_by == ["6"]
    assert run.best().trial_id == "3" and run.counts() == {"completed": 6, "pruned": 1}


def test_pareto_leaves_out_pruned_trials_unless_asked(tmp_path):
    run = read_run(fake_run(tmp_path, study_trials=0), **QUIET)
    panels = pareto_panels(run)
    assert [label for label, _, _ in panels] == ["parameters", "FLOPs / token", "state bytes"]
    for _, full, partial in panels:
        assert sorted(p[2] for p in full) == ["0", "1", "2", "3", "5"] and partial == []  # no 4 (pruned), no 6 (dup)
    for _, full, partial in pareto_panels(run, include_pruned=True):
        assert [p[2] for p in partial] == ["4"] and "4" not in [p[2] for p in full]


def test_cli_include_pruned_reaches_the_figure(tmp_path, capsys):
    from composer.cli import main

    assert main(["report", str(fake_run(tmp_path, study_trials=0)), "--out", str(tmp_path / "r"),
                 "--include-pruned"]) == 0
    assert "those stopped early apart" in (tmp_path / "r" / "report.html").read_text()
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("values, scale", [([118_400, 121_868, 168_544, 169_344, 174_444], "linear"),
                                           ([168_544, 168_700, 168_900], "linear"),
                                           ([2048, 4864, 17_536, 32_768], "log"),
                                           ([20_000, 250_000, 3_100_000], "log")])
def test_cost_axis_labels_are_human_and_do_not_overlap(values, scale):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.4, 3.6))
    ax.scatter(values, range(len(values)))
    cost_axis(ax, values)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    low, high = ax.get_xlim()
    labels = [t for t in ax.xaxis.get_majorticklabels() + ax.xaxis.get_minorticklabels()
              if t.get_text() and low <= t.get_position()[0] <= high]
    texts = [t.get_text() for t in labels]
    assert ax.get_xscale() == scale
    assert 2 <= len(labels) <= 6 and len(set(texts)) == len(texts), texts
    assert all(re.fullmatch(r"\d+(\.\d+)?[KM]", t) for t in texts), texts
    boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
    assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:])), texts
    plt.close(fig)


def test_importances_carry_a_caveat_below_20_trials(tmp_path):
    text = build_report(fake_run(tmp_path / "few", study_trials=12), **QUIET).read_text()
    assert "from only 12 finished trials, a rough indication" in text
    text = build_report(fake_run(tmp_path / "many", study_trials=24), **QUIET).read_text()
    assert "Parameter importances" in text and "rough indication" not in text


def test_report_skips_missing_parts(tmp_path):
    run = fake_run(tmp_path, study_trials=0)
    (run / "ladder.json").unlink()
    for folder in (run / "trials").iterdir():
        (folder / "metrics.jsonl").unlink(missing_ok=True)
    messages = []
    page = build_report(run, tmp_path / "elsewhere", progress=messages.append)
    assert page == tmp_path / "elsewhere" / "report.html"
    assert sorted(p.name for p in page.parent.glob("*.png")) == ["architectures.png", "best_so_far.png", "pareto.png"]
    assert messages.count("  skipped (no data in this run)") == 2
    assert "Scaling-law" not in page.read_text()


def test_cli_report_errors(tmp_path):
    from composer import UserError
    from composer.cli import report as cli_report

    parser = argparse.ArgumentParser()
    cli_report.register(parser.add_subparsers())
    args = parser.parse_args(["report", str(tmp_path)])
    with pytest.raises(UserError, match="not a search run"):
        args.func(args)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
# Clicks the params header three times (ascending, descending, back to the ranking) and records the row order.
SORT_PROBE = """<script>window.addEventListener('load',function(){
var th=Array.prototype.find.call(document.querySelectorAll('#leaderboard thead th'),
function(h){return h.textContent.trim()==='params';});
function order(){return Array.prototype.map.call(document.querySelectorAll('#leaderboard tbody tr'),
function(r){return r.cells[0].textContent;}).join(',');}
var seen=[order()];th.click();seen.push(order());th.click();seen.push(order());th.click();seen.push(order());
document.body.setAttribute('data-sort-probe',seen.join('|'));});</script>"""


def chromium(tmp_path, *args):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_in_headless_chromium(tmp_path):
    page = build_report(fake_run(tmp_path), **QUIET)
    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert 'data-images-loaded="5"' in dom  # every figure decoded (naturalWidth > 0) in the browser
    assert dom.count("<tr>") >= 7 and "&lt;script&gt;alert(1)" in dom and 'id="leaderboard"' in dom
    assert "<script>alert(1)</script>" not in dom
    # the leaderboard sorts in the browser: params ascending, descending, then the ranking again
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", SORT_PROBE + "</body>"))
    dom = chromium(tmp_path, "--dump-dom", probe.as_uri())
    assert 'data-sort-probe="3,2,1,0,5,4|5,0,1,2,3,4|4,3,2,1,0,5|3,2,1,0,5,4"' in dom


@pytest.mark.parametrize("name, content, message", [
    ("trials/1/metrics.jsonl", '{"step": 1}\n{"step": 2', "metrics.jsonl"),
    ("ladder.json", "{not json", "ladder.json is not valid JSON"),
])
def test_a_damaged_run_file_is_one_error_naming_it(tmp_path, capsys, name, content, message):
    from composer.cli import main

    run = fake_run(tmp_path, study_trials=0)
    (run / name).write_text(content)
    code = main(["report", str(run), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "r").exists()


def test_importances_are_the_evaluator_the_page_names(tmp_path):
    """Optuna's default evaluator changed (fANOVA to PED-ANOVA in 5.0): the report passes one explicitly and the
    page and figure name that one."""
    import optuna

    from composer.report.run_data import IMPORTANCE_EVALUATOR

    run = fake_run(tmp_path / "run", study_trials=24)
    study = optuna.load_study(study_name="demo", storage=f"sqlite:///{run / 'study.db'}")
    expected = optuna.importance.get_param_importances(study,
                                                       evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    assert IMPORTANCE_EVALUATOR == "PED-ANOVA" and read_run(run, progress=lambda m: None).importances == expected
    text = build_report(run, **QUIET).read_text()
    assert "Parameter importances (Optuna, PED-ANOVA)" in text and "fANOVA" not in text


def test_point_labels_never_overlap():
    """25 trials on almost the same spot: the labels drawn do not overlap; those with no free place are left
    out, the front's first."""
    import matplotlib.pyplot as plt

    from composer.report.figures import place_labels

    fig, ax = plt.subplots(figsize=(4, 3))
    points = [(1.0 + i * 1e-3, 2.0 + (i % 3) * 1e-3) for i in range(25)]
    ax.scatter(*zip(*points))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 10)                  # on this scale the 25 points are one spot
    fig.canvas.draw()
    drawn = place_labels(ax, [(x, y, f"trial_{i}", "r") for i, (x, y) in enumerate(points)])
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in drawn]
    assert 1 < len(drawn) < 25 and drawn[0].get_text() == "trial_0"
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert len(ax.texts) == len(drawn)                      # the ones left out are removed, not hidden under
    spread = place_labels(ax, [(5.0 + i, 5.0 + i, str(i), "r") for i in range(3)])
    assert len(spread) == 3
    plt.close(fig)
