"""The search report: figures from a fake run directory, a self-contained page, checked in headless Chromium."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess

import pytest
import yaml

from composer.report import build_report
from composer.report.figures import pareto_front

ARCHS = [["attention", "mlp"], ["mamba2", "mlp", "attention", "mlp"], ["gla", "mlp"], ["attention", "moe"],
         ["gated_deltanet", "mlp", "gated_deltanet", "mlp"]]
QUIET = {"progress": lambda *_: None}


def fake_run(root, with_study=True):
    """runs/<name>/ as the search writes it: leaderboard (trial order), summary.json naming the objective,
    trials/<id>/, study.db, ladder.json. Trial 4 has the lowest loss but was pruned; the accuracy column is
    there to tempt a reader that guesses the quality column instead of reading the objective."""
    run = root / "runs" / "demo"
    rows = []
    for i, layers in enumerate(ARCHS[:5]):
        folder = run / "trials" / str(i)
        folder.mkdir(parents=True)
        (folder / "spec.yaml").write_text(yaml.safe_dump({"d_model": 32, "layers": layers}))
        history = [{"step": s, "tokens": 1000 * s, "val_loss": 3.0 - 0.1 * s - 0.05 * i} for s in range(1, 6)]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
        status = "pruned" if i == 4 else "completed"
        rows.append((i, status, history[-1]["val_loss"], 0.1 * i, 1000 * (i + 1), 5000.0 * (5 - i), 64 * (i + 1),
                     "ok"))
    rows.append((5, "completed", 2.9, 0.9, 999, 1.0, 1, "<script>alert(1)</script>"))  # spec broken: still a row
    lines = ["trial,status,val_loss,accuracy,params,flops_per_token,state_bytes,note"]
    lines += [",".join(map(str, r)) for r in rows]
    (run / "leaderboard.csv").write_text("\n".join(lines) + "\n")
    (run / "summary.json").write_text(json.dumps({"objectives": [{"metric": "val_loss", "mode": "min"}]}))
    (run / "trials" / "5").mkdir()
    (run / "trials" / "5" / "spec.yaml").write_text("d_model: 32\nlayers: [nonexistent_op]\n")
    if with_study:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(study_name="demo", storage=f"sqlite:///{run / 'study.db'}")
        study.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-2, log=True) * 100
                       + t.suggest_int("n_layers", 2, 8) * 0.01, n_trials=12)
    (run / "ladder.json").write_text(json.dumps({"fits": {"A M": {"E": 1.5, "A": 20.0, "alpha": 0.3}}}))
    return run


def test_pareto_front():
    points = [(1, 3.0), (2, 2.0), (2, 2.5), (3, 2.2), (4, 1.0)]
    assert pareto_front(points, lower_is_better=True) == [(1, 3.0), (2, 2.0), (4, 1.0)]
    assert pareto_front(points, lower_is_better=False) == [(1, 3.0)]


def test_report_files_and_page(tmp_path):
    messages = []
    page = build_report(fake_run(tmp_path), progress=messages.append)
    out = page.parent
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["architectures.png", "best_so_far.png", "importances.png", "learning_curves.png", "pareto.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in out.glob("*.png"))
    text = page.read_text()
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,[A-Za-z0-9+/=]{100,}"', text)) == 5
    assert text.count("<tr><td>") == 6  # six trials
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "<script>alert" not in text
    assert "A S2 A M" not in text and "S2 M A M" in text  # stripes in the table
    # ranked by the objective (val_loss, lowest first), full-budget trials before the pruned one; trial 0 counts
    order = re.findall(r"<tr><td>(\d+)</td>", text)
    assert order == ["3", "2", "1", "0", "5", "4"]
    assert "alpha=0.3" in text
    assert any("warning: trial 5" in m for m in messages) and any(m.startswith("[5/5]") for m in messages)
    assert "http://" not in text and "https://" not in text  # opens offline


def test_report_skips_missing_parts(tmp_path):
    run = fake_run(tmp_path, with_study=False)
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
    from composer import UserError, cli_report

    parser = argparse.ArgumentParser()
    cli_report.register(parser.add_subparsers())
    args = parser.parse_args(["report", str(tmp_path)])
    with pytest.raises(UserError, match="not a search run"):
        args.func(args)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_in_headless_chromium(tmp_path):
    page = build_report(fake_run(tmp_path), **QUIET)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
           page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert 'data-images-loaded="5"' in dom  # every figure decoded (naturalWidth > 0) in the browser
    assert dom.count("<tr>") >= 7 and "&lt;script&gt;alert(1)" in dom and 'id="leaderboard"' in dom
    assert "<script>alert(1)</script>" not in dom
