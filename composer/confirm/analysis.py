"""From finished confirmation trials to statistics and verdicts (the body of `runs/<name>/confirm.json`).

Per size: each candidate's target loss over seeds (mean, std, 95% t-interval); the proxy -> target rank
agreement (Spearman, Kendall; bootstrap intervals resampling seeds) over the candidates the search scored,
beside the seed-to-seed noise floor of those candidates; and paired-by-seed differences with verdicts:

* the best trial of the search against each baseline: the comparison the search promises;
* the consensus against each baseline and against the best trial, when it is a different architecture;
* the candidate with the lowest target loss against each baseline, when it is neither of those (it was
  picked by the very numbers compared, so this one is optimistic and says so).

A difference is `against - candidate` in the target loss (nats): positive when the candidate is better.
Intervals are paired by seed; the primary interval is the Student-t one (see scaling/stats.py for why).
"""

from __future__ import annotations

import math
from typing import Any

from composer.confirm.candidates import TRANSFORMER, Candidate, proxy_loss
from composer.confirm.plan import ConfirmPlan
from composer.units import human
from scaling.stats import mean_interval, paired_difference, rank_agreement_interval, seed_noise_floor

METRIC = "val_loss"
COUNT_WORDS = {"non_embedding": "non-embedding parameters", "active": "active parameters", "total": "parameters"}


def losses_by_trial(plan: ConfirmPlan, rows: list[dict[str, Any]]) -> tuple[dict, list[str]]:
    """{(candidate, size): {seed: loss}} from the planned trials' rows; notes on trials left out."""
    planned = {t.key for t in plan.trials}
    out: dict[tuple[str, str], dict[int, float]] = {}
    notes = []
    for row in rows:
        if row["key"] not in planned:
            continue
        metrics = row.get("metrics", {})
        value = metrics.get(METRIC)
        if metrics.get("status") == "diverged" or not isinstance(value, (int, float)) or not math.isfinite(value):
            notes.append(f"{row['arch']} at {row['size']} seed {row['seed']}: {metrics.get('status', 'no loss')}, "
                         "left out")
            continue
        out.setdefault((row["arch"], row["size"]), {})[int(row["seed"])] = float(value)
    return out, notes


def analyse(plan: ConfirmPlan, rows: list[dict[str, Any]]) -> dict[str, Any]:
    level, n_boot = plan.config.level, plan.config.bootstrap
    losses, notes = losses_by_trial(plan, rows)
    done = {t.key for t in plan.trials} & {r["key"] for r in rows}
    missing = [t.key for t in plan.trials if t.key not in done]
    results: dict[str, dict[str, Any]] = {}
    transfer: dict[str, Any] = {}
    comparisons: dict[str, list[dict[str, Any]]] = {}
    verdicts: list[str] = []
    for label, target in plan.sizes:
        here = {c.name: losses[(c.name, label)] for c in plan.candidates if losses.get((c.name, label))}
        results[label] = {name: {**mean_interval([v[s] for s in sorted(v)], level).as_dict(), "seeds": sorted(v),
                                 "params": plan.sized[(name, label)].params}
                          for name, v in here.items()}
        transfer[label] = rank_transfer(plan, here, level, n_boot)
        comparisons[label] = compare(plan, label, target, here, level, n_boot)
        verdicts += [c["verdict"] for c in comparisons[label]]
        if "spearman" in transfer[label]:
            verdicts.append(transfer_line(plan, label, target, transfer[label]))
    return {"results": results, "transfer": transfer, "comparisons": comparisons,
            "verdict": headline(plan, comparisons), "verdicts": verdicts, "missing": missing,
            "notes": plan.notes + notes,
            "statistics": {"metric": METRIC, "level": level, "bootstrap": n_boot,
                           "interval": "Student-t over seeds (primary); percentile bootstrap over seeds beside it",
                           "difference": "against - candidate, paired by seed (positive: the candidate is better)",
                           "rank_intervals": "percentile bootstrap, each candidate's seeds resampled"}}


def rank_transfer(plan: ConfirmPlan, here: dict[str, dict[int, float]], level: float, n_boot: int) -> dict[str, Any]:
    """Proxy -> target agreement at one size over the candidates with a proxy score and results."""
    included, excluded = [], {}
    for c in plan.candidates:
        if c.proxy is None:
            excluded[c.name] = "no proxy score: the search never trained this architecture"
        elif c.name not in here:
            excluded[c.name] = "no finished trial at this size"
        else:
            included.append(c)
    out: dict[str, Any] = {"candidates": [c.name for c in included], "excluded": excluded,
                           "proxy": {c.name: c.proxy for c in included}, "proxy_metric": plan.metric,
                           "proxy_mode": plan.mode}
    if len(included) < 2:
        out["error"] = "fewer than two candidates with a proxy score and a result at this size"
        return out
    proxy = [proxy_loss(c.proxy, plan.mode) for c in included]
    target = [[here[c.name][s] for s in sorted(here[c.name])] for c in included]
    out.update(rank_agreement_interval(proxy, target, level, n_boot))
    common = sorted(set.intersection(*(set(here[c.name]) for c in included)))
    out["noise_floor"] = seed_noise_floor([[here[c.name][s] for c in included] for s in common])
    return out


def compare(plan: ConfirmPlan, label: str, target: int, here: dict[str, dict[int, float]], level: float,
            n_boot: int) -> list[dict[str, Any]]:
    by_role = {role: c for c in plan.candidates for role in c.roles}
    best, consensus = by_role.get("top1"), by_role.get("consensus")
    baselines = [c for c in plan.candidates if c.is_baseline]
    searched = [c for c in plan.candidates if any(r != "baseline" for r in c.roles) and c.name in here]
    winner = min(searched, key=lambda c: sum(here[c.name].values()) / len(here[c.name]), default=None)
    pairs: list[tuple[str, Candidate, Candidate]] = []
    for base in baselines:
        pairs.append(("best_vs_baseline", best, base))
        if consensus is not None and consensus is not best:
            pairs.append(("consensus_vs_baseline", consensus, base))
        if winner is not None and winner not in (best, consensus):
            pairs.append(("target_winner_vs_baseline", winner, base))
    if consensus is not None and consensus is not best:
        pairs.append(("consensus_vs_best", consensus, best))
    out = []
    for kind, candidate, against in pairs:
        if candidate is None or candidate is against or candidate.name not in here or against.name not in here:
            continue
        if not set(here[candidate.name]) & set(here[against.name]):
            continue
        diff = paired_difference(here[against.name], here[candidate.name], level, n_boot)
        params = {candidate.name: plan.sized[(candidate.name, label)].params,
                  against.name: plan.sized[(against.name, label)].params}
        out.append({"kind": kind, "candidate": candidate.name, "against": against.name,
                    "advantage": diff.as_dict(), "params": params,
                    "verdict": verdict(size_words(plan, target), who(candidate, kind), who(against, ""), diff,
                                       params[candidate.name], params[against.name])})
    return out


def size_words(plan: ConfirmPlan, target: int) -> str:
    return f"{human(target)} {COUNT_WORDS[plan.config.count]}"


def who(c: Candidate, kind: str) -> str:
    """The candidate in a verdict: by the role that matters most (best trial, consensus, baseline)."""
    if kind == "target_winner_vs_baseline":
        return f"{c.name} (the lowest target loss, picked after the fact)"
    if "top1" in c.roles:
        return f"the best trial ({c.name}{', also the consensus' if 'consensus' in c.roles else ''})"
    if "consensus" in c.roles:
        return "the consensus" + ("" if c.name == "consensus" else f" ({c.name})")
    if TRANSFORMER in (c.name, *c.aliases):
        return "the transformer" + ("" if c.name == TRANSFORMER else f" ({c.name})")
    if c.is_baseline:
        baseline = c.name if c.roles[0] == "baseline" else c.aliases[-1]
        return f"the baseline {baseline}" + ("" if baseline == c.name else f" ({c.name})")
    return c.name


def verdict(size: str, candidate: str, against: str, diff: Any, params: int, other: int) -> str:
    """One line in plain words; `diff` is against - candidate (positive: the candidate is better)."""
    lo, hi = diff.ci
    level = f"{diff.level:.0%} CI"
    seeds = f"{diff.n} seed{'s' if diff.n != 1 else ''}"
    size_note = f" (parameters {human(params)} vs {human(other)})" if abs(params / other - 1) > 0.02 else ""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return (f"at {size} {candidate} vs {against}: {diff.mean:+.3f} nats, no interval from {seeds}"
                f"{size_note}")
    if lo > 0:
        return (f"at {size} {candidate} beats {against} by {diff.mean:.3f} nats, {level} [{lo:.3f}, {hi:.3f}], "
                f"{seeds}{size_note}")
    if hi < 0:
        return (f"at {size} {candidate} loses to {against} by {-diff.mean:.3f} nats, {level} [{-hi:.3f}, {-lo:.3f}], "
                f"{seeds}{size_note}")
    return (f"at {size} no significant difference between {candidate} and {against}: {diff.mean:+.3f} nats in "
            f"favour of {candidate}, {level} [{lo:+.3f}, {hi:+.3f}], {seeds}{size_note}")


FEW_TO_RANK = 5          # below this many candidates a rank correlation says little (Spearman's exact 5% test
                         # needs n >= 5 to reject at all)


def transfer_line(plan: ConfirmPlan, label: str, target: int, t: dict[str, Any]) -> str:
    rho, tau = t["spearman"], t["kendall"]
    floor = t["noise_floor"]
    left_out = f"; left out: {', '.join(t['excluded'])}" if t["excluded"] else ""
    if t["n"] < FEW_TO_RANK:
        left_out += (f"; {t['n']} candidates are too few to judge the ranking (`--spread N` / `confirm.spread` adds "
                     "trials from the rest of the search's ranking)")
    return (f"at {size_words(plan, target)} the proxy ({plan.metric}) ranks {t['n']} candidates with Spearman "
            f"{rho['value']:+.2f} [{rho['ci'][0]:+.2f}, {rho['ci'][1]:+.2f}], Kendall {tau['value']:+.2f} "
            f"[{tau['ci'][0]:+.2f}, {tau['ci'][1]:+.2f}]; seed-to-seed noise floor Spearman "
            f"{floor['spearman']:+.2f}, Kendall {floor['kendall']:+.2f}{left_out}")


def headline(plan: ConfirmPlan, comparisons: dict[str, list[dict[str, Any]]]) -> str | None:
    """The verdict of the largest size with results: the best trial against the first baseline."""
    for label, _ in reversed(plan.sizes):
        for c in comparisons.get(label, []):
            if c["kind"] == "best_vs_baseline":
                return c["verdict"]
    return None
