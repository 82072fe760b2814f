"""The report's confirmation section, from `runs/<name>/confirm.json` (written by `composer confirm`).

The verdicts first, in words; then the target loss of each candidate at each size (mean, spread and interval
over seeds), the proxy -> target rank agreement beside the seed-to-seed noise floor, and two figures: the
search's proxy score against the target loss (error bars: the interval over seeds), and each candidate's
margin over the baseline per size (error bars: the paired interval). How each candidate was sized is one
click away.
"""

from __future__ import annotations

import html
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from composer.units import human  # noqa: E402

CONFIRM_FILE = "confirm.json"


def load_confirm(run_path: Path) -> dict[str, Any] | None:
    path = Path(run_path) / CONFIRM_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) and "results" in data else None


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def interval_words(seeds: int) -> str:
    """What the error bars are: Student-t intervals of a mean over few seeds (n - 1 degrees of freedom: with 2
    seeds the half-width is 12.7 standard errors, so wide bars are the statistics, not a bug)."""
    return f"95% t-interval over {seeds} seeds (t with {max(seeds - 1, 1)} d.f.)"


def display_name(confirm: dict[str, Any], name: str) -> str:
    """A candidate's name with the baseline it also is: `transformer (trial_1)`."""
    c = next((c for c in confirm["candidates"] if c["name"] == name), {})
    baseline = next((a for a in c.get("aliases", []) if a != "consensus"), None) if "baseline" in c.get(
        "roles", []) else None
    return f"{baseline} ({name})" if baseline else name


def words(text: str) -> str:
    """A verdict as HTML: escaped, its `code` spans (option names, commands) as <code>, never literal backticks."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _labels(confirm: dict[str, Any]) -> list[str]:
    return [s["label"] for s in confirm["sizes"] if confirm["results"].get(s["label"])]


def proxy_target_figure(confirm: dict[str, Any]) -> bytes | None:
    """Per size: each candidate's proxy score (the search's objective) against its target loss, with the
    interval over seeds; candidates without a proxy score are left out (the caption says which)."""
    labels = _labels(confirm)
    proxies = {c["name"]: c["proxy"] for c in confirm["candidates"] if c["proxy"] is not None}
    if not labels or len(proxies) < 2:
        return None
    objective = confirm["objective"]
    fig, axes = plt.subplots(1, len(labels), figsize=(4.2 * len(labels), 3.6), squeeze=False)
    seeds = confirm["config"]["seeds"]
    clipped = False
    for ax, label in zip(axes[0], labels):
        results = confirm["results"][label]
        for i, name in enumerate(n for n in proxies if n in results):
            r = results[name]
            lo, hi = r["ci"]
            clipped = clipped or lo < 0
            lo = max(lo, 0.0)               # a loss is never below 0; a t-interval of 2 seeds can reach there
            yerr = [[r["mean"] - lo], [hi - r["mean"]]] if lo == lo and hi == hi else None
            ax.errorbar([proxies[name]], [r["mean"]], yerr=yerr, fmt="o", capsize=3, color=f"C{i % 10}")
            ax.annotate(name, (proxies[name], r["mean"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        rho = confirm["transfer"].get(label, {}).get("spearman")
        title = f"{label}" + (f": Spearman {rho['value']:+.2f}" if rho else "")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"proxy: {objective['metric']} in the search "
                      f"({'lower' if objective['mode'] == 'min' else 'higher'} is better)")
        ax.set_ylabel(f"target val_loss (mean, {interval_words(seeds)})" + ("; clipped at 0" if clipped else ""))
        ax.margins(0.15)
    fig.tight_layout()
    return _png(fig)


def baseline_figure(confirm: dict[str, Any]) -> bytes | None:
    """Per size, each candidate's margin over the (first) baseline: baseline loss - candidate loss, paired by
    seed, with its interval; above 0 the candidate is better."""
    labels = _labels(confirm)
    rows = []
    for label in labels:
        for c in confirm["comparisons"].get(label, []):
            if c["kind"].endswith("_vs_baseline"):
                rows.append((label, c))
    if not rows:
        return None
    against = rows[0][1]["against"]
    rows = [(label, c) for label, c in rows if c["against"] == against]
    shown = display_name(confirm, against)
    names = list(dict.fromkeys(c["candidate"] for _, c in rows))
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.6 * len(labels) * len(names) ** 0.5 + 2), 3.6))
    for j, name in enumerate(names):
        xs, ys, errs = [], [], [[], []]
        for i, label in enumerate(labels):
            c = next((c for lab, c in rows if lab == label and c["candidate"] == name), None)
            if c is None:
                continue
            a = c["advantage"]
            lo, hi = a["ci"]
            xs.append(i + (j - (len(names) - 1) / 2) * width)
            ys.append(a["mean"])
            errs[0].append(a["mean"] - lo if lo == lo else 0)
            errs[1].append(hi - a["mean"] if hi == hi else 0)
        ax.bar(xs, ys, width=width * 0.9, yerr=errs, capsize=3, color=f"C{j % 10}", label=name)
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel("size")
    ax.set_ylabel(f"{shown} loss - candidate loss (nats)")
    ax.set_title(f"margin over {shown} (above 0: better;\n{interval_words(confirm['config']['seeds'])}, "
                 "paired by seed)", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _results_table(confirm: dict[str, Any]) -> str:
    e = html.escape
    labels = [s["label"] for s in confirm["sizes"]]
    head = "".join(f"<th>{e(label)}</th>" for label in labels)
    rows = []
    for c in confirm["candidates"]:
        proxy = "" if c["proxy"] is None else f"{c['proxy']:.4g}"
        cells = [f'<td class="arch">{e(c["name"])}</td>', f'<td class="text">{e(" + ".join(c["roles"]))}</td>',
                 f'<td class="arch">{e(c["stripe"])}</td>', f"<td>{proxy}</td>"]
        for label in labels:
            r = confirm["results"].get(label, {}).get(c["name"])
            text = "" if r is None else (f"{r['mean']:.4f} ± {r['std']:.4f} [{r['ci'][0]:.4f}, {r['ci'][1]:.4f}]"
                                         f" n={r['n']}")
            cells.append(f"<td>{e(text)}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    metric = e(confirm["objective"]["metric"])
    return (f'<table id="confirm-results"><thead><tr><th class="text">candidate</th><th class="text">role</th>'
            f'<th class="text">architecture</th><th>proxy ({metric})</th>{head}</tr></thead>\n<tbody>'
            + "\n".join(rows) + "</tbody></table>")


def _transfer_table(confirm: dict[str, Any]) -> str:
    e = html.escape
    rows = []
    for s in confirm["sizes"]:
        t = confirm["transfer"].get(s["label"], {})
        if "spearman" not in t:
            rows.append(f'<tr><td>{e(s["label"])}</td><td colspan="4" class="text">{e(t.get("error", ""))}</td></tr>')
            continue
        rho, tau, floor = t["spearman"], t["kendall"], t["noise_floor"]
        left = "; ".join(f"{k} ({v})" for k, v in t["excluded"].items())
        rows.append(f'<tr><td>{e(s["label"])}</td><td>{rho["value"]:+.2f} [{rho["ci"][0]:+.2f}, {rho["ci"][1]:+.2f}]'
                    f'</td><td>{tau["value"]:+.2f} [{tau["ci"][0]:+.2f}, {tau["ci"][1]:+.2f}]</td>'
                    f'<td>{floor["spearman"]:+.2f} / {floor["kendall"]:+.2f}</td><td>{t["n"]}</td>'
                    f'<td class="text">{e(left)}</td></tr>')
    return ('<table id="confirm-transfer"><thead><tr><th>size</th><th>Spearman [95%]</th><th>Kendall [95%]</th>'
            '<th>noise floor (Spearman / Kendall)</th><th>candidates</th><th class="text">left out</th></tr></thead>'
            "<tbody>" + "\n".join(rows) + "</tbody></table>")


def _sizing_details(confirm: dict[str, Any]) -> str:
    e = html.escape
    rows = "".join(f'<tr><td class="arch">{e(s["candidate"])}</td><td>{e(s["size"])}</td>'
                   f'<td class="text">{e(s["description"])}</td></tr>' for s in confirm["sizing"])
    return ("<details><summary>How each candidate was sized (parameters requested and got, depth, width "
            "rounding)</summary><table><thead><tr><th class=\"text\">candidate</th><th>size</th>"
            f'<th class="text">sizing</th></tr></thead><tbody>{rows}</tbody></table></details>')


def confirmation_section(run_path: Path, out: Path, progress: Callable[[str], None],
                         figure: Callable[[str, bytes], str]) -> str:
    """The section's HTML (empty without a confirm.json); its figures are also written to `out`.
    `figure(title, png)` renders one figure the way the rest of the page does."""
    confirm = load_confirm(run_path)
    if confirm is None:
        return ""
    e = html.escape
    config = confirm["config"]
    budget = (f"{human(config['tokens'])} tokens per trial" if config.get("tokens") is not None
              else f"{config['tokens_per_param']:g} tokens per parameter of each size")
    task = ", ".join(f"{k}={v}" for k, v in confirm["task"].items() if k != "name")
    parts = ["<h2>Confirmation at scale</h2>",
             f'<p class="lede">{len(confirm["candidates"])} candidates trained at '
             f'{", ".join(e(s["label"]) for s in confirm["sizes"])} {e(config["count"].replace("_", "-"))} parameters '
             f'on {e(confirm["task"]["name"])} ({e(task)}), {config["seeds"]} seeds each, {e(budget)}; the proxy is '
             f'the search\'s {e(confirm["objective"]["metric"])}.</p>']
    if confirm.get("verdict"):
        parts.append(f'<p id="confirm-verdict"><b>{words(confirm["verdict"])}</b></p>')
    parts.append("<ul>" + "".join(f"<li>{words(v)}</li>" for v in confirm.get("verdicts", [])) + "</ul>")
    if confirm.get("missing"):
        parts.append(f"<p>{len(confirm['missing'])} planned trials have no result yet (rerun "
                     "<code>composer confirm</code> to finish them).</p>")
    parts += ["<h3>Target loss per size</h3>", _results_table(confirm),
              "<h3>Proxy to target rank agreement</h3>", _transfer_table(confirm)]
    shown = []
    for name, title, make in (
            ("confirm_proxy_target", "Proxy score in the search against target loss at each size",
             lambda: proxy_target_figure(confirm)),
            ("confirm_baseline", "Margin over the baseline per size", lambda: baseline_figure(confirm))):
        progress(f"[confirm] {title}")
        png = make()
        if png is None:
            progress("  skipped (no data)")
            continue
        (out / f"{name}.png").write_bytes(png)
        shown.append(figure(title, png))
    if shown:
        parts.append(f'<div class="figures">{"".join(shown)}</div>')
    parts.append(_sizing_details(confirm))
    parts += [f"<p class=\"legend\">note: {e(n)}</p>" for n in confirm.get("notes", [])]
    return '<section id="confirmation">' + "\n".join(parts) + "</section>"
