"""`composer report runs/<name>`: one self-contained HTML page (images inlined as base64) plus the PNGs.

The page leads with what a reader wants first (the best architecture, the consensus, counts per status, wall
time and the objective), then the figures, then a compact leaderboard (human units; click a header to sort)
with the raw leaderboard.csv columns one click away. Everything from the run is HTML-escaped; the page loads
nothing from the network. Its only scripts are the column sort and a self-check that counts the figures that
decoded (`data-images-loaded` on <body>, used by tests).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import composer.report.figures as figures
from composer.canonical_form import arch_id, stripe
from composer.report.confirmation import confirmation_section
from composer.report.run_data import RunData, Trial, read_run
from composer.spec import ArchSpec, iter_layers
from composer.units import duration, human, metric

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{margin-bottom:.2em}.lede{color:#555;margin-top:0}code,.arch{font-family:ui-monospace,monospace}
.cards{display:flex;flex-wrap:wrap;gap:1em;margin:1em 0}
.card{border:1px solid #ddd;border-radius:6px;padding:.7em 1em;flex:1 1 260px;background:#fafafa}
.card h3{margin:0 0 .3em;font-size:13px;text-transform:uppercase;letter-spacing:.04em;color:#666}
.card .stripe{font-family:ui-monospace,monospace;font-size:18px;font-weight:600;margin:.2em 0}
.card p{margin:.2em 0;font-size:14px}.legend{color:#555;font-size:13px}
.status{display:inline-block;padding:0 .5em;border-radius:3px;background:#eee;margin:0 .3em .2em 0}
.status.completed{background:#dff0d8}.status.failed,.status.diverged{background:#f8d7da}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right;
white-space:nowrap}th{background:#f3f3f3;cursor:pointer;user-select:none}td.arch,td.text,th.arch,th.text{text-align:left}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
tr:has(td.partial) td{color:#777}.dup{font-size:11px;color:#06c;margin-left:.3em}
.scroll{overflow-x:auto}details{margin:1em 0}summary{cursor:pointer;color:#06c}
.figures{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:0 2em;align-items:end}
figure.wide{grid-column:1/-1}img{max-width:100%;margin:.5em 0}figure{margin:1em 0}
figcaption{color:#666;font-size:13px}"""

SCRIPTS = """<script>
function sortKey(cell){var v=cell.getAttribute('data-v');if(v===null)v=cell.textContent.trim();
if(v==='')return null;var n=Number(v);return isNaN(n)?v.toLowerCase():n;}
document.querySelectorAll('table.sortable').forEach(function(table){
var body=table.tBodies[0],ranked=Array.prototype.slice.call(body.rows);
table.querySelectorAll('thead th').forEach(function(th,col){th.addEventListener('click',function(){
var state=th.getAttribute('aria-sort'),asc=state!=='ascending';
table.querySelectorAll('thead th').forEach(function(h){h.removeAttribute('aria-sort');});
if(state==='descending'){ranked.forEach(function(r){body.appendChild(r);});return;}
th.setAttribute('aria-sort',asc?'ascending':'descending');
var rows=ranked.slice();
rows.sort(function(a,b){var x=sortKey(a.cells[col]),y=sortKey(b.cells[col]);
if(x===null||y===null)return (x===null)-(y===null);
if(typeof x!==typeof y)return typeof x==='number'?-1:1;
return (x<y?-1:x>y?1:0)*(asc?1:-1);});
rows.forEach(function(r){body.appendChild(r);});});});});
window.addEventListener('load',function(){var n=0;
document.querySelectorAll('img').forEach(function(i){if(i.complete&&i.naturalWidth>0)n++;});
document.body.setAttribute('data-images-loaded',String(n));});
</script>"""

MAX_ROWS = 200


def build_report(run_dir: str | Path, out: str | Path | None = None, progress=print,
                 include_pruned: bool = False) -> Path:
    """Write `<out>/report.html` and `<out>/*.png` (default out: `<run_dir>/report`); returns the page path.

    `include_pruned` draws the trials stopped early on the Pareto figure too (apart from the front).
    """
    run = read_run(run_dir, progress)
    out = Path(out) if out is not None else Path(run_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    few = run.importance_trials < figures.MIN_IMPORTANCE_TRIALS
    makers = [
        ("pareto", "Pareto front: quality against parameters, FLOPs per token and state bytes"
         + (", and the measured costs" if figures.measured_axes(run) else "")
         + (" (all trials; those stopped early apart)" if include_pruned else " (full-budget trials)"),
         lambda: figures.pareto_figure(run, include_pruned)),
        ("best_so_far", "Best so far against trial number", lambda: figures.best_so_far_figure(run)),
        ("learning_curves", "Learning curves of the top trials", lambda: figures.learning_curves_figure(run)),
        ("architectures", "Architectures of the top trials", lambda: figures.stripes_figure(run)),
        ("importances", "Parameter importances (Optuna, fANOVA)"
         + (f": from only {run.importance_trials} finished trials, a rough indication (trust them from about "
            f"{figures.MIN_IMPORTANCE_TRIALS})" if few else ""),
         lambda: figures.importances_figure(run.importances, run.importance_trials)),
    ]
    sections = []
    for i, (name, title, make) in enumerate(makers, 1):
        progress(f"[{i}/{len(makers)}] {title}")
        png = make()
        if png is None:
            progress("  skipped (no data in this run)")
            continue
        (out / f"{name}.png").write_bytes(png)
        sections.append(_figure(title, png, wide=name == "pareto"))
    page = _page(run, sections, _scaling_section(run), confirmation_section(run.path, out, progress, _figure))
    path = out / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    progress(f"wrote {path}")
    return path


def _figure(title: str, png: bytes, wide: bool = False) -> str:
    data = base64.b64encode(png).decode("ascii")
    css = ' class="wide"' if wide else ""
    return (f'<figure{css}><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
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


# -- the head of the page: objective, best, consensus, counts ---------------------------------------------------

def _stripe_of(trial: Trial) -> str:
    if trial.row.get("stripe"):
        return str(trial.row["stripe"])
    return stripe(trial.spec) if trial.spec is not None else ""


def _objective_text(run: RunData) -> str:
    objectives = run.objectives
    if not objectives:
        return "no quality column found"
    return ", ".join(f"{o['metric']} ({'lower' if o.get('mode') == 'min' else 'higher'} is better)"
                     for o in objectives)


def _header(run: RunData) -> str:
    e = html.escape
    lede = [f"objective: <b>{e(_objective_text(run))}</b>"]
    if run.summary.get("strategy"):
        lede.append(f"strategy {e(str(run.summary['strategy']))}")
    trials = f"{len(run.trials)} trials"
    if isinstance(run.summary.get("elapsed_s"), (int, float)):
        trials += f" in {duration(run.summary['elapsed_s'])} (wall time)"
    lede.append(trials)
    volume = run.summary.get("hypervolume")
    if isinstance(volume, dict) and isinstance(volume.get("hypervolume"), (int, float)):
        reference = ", ".join(f"{v:.4g}" for v in volume.get("reference_point") or [])
        lede.append(f"Pareto front hypervolume {volume['hypervolume']:.4g} (reference point [{e(reference)}])")
    cards = [_best_card(run), _consensus_card(run), _counts_card(run)]
    ops = [layer.op for spec in _specs_shown(run) for layer in iter_layers(spec.layers)]
    legend = " ".join(f"<code>{e(figures.op_symbol(op))}</code>={e(op)}" for op in dict.fromkeys(ops))
    return (f'<p class="lede">{" · ".join(lede)}</p>\n<section class="cards">{"".join(c for c in cards if c)}'
            f'</section>\n' + (f'<p class="legend">Symbols: {legend}</p>' if legend else ""))


def _card(title: str, arch: str, lines: list[str], css: str = "") -> str:
    stripe_html = f'<div class="stripe">{html.escape(arch)}</div>' if arch else ""
    body = "".join(f"<p>{line}</p>" for line in lines)
    return f'<div class="card {css}"><h3>{html.escape(title)}</h3>{stripe_html}{body}</div>'


def _best_card(run: RunData) -> str:
    best = run.best()
    if best is None:
        return _card("Best architecture", "", ["no trial finished its full budget yet"], "best")
    facts = [f"trial {html.escape(best.trial_id)}"]
    for o in run.objectives:
        value = best.row.get(o["metric"])
        if isinstance(value, (int, float)):
            facts.append(f"{html.escape(o['metric'])} {metric(value)}")
    if isinstance(best.row.get("params"), (int, float)):
        facts.append(f"{human(best.row['params'])} params")
    lines = [" · ".join(facts)]
    if best.reused_by:
        lines.append(f"also sampled as trial {', '.join(map(html.escape, best.reused_by))} (result reused)")
    return _card("Best architecture", _stripe_of(best), lines, "best")


def _consensus_card(run: RunData) -> str:
    if run.consensus is None:
        return ""
    lines = [html.escape(run.consensus.description or "per-layer majority vote of the top candidates")]
    consensus_id = arch_id(run.consensus)
    same = next((t for t in run.leaderboard if t.row.get("arch_id") == consensus_id), None)
    if same is not None:
        lines.append(f"the same architecture as trial {html.escape(same.trial_id)}")
    else:
        lines.append("an architecture no trial trained (<code>consensus.yaml</code>, a valid spec)")
    return _card("Consensus", stripe(run.consensus), lines)


def _counts_card(run: RunData) -> str:
    chips = "".join(f'<span class="status {html.escape(status)}">{n} {html.escape(status)}</span>'
                    for status, n in run.counts().items())
    lines = [chips or "no trials yet"]
    reused = sum(len(t.reused_by) for t in run.trials)
    if reused:
        lines.append(f"{reused} duplicate{'s' if reused > 1 else ''} reused an earlier result")
    return _card("Trials", "", lines)


def _specs_shown(run: RunData) -> list[ArchSpec]:
    specs = [t.spec for t in run.leaderboard[:MAX_ROWS] if t.spec is not None]
    return specs + ([run.consensus] if run.consensus is not None else [])


# -- the leaderboard ----------------------------------------------------------------------------------------------

@dataclass
class Column:
    label: str
    value: Callable[[Trial], Any]           # the raw value: what the column sorts by
    text: Callable[[Any], str] = str        # how the cell reads
    css: str = ""


def _number(key: str) -> Callable[[Trial], Any]:
    return lambda t: t.row.get(key) if isinstance(t.row.get(key), (int, float)) else None


def _columns(run: RunData) -> list[Column]:
    metrics = [o["metric"] for o in run.objectives]
    metrics += [k for k in ("val_loss", "accuracy") if k in run.columns and k not in metrics]
    columns = [
        Column("trial", lambda t: int(t.trial_id) if t.trial_id.isdigit() else t.trial_id),
        Column("status", lambda t: t.status, css="text"),
        Column("architecture", _stripe_of, css="arch"),
        *[Column(m, _number(m), metric) for m in metrics[:4]],
        Column("params", _number("params"), human),
        Column("FLOPs/token", _number("flops_per_token"), human),
        Column("state bytes", _number("state_bytes"), human),
        Column("steps", _number("step"), human),
        Column("train time", _number("train_time_s"), duration),
    ]
    shown = run.leaderboard[:MAX_ROWS]
    return [c for c in columns if any(c.value(t) not in (None, "") for t in shown)]


def _leaderboard(run: RunData) -> str:
    columns = _columns(run)
    head = "".join(f'<th scope="col"{_css(c)}>{html.escape(c.label)}</th>' for c in columns)
    rows = []
    for trial in run.leaderboard[:MAX_ROWS]:
        cells = [f"<td>{html.escape(trial.trial_id)}</td>"]       # a row starts `<tr><td>N</td>`: N is the trial
        for c in columns[1:]:
            value = c.value(trial)
            text = "" if value in (None, "") else c.text(value)
            css, title, extra = c.css, "", ""
            if c.label == "status":
                css += "" if trial.full_budget else " partial"
                if trial.row.get("reason"):
                    title = f' title="{html.escape(str(trial.row["reason"]))}"'
                if trial.reused_by:
                    extra = (f'<span class="dup" title="trial {", ".join(trial.reused_by)} sampled the same '
                             f'architecture and reused this result">+{len(trial.reused_by)} reused</span>')
            sort = "" if value is None else html.escape(str(value))
            css = f' class="{css.strip()}"' if css.strip() else ""
            cells.append(f'<td{css} data-v="{sort}"{title}>{html.escape(text)}{extra}</td>')
        rows.append(f'<tr>{"".join(cells)}</tr>')
    more = len(run.leaderboard) - MAX_ROWS
    note = f"<p>{more} more in leaderboard.csv.</p>" if more > 0 else ""
    return (f'<table id="leaderboard" class="sortable"><thead><tr>{head}</tr></thead>\n<tbody>\n'
            + "\n".join(rows) + f"\n</tbody></table>{note}")


def _css(column: Column) -> str:
    return f' class="{column.css}"' if column.css else ""


def _raw_table(run: RunData) -> str:
    """Every column of leaderboard.csv, every row (reused duplicates too), in trial order."""
    columns = run.columns
    head = "".join(f'<th scope="col" class="text">{html.escape(c)}</th>' for c in columns)
    order = sorted(run.trials, key=lambda t: (not t.trial_id.isdigit(), int(t.trial_id) if t.trial_id.isdigit()
                                              else 0, t.trial_id))
    rows = []
    for trial in order[:MAX_ROWS]:
        cells = "".join(f'<td class="text">{html.escape(str(trial.row.get(c, "")))}</td>' for c in columns)
        rows.append(f"<tr>{cells}</tr>")
    return (f'<details><summary>All columns of leaderboard.csv ({len(run.trials)} rows, in trial order)</summary>'
            f'<div class="scroll"><table id="raw" class="sortable"><thead><tr>{head}</tr></thead>\n<tbody>\n'
            + "\n".join(rows) + "\n</tbody></table></div></details>")


def _page(run: RunData, sections: list[str], scaling: str, confirmation: str = "") -> str:
    name = html.escape(run.path.name)
    ranked = html.escape(run.quality_key) if run.quality_key else "trial number"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Composer report: {name}</title>
<style>{STYLE}</style></head>
<body>
<h1>Search run <code>{name}</code></h1>
{_header(run)}
{confirmation}
<h2>Figures</h2>
<div class="figures">{"".join(sections)}</div>
<h2>Leaderboard</h2>
<p>Ranked by {ranked}, full-budget trials first. Click a column header to sort; a third click restores the
ranking.</p>
{_leaderboard(run)}
{_raw_table(run)}
{scaling}
{SCRIPTS}
</body></html>
"""
