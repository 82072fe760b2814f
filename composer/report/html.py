"""`composer report runs/<name>`: one self-contained HTML page (images inlined as base64) plus the PNGs.

Everything from the run is HTML-escaped; the page loads nothing from the network and runs no script except
a short self-check that counts the figures that decoded (`data-images-loaded` on <body>, used by tests).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from composer.graph import stripe
from composer.report import figures
from composer.report.run_data import RunData, read_run

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td.arch{text-align:left;font-family:monospace}img{max-width:100%;margin:.5em 0}
figure{margin:1em 0}figcaption{color:#666;font-size:13px}"""

SELF_CHECK = """<script>window.addEventListener('load',function(){var n=0;
document.querySelectorAll('img').forEach(function(i){if(i.complete&&i.naturalWidth>0)n++;});
document.body.setAttribute('data-images-loaded',String(n));});</script>"""

MAX_ROWS = 50


def build_report(run_dir: str | Path, out: str | Path | None = None, progress=print) -> Path:
    """Write `<out>/report.html` and `<out>/*.png` (default out: `<run_dir>/report`); returns the page path."""
    run = read_run(run_dir, progress)
    out = Path(out) if out is not None else Path(run_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    makers = [
        ("pareto", "Pareto front: quality against parameters, FLOPs per token and state bytes",
         lambda: figures.pareto_figure(run)),
        ("best_so_far", "Best so far against trials", lambda: figures.best_so_far_figure(run)),
        ("learning_curves", "Learning curves of the top trials", lambda: figures.learning_curves_figure(run)),
        ("architectures", "Architectures of the top trials", lambda: figures.stripes_figure(run)),
        ("importances", "Parameter importances (Optuna)", lambda: figures.importances_figure(run.importances)),
    ]
    sections = []
    for i, (name, title, make) in enumerate(makers, 1):
        progress(f"[{i}/{len(makers)}] {title}")
        png = make()
        if png is None:
            progress("  skipped (no data in this run)")
            continue
        (out / f"{name}.png").write_bytes(png)
        sections.append(_figure(title, png))
    scaling = _scaling_section(run)
    page = _page(run, sections, scaling)
    path = out / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    progress(f"wrote {path}")
    return path


def _figure(title: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(title)}</figcaption></figure>")


def _scaling_section(run: RunData) -> str:
    if run.ladder is None:
        return ""
    parts = ["<h2>Scaling-law fits</h2>"]
    fits = run.ladder.get("fits") or {}
    if fits:
        parts.append("<table><tr><th>architecture</th><th>fit</th></tr>")
        for arch, fit in fits.items():
            summary = ", ".join(f"{k}={v:.4g}" for k, v in fit.items() if isinstance(v, (int, float)))
            parts.append(f'<tr><td class="arch">{html.escape(str(arch))}</td><td>{html.escape(summary)}</td></tr>')
        parts.append("</table>")
    plot = run.path / "fits.png"
    if plot.exists():
        parts.append(_figure("Scaling-law fits (from the ladder)", plot.read_bytes()))
    return "\n".join(parts)


def _cell(value: object) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return html.escape(text)


def _page(run: RunData, sections: list[str], scaling: str) -> str:
    columns = [c for c in dict.fromkeys(k for t in run.trials for k in t.row) if c not in ("trial_id",)]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["trial", "architecture", *columns])
    rows = []
    for t in run.trials[:MAX_ROWS]:
        arch = stripe(t.spec) if t.spec is not None else ""
        cells = "".join(f"<td>{_cell(t.row.get(c, ''))}</td>" for c in columns)
        rows.append(f'<tr><td>{html.escape(t.trial_id)}</td><td class="arch">{html.escape(arch)}</td>{cells}</tr>')
    name = html.escape(run.path.name)
    quality = html.escape(f"{run.quality_key} ({'lower' if run.lower_is_better else 'higher'} is better)"
                          if run.quality_key else "no quality column found")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Composer report: {name}</title>
<style>{STYLE}</style></head>
<body>
<h1>Search run {name}</h1>
<p>{len(run.trials)} trials; ranked by {quality}.</p>
<h2>Leaderboard</h2>
<table id="leaderboard"><tr>{head}</tr>
{"".join(rows)}
</table>
<h2>Figures</h2>
{"".join(sections)}
{scaling}
{SELF_CHECK}
</body></html>
"""
