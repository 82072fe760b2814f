"""From finished confirmation trials to statistics and verdicts (the body of `runs/<name>/confirm.json`).

Every number judged here is a *test* loss (`test_loss`: the task's test split, which nothing chose by), of each
candidate at the learning rate its sweep chose on the *validation* split (composer/confirm/schedule.py); a task
without a test split is judged on validation, and the notes say so. Beside it: the validation loss and, for
text, `holdout_loss` (validation + test: with the default splits the last tenth, nanoGPT's validation split).

Per size: each candidate's test loss over seeds (mean, std, 95% t-interval) and its counted parameters; the
proxy -> target rank agreement (Spearman, Kendall; bootstrap intervals resampling seeds) over the candidates the
search scored, beside the seed-to-seed noise floor of those candidates; and paired-by-seed differences with
verdicts:

* the best trial of the search against each baseline: the comparison the search promises;
* the consensus against each baseline and against the best trial, when it is a different architecture;
* the candidate with the lowest target loss against each baseline, when it is neither of those (it was
  picked by the very numbers compared, so this one is optimistic and says so).

Before any verdict the sizes are checked on the counts the trials trained with: a comparison of two candidates
whose counts differ by more than `tolerance` is refused (listed under `refused`, never reported as a verdict),
and a candidate further than half the tolerance from the size's target is left out of the rank agreement. Below
UNDERTRAINED tokens per parameter every verdict at that size starts with a warning, recorded in `undertrained`.

A difference is `against - candidate` in the target loss (nats): positive when the candidate is better.
Intervals are paired by seed; the primary interval is the Student-t one (see scaling/stats.py for why).
"""

from __future__ import annotations

import math
from typing import Any

from composer.confirm.candidates import TRANSFORMER, Candidate, proxy_loss
from composer.confirm.plan import COMPARABLE_SPLIT, ConfirmPlan
from composer.confirm.schedule import SELECT_METRIC, Schedule, loss_of, schedule
from composer.search.space_confirm import UNDERTRAINED
from composer.units import human
from scaling.stats import mean_interval, paired_difference, rank_agreement_interval, seed_noise_floor

COUNT_WORDS = {"non_embedding": "non-embedding parameters", "active": "active parameters", "total": "parameters"}
UNDERTRAINED_WORDS = "undertrained: differences reflect early learning speed"


def size_gap(a: int, b: int) -> float:
    """How far apart two parameter counts are, relative to the smaller."""
    return abs(a - b) / min(a, b)


def losses_by_trial(plan: ConfirmPlan, rows: list[dict[str, Any]], plan_schedule: Schedule,
                    metric: str) -> tuple[dict[tuple[str, str], dict[int, float]], list[str]]:
    """{(candidate, size): {seed: `metric`}} over each candidate's seeds at its chosen learning rate; notes on
    trials left out."""
    by_key = {row["key"]: row for row in rows}
    out: dict[tuple[str, str], dict[int, float]] = {}
    notes = []
    for (name, label), seeds in plan_schedule.seeds.items():
        lr = plan_schedule.chosen(name, label)
        for seed in seeds:
            row = by_key.get(plan.trial(name, label, seed, lr).key)
            value = loss_of(row, metric)
            if value is None:
                continue
            if not math.isfinite(value):
                notes.append(f"{name} at {label} seed {seed} (lr {lr:g}): {row['metrics'].get('status', 'no loss')}, "
                             "left out")
                continue
            out.setdefault((name, label), {})[seed] = value
    return out, notes


def counted_params(plan: ConfirmPlan, rows: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    """Each candidate's counted parameters at each size, as its trials trained (the plan's where none finished)."""
    out = {key: sized.params for key, sized in plan.sized.items()}
    for row in rows:
        if (row.get("arch"), row.get("size")) in out and isinstance(row.get("n_params"), int):
            out[(row["arch"], row["size"])] = row["n_params"]
    return out


def analyse(plan: ConfirmPlan, rows: list[dict[str, Any]]) -> dict[str, Any]:
    level, n_boot = plan.config.level, plan.config.bootstrap
    planned = schedule(plan, rows)
    metric = plan.judge_metric
    losses, notes = losses_by_trial(plan, rows, planned, metric)
    chosen_on, _ = losses_by_trial(plan, rows, planned, SELECT_METRIC)
    comparable, _ = losses_by_trial(plan, rows, planned, f"{COMPARABLE_SPLIT}_loss")
    params = counted_params(plan, rows)
    done = {r["key"] for r in rows}
    missing = [t.key for t in planned.trials if t.key not in done]
    results: dict[str, dict[str, Any]] = {}
    transfer: dict[str, Any] = {}
    comparisons: dict[str, list[dict[str, Any]]] = {}
    refused: dict[str, list[dict[str, Any]]] = {}
    verdicts: list[str] = []
    sweeps: dict[str, dict[str, Any]] = {}
    undertrained = plan.undertrained()
    for label, target in plan.sizes:
        here = {c.name: losses[(c.name, label)] for c in plan.candidates if losses.get((c.name, label))}
        results[label] = {}
        for name, v in here.items():
            entry = {**mean_interval([v[s] for s in sorted(v)], level).as_dict(), "seeds": sorted(v),
                     "params": params[(name, label)], "lr": planned.chosen(name, label)}
            for key, table in ((SELECT_METRIC, chosen_on), (f"{COMPARABLE_SPLIT}_loss", comparable)):
                if table.get((name, label)) and key != metric:
                    entry[key] = sum(table[(name, label)].values()) / len(table[(name, label)])
            results[label][name] = entry
        sweeps[label] = {c.name: planned.sweeps[(c.name, label)].as_dict() for c in plan.candidates
                         if (c.name, label) in planned.sweeps}
        notes += sweep_notes(label, planned)
        warn = f"{UNDERTRAINED_WORDS} ({undertrained[label]:.2g} tokens/param < {UNDERTRAINED:g}); " if (
            label in undertrained) else ""
        transfer[label] = rank_transfer(plan, label, target, here, params, level, n_boot)
        comparisons[label], refused[label] = compare(plan, label, target, here, params, planned, level, n_boot)
        verdicts += [warn + c["verdict"] for c in comparisons[label]] + [r["verdict"] for r in refused[label]]
        if "spearman" in transfer[label]:
            verdicts.append(warn + transfer_line(plan, label, target, transfer[label]))
        for c in comparisons[label]:
            c["verdict"] = warn + c["verdict"]
    return {"results": results, "transfer": transfer, "comparisons": comparisons, "refused": refused,
            "sweeps": sweeps, "seeds_auto": planned.stops, "undertrained": undertrained,
            "verdict": headline(plan, comparisons, refused), "verdicts": verdicts, "missing": missing,
            "notes": plan.notes + notes,
            "statistics": {"metric": metric, "select_metric": SELECT_METRIC, "level": level, "bootstrap": n_boot,
                           "interval": "Student-t over seeds (primary); percentile bootstrap over seeds beside it",
                           "difference": "against - candidate, paired by seed (positive: the candidate is better)",
                           "rank_intervals": "percentile bootstrap, each candidate's seeds resampled",
                           "sizes": f"comparisons of counts more than {plan.config.tolerance:.0%} apart are refused",
                           **({"seeds_auto": "seeds are added while the interval of the difference spans 0: a "
                               "sequential rule, so the interval it stops on covers a little less than its level"}
                              if plan.config.auto_seeds else {})}}


def sweep_notes(label: str, planned: Schedule) -> list[str]:
    out = []
    for (name, size), sweep in planned.sweeps.items():
        if size != label or not sweep.done:
            continue
        if sweep.chosen is None:
            out.append(f"{name} at {label}: every learning rate of its sweep diverged; left out")
        elif sweep.as_dict()["at_edge"]:
            out.append(f"{name} at {label}: the best learning rate {sweep.chosen:g} is at the end of its sweep "
                       f"({', '.join(f'{lr:g}' for lr in sweep.grid)}; extended {sweep.extended} times): its "
                       "optimum may lie beyond (raise lr_extend)")
    return out


def rank_transfer(plan: ConfirmPlan, label: str, target: int, here: dict[str, dict[int, float]],
                  params: dict[tuple[str, str], int], level: float, n_boot: int) -> dict[str, Any]:
    """Proxy -> target agreement at one size over the candidates with a proxy score, results and the size's count."""
    included, excluded = [], {}
    allowed = plan.config.tolerance / 2
    for c in plan.candidates:
        off = params[(c.name, label)] / target - 1
        if c.proxy is None:
            excluded[c.name] = "no proxy score: the search never trained this architecture"
        elif c.name not in here:
            excluded[c.name] = "no finished trial at this size"
        elif abs(off) > allowed:
            excluded[c.name] = (f"{params[(c.name, label)]:,} counted parameters, {off:+.1%} from the target "
                                f"(more than {allowed:.1%})")
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


def compare(plan: ConfirmPlan, label: str, target: int, here: dict[str, dict[int, float]],
            params: dict[tuple[str, str], int], planned: Schedule, level: float,
            n_boot: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The comparisons at one size (see the module docstring), and those refused for unequal sizes."""
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
    out, refused = [], []
    stop = planned.stops.get(label)
    for kind, candidate, against in pairs:
        if candidate is None or candidate is against or candidate.name not in here or against.name not in here:
            continue
        if not set(here[candidate.name]) & set(here[against.name]):
            continue
        counts = {candidate.name: params[(candidate.name, label)], against.name: params[(against.name, label)]}
        gap = size_gap(*counts.values())
        if gap > plan.config.tolerance:
            refused.append({"kind": kind, "candidate": candidate.name, "against": against.name, "params": counts,
                            "gap": gap, "verdict": (
                                f"at {size_words(plan, target)} the comparison of {who(candidate, kind)} with "
                                f"{who(against, '')} is refused: {human(counts[candidate.name])} vs "
                                f"{human(counts[against.name])} counted parameters are {gap:.1%} apart, more than "
                                f"the tolerance {plan.config.tolerance:.0%}")})
            continue
        diff = paired_difference(here[against.name], here[candidate.name], level, n_boot)
        entry = {"kind": kind, "candidate": candidate.name, "against": against.name, "advantage": diff.as_dict(),
                 "params": counts, "metric": plan.judge_metric,
                 "verdict": verdict(size_words(plan, target), who(candidate, kind), who(against, ""), diff,
                                    plan.judge_metric)}
        if stop is not None and set(stop["pair"]) == {candidate.name, against.name}:
            entry["seeds_auto"] = stop
            entry["verdict"] += f" (seeds: auto stopped at {stop['seeds']}: {stop['why']})"
        out.append(entry)
    return out, refused


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


def verdict(size: str, candidate: str, against: str, diff: Any, metric: str = "val_loss") -> str:
    """One line in plain words; `diff` is against - candidate (positive: the candidate is better) in `metric`."""
    nats = f"nats of {metric.replace('_', ' ')}"
    lo, hi = diff.ci
    level = f"{diff.level:.0%} CI"
    seeds = f"{diff.n} seed{'s' if diff.n != 1 else ''}"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"at {size} {candidate} vs {against}: {diff.mean:+.3f} {nats}, no interval from {seeds}"
    if lo > 0:
        return (f"at {size} {candidate} beats {against} by {diff.mean:.3f} {nats}, {level} [{lo:.3f}, {hi:.3f}], "
                f"{seeds}")
    if hi < 0:
        return (f"at {size} {candidate} loses to {against} by {-diff.mean:.3f} {nats}, {level} [{-hi:.3f}, {-lo:.3f}], "
                f"{seeds}")
    return (f"at {size} no significant difference between {candidate} and {against}: {diff.mean:+.3f} {nats} "
            f"in favour of {candidate}, {level} [{lo:+.3f}, {hi:+.3f}], {seeds}")


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


def headline(plan: ConfirmPlan, comparisons: dict[str, list[dict[str, Any]]],
             refused: dict[str, list[dict[str, Any]]]) -> str | None:
    """The verdict of the largest size with results: the best trial against the first baseline (or its refusal)."""
    for label, _ in reversed(plan.sizes):
        for c in [*comparisons.get(label, []), *refused.get(label, [])]:
            if c["kind"] == "best_vs_baseline":
                return c["verdict"]
    return None
