"""A confirmation as text: the plan (candidates and how each was sized) and the results (tables and verdicts).

Both read the plain data of `confirm.json` (or `ConfirmPlan.describe()`), so a finished confirmation can be
printed again from its file.
"""

from __future__ import annotations

from typing import Any

from composer.units import human


def _task_words(task: dict[str, Any]) -> str:
    params = ", ".join(f"{k}={v}" for k, v in task.items() if k != "name")
    return f"{task['name']}" + (f" ({params})" if params else "")


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return ["  " + line for line in lines]


def seeds_words(config: dict[str, Any]) -> str:
    if config["seeds"] == "auto":
        return (f"seeds: auto (2 each; the best trial and the first baseline up to {config['max_seeds']} while their "
                f"difference is undecided and its interval's half-width is above {config['resolution']:g} nats)")
    return f"{config['seeds']} seeds each"


def format_plan(plan: dict[str, Any]) -> str:
    config = plan["config"]
    budget = (f"{human(config['tokens'])} tokens per trial" if config.get("tokens") is not None
              else f"{config['tokens_per_param']:g} tokens per parameter of the size's target")
    objective = plan["objective"]
    counts, splits = plan["trials"], plan["splits"]
    grid = ", ".join(f"{lr:g}" for lr in plan["lr_grid"])
    sweep = (f"learning rate {grid} (no sweep)" if len(plan["lr_grid"]) == 1 else
             f"learning rates {grid} swept at seed 0 (extended up to {config['lr_extend']} steps at an end)")
    lines = [f"confirm {plan['run']}: {len(plan['candidates'])} candidates x {len(plan['sizes'])} sizes; {sweep}; "
             f"{seeds_words(config)}",
             f"  trials: {counts['first_round']} in the first round, {counts['at_least']} to {counts['at_most']} "
             "in all",
             f"  task {_task_words(plan['task'])}; {budget}; proxy: the search's {objective['metric']} "
             f"({'lower' if objective['mode'] == 'min' else 'higher'} is better)",
             f"  the learning rate is chosen on the {splits['select']} split; the verdict reads the {splits['judge']} "
             "split" + (f" ({splits['comparable']} loss beside it)" if splits.get("comparable") else ""),
             "candidates"]
    for c in plan["candidates"]:
        proxy = f"{objective['metric']} {c['proxy']:.4g}" if c["proxy"] is not None else "no proxy score"
        notes = f"  ({'; '.join(c['notes'])})" if c["notes"] else ""
        lines.append(f"  {c['name']:<16s} {'+'.join(c['roles']):<18s} {proxy:<22s} {c['stripe']}{notes}")
    lines.append(f"sizing ({config['count'].replace('_', '-')} parameters requested -> got, each within "
                 f"{config['tolerance'] / 2:.1%}; widths rounded to hardware-friendly multiples)")
    for s in plan["sizing"]:
        lines.append(f"  {s['candidate']:<16s} {s['size']:>6s}  {s['description']}")
    ratio = plan.get("tokens_per_param", {})
    tokens = ", ".join(f"{label}: {human(n)}" + (f" ({ratio[label]:.3g} per parameter)" if label in ratio else "")
                       for label, n in plan["tokens"].items())
    lines.append(f"training tokens per trial: {tokens}")
    lines += [f"note: {n}" for n in plan["notes"]]
    return "\n".join(lines)


def format_results(result: dict[str, Any]) -> str:
    level = f"{result['statistics']['level']:.0%}"
    metric = result["statistics"].get("metric", "val_loss")
    labels = [s["label"] for s in result["sizes"]]
    lines = [f"{metric} over seeds at each candidate's chosen learning rate: mean ± std [{level} t-interval], "
             "seeds, learning rate, counted parameters"]
    rows = [["candidate", "proxy", *labels]]
    for c in result["candidates"]:
        cells = [c["name"], "-" if c["proxy"] is None else f"{c['proxy']:.4g}"]
        for label in labels:
            r = result["results"].get(label, {}).get(c["name"])
            if r is None:
                cells.append("-")
                continue
            cells.append(f"{r['mean']:.4f} ± {r['std']:.4f} [{r['ci'][0]:.4f}, {r['ci'][1]:.4f}] n={r['n']}"
                         + (f" lr={r['lr']:.3g}" if r.get("lr") else "") + (f" {human(r['params'])}"
                                                                            if r.get("params") else ""))
        rows.append(cells)
    lines += _table(rows)
    beside = [key for key in ("val_loss", "holdout_loss") if key != metric and any(
        key in r for size in result["results"].values() for r in size.values())]
    if beside:
        words = {"val_loss": "val_loss (the split that chose the learning rate)",
                 "holdout_loss": "holdout_loss (validation + test: nanoGPT's split, the last tenth by default)"}
        lines.append("beside it, means over the same seeds: " + "; ".join(words[k] for k in beside))
        rows = [["candidate", *(f"{label} {key.split('_')[0]}" for label in labels for key in beside)]]
        for c in result["candidates"]:
            cells = [c["name"]]
            for label in labels:
                r = result["results"].get(label, {}).get(c["name"], {})
                cells += ["-" if key not in r else f"{r[key]:.4f}" for key in beside]
            rows.append(cells)
        lines += _table(rows)
    lines.append(f"proxy -> target rank agreement ({level} bootstrap over seeds) beside the seed-to-seed noise floor")
    for label in labels:
        t = result["transfer"].get(label, {})
        if "spearman" not in t:
            lines.append(f"  {label:>6s}  {t.get('error', 'no results')}")
            continue
        rho, tau, floor = t["spearman"], t["kendall"], t["noise_floor"]
        excluded = f"; left out: {', '.join(f'{k} ({v})' for k, v in t['excluded'].items())}" if t["excluded"] else ""
        lines.append(f"  {label:>6s}  Spearman {rho['value']:+.2f} [{rho['ci'][0]:+.2f}, {rho['ci'][1]:+.2f}]  "
                     f"Kendall {tau['value']:+.2f} [{tau['ci'][0]:+.2f}, {tau['ci'][1]:+.2f}]  over {t['n']}  |  "
                     f"floor Spearman {floor['spearman']:+.2f} Kendall {floor['kendall']:+.2f}{excluded}")
    lines.append(f"paired differences in {metric} (against - candidate, nats; positive: the candidate is better; "
                 f"{level} t-interval, bootstrap beside)")
    rows = [["size", "candidate", "against", "difference", "t-interval", "bootstrap", "seeds"]]
    for label in labels:
        for c in result["comparisons"].get(label, []):
            a = c["advantage"]
            rows.append([label, c["candidate"], c["against"], f"{a['mean']:+.4f}",
                         f"[{a['t_ci'][0]:+.4f}, {a['t_ci'][1]:+.4f}]",
                         f"[{a['bootstrap_ci'][0]:+.4f}, {a['bootstrap_ci'][1]:+.4f}]", str(a["n"])])
    if len(rows) > 1:
        lines += _table(rows)
    lines.append("verdicts")
    lines += [f"  {v}" for v in result["verdicts"]] or ["  none: no comparison has results yet"]
    if result.get("missing"):
        lines.append(f"missing: {len(result['missing'])} planned trials have no result")
    lines += [f"note: {n}" for n in result.get("notes", [])]
    return "\n".join(lines)


def format_confirm(result: dict[str, Any]) -> str:
    """The plan, then the results."""
    return format_plan(result) + "\n" + format_results(result)
