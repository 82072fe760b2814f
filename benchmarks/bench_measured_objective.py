"""Does a measured cost change the winner of hybrid_ratio? -> benchmarks/results/measured_objective[_tiny].json

search_spaces/hybrid_ratio.yaml trades validation loss against the analytic decoding state at a 4096-token context
(`state_bytes`). This benchmark asks what changes when the cost is measured instead: decode ms/token after a 4096-token
prompt on this machine (`{metric: decode_ms_per_token, context: 4096}`, composer/measure). Three parts:

1. Every distinct architecture of the space (n_attention x mixer) measured once (each context in its own process):
   the rank agreement (Spearman, Kendall, pairwise accuracy; scaling/transfer.py) between the analytic state bytes
   and the measured decode time and peak memory. If they rank alike, a measured objective cannot move the front.
2. The analytic search's own trained trials re-ranked: the Pareto front on (val_loss, state bytes) against the front
   on (val_loss, measured decode ms), same trials, so only the objective differs.
3. Two searches, same seed and budget, one per objective (NSGA-II as in the space; trials one at a time, so the
   driver's measurements do not share the CPU with training): their fronts, the hypervolume of each on the common
   axes (val_loss, measured decode ms) with one reference point, and the winner of each by one rule: the cheapest
   front member (by the search's own cost) within `--tolerance` of the front's best val_loss. The measured search
   measures its candidates again (its own run folder), which gives the measurement's repeatability (rank agreement
   with part 1).

    python benchmarks/bench_measured_objective.py            # full size: about 30-40 min on an idle 2-core machine
    python benchmarks/bench_measured_objective.py --tiny     # a smoke test: 7 architectures, 2 x 6 trials, ~3 min

Run it full size on a quiet machine: the measured numbers are wall-clock timings, and the searches train 2 x 32
candidates. Record `uptime` before and after; the result file records the load averages it saw.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, default_data, write_result  # noqa: E402

SPACE = REPO / "search_spaces" / "hybrid_ratio.yaml"


def spaces(tiny: bool, context: int, trials: int | None, data: str | None) -> dict[str, dict[str, Any]]:
    """The analytic and the measured variant of hybrid_ratio (plain data), alike in everything else."""
    import yaml

    base = yaml.safe_load(SPACE.read_text())
    base["base"]["max_seq_len"] = context             # the measured context must be one the candidates declare
    if data is not None:
        base["task"]["params"]["data"] = data
    base["resources"] = {"cpus_per_trial": 1, "max_concurrent": 1}
    base["constraints"]["context"] = context
    base["measure"] = {"device": "cpu", "threads": 1, "repeats": 5, "prefill_repeats": 1, "decode_tokens": 16}
    if tiny:
        base["base"]["d_model"] = 32
        base["layers"]["pattern"].update(n_layers=3, n_attention={"int": [0, 3]}, mixer={"choice": ["gla", "mingru"]})
        base["task"]["params"]["seq_len"] = 32
        base["train"] = {"steps": 20, "lr": base["train"]["lr"], "batch_size": 8, "eval_every": 10}
        base["strategy"]["options"]["population_size"] = 4
        base["scheduler"] = {"name": "fifo"}
        base["measure"].update(repeats=2, decode_tokens=4)
        base["trials"] = 6
    if trials:
        base["trials"] = trials
    analytic, measured = copy.deepcopy(base), copy.deepcopy(base)
    analytic["name"], measured["name"] = "hybrid_ratio_analytic", "hybrid_ratio_measured"
    analytic["objectives"] = [{"metric": "val_loss", "mode": "min"}, {"metric": "state_bytes", "mode": "min"}]
    measured["objectives"] = [{"metric": "val_loss", "mode": "min"},
                              {"metric": "decode_ms_per_token", "mode": "min", "context": context}]
    return {"analytic": analytic, "measured": measured}


def architectures(space: Any) -> list[Any]:
    """Every distinct architecture of the space (each pattern choice; the learning rate does not change it)."""
    import optuna

    from composer import arch_id

    dists = space.distributions()
    names = [n for n in dists if n != "lr"]
    seen: dict[str, Any] = {}
    for values in itertools.product(*(dists[n].grid() for n in names)):
        params = {**dict(zip(names, values)), "lr": dists["lr"].first()} if "lr" in dists else dict(zip(names, values))
        candidate = space.sample_unmatched(optuna.trial.FixedTrial(params))
        if candidate.spec is not None:
            seen.setdefault(arch_id(candidate.spec), candidate.spec)
    return list(seen.values())


def measure_all(space: Any, context: int) -> dict[str, dict[str, Any]]:
    from composer import arch_id, model_cost, stripe
    from composer.measure import measure, value_of

    out = {}
    for i, spec in enumerate(architectures(space), 1):
        [m] = measure(spec, [context], space.measure)
        out[arch_id(spec)] = {"stripe": stripe(spec), "state_bytes": model_cost(spec, context).state_bytes,
                              **{k: value_of(m, k) for k in ("decode_ms_per_token", "peak_memory_bytes",
                                                             "prefill_tokens_per_s")},
                              "decode_spread": [m["decode_ms_per_token"]["min"], m["decode_ms_per_token"]["max"]]}
        print(f"  [{i}] {out[arch_id(spec)]['stripe']}: {out[arch_id(spec)]['decode_ms_per_token']:.3g} ms/token, "
              f"state {out[arch_id(spec)]['state_bytes']:,} bytes", flush=True)
    return out


def front(rows: list[dict[str, Any]], cost: str) -> list[dict[str, Any]]:
    """The rows no other row beats on both val_loss and `cost` (lower is better on both)."""
    done = [r for r in rows if r.get("status") == "completed" and isinstance(r.get("val_loss"), float)
            and isinstance(r.get(cost), (int, float))]
    return sorted((r for r in done if not any(o["val_loss"] <= r["val_loss"] and o[cost] <= r[cost]
                                              and (o["val_loss"], o[cost]) != (r["val_loss"], r[cost]) for o in done)),
                  key=lambda r: (r[cost], r["val_loss"]))


def winner(members: list[dict[str, Any]], cost: str, tolerance: float) -> dict[str, Any] | None:
    """The cheapest front member whose val_loss is within `tolerance` (relative) of the front's best."""
    if not members:
        return None
    best = min(r["val_loss"] for r in members)
    return min((r for r in members if r["val_loss"] <= best * (1 + tolerance)), key=lambda r: r[cost])


def brief(row: dict[str, Any] | None, cost: str) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"trial": row["trial"], "stripe": row["stripe"], "arch_id": row["arch_id"], "val_loss": row["val_loss"],
            cost: row[cost], "decode_ms_per_token": row.get("decode_ms_measured")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a small space and budget: a smoke test")
    parser.add_argument("--context", type=int, default=None, help="the measured context (default 4096; tiny 256)")
    parser.add_argument("--trials", type=int, default=None, help="trials per search (default: the space's 32)")
    parser.add_argument("--tolerance", type=float, default=0.02,
                        help="the winner: the cheapest front member within this relative val_loss of the best")
    parser.add_argument("--skip-searches", action="store_true", help="part 1 only (measure and compare ranks)")
    args = parser.parse_args()
    context = args.context or (256 if args.tiny else 4096)
    started, load_before = time.time(), os.getloadavg()

    import ray

    from composer.search import search
    from composer.search.pareto import hypervolume, reference_point
    from composer.search.space_parse import load_space
    from scaling.transfer import agreement

    variants = spaces(args.tiny, context, args.trials, default_data())
    analytic_space = load_space(variants["analytic"])
    print(f"1. measuring every architecture of the space at context {context}", flush=True)
    measured = measure_all(analytic_space, context)
    ids = sorted(measured)
    state = [float(measured[i]["state_bytes"]) for i in ids]
    result: dict[str, Any] = {
        "question": "how much a measured objective (decode ms/token) changes hybrid_ratio's winner against the "
                    "analytic state-bytes objective",
        "tiny": args.tiny, "context": context, "tolerance": args.tolerance, "spaces": variants,
        "architectures": {i: measured[i] for i in ids},
        "rank_agreement": {
            "state_bytes_vs_decode_ms": agreement(state, [measured[i]["decode_ms_per_token"] for i in ids]),
            "state_bytes_vs_peak_memory": agreement(state, [float(measured[i]["peak_memory_bytes"]) for i in ids]),
        },
    }
    print(f"   rank agreement: {result['rank_agreement']}", flush=True)
    if not args.skip_searches:
        runs: dict[str, list[dict[str, Any]]] = {}
        with tempfile.TemporaryDirectory() as tmp:
            try:
                for name, variant in variants.items():
                    print(f"3. search with the {name} objective", flush=True)
                    rows = search(variant, runs_dir=tmp, progress=lambda state: None).rows
                    for row in rows:
                        row["decode_ms_measured"] = measured.get(row.get("arch_id"), {}).get("decode_ms_per_token")
                    runs[name] = rows
            finally:
                ray.shutdown()
        cost = {"analytic": "state_bytes", "measured": f"decode_ms_per_token@{context}"}
        # 2. the analytic search's trials re-ranked by the measured cost (the same trained trials)
        reranked = {"analytic_front": [brief(r, "state_bytes") for r in front(runs["analytic"], "state_bytes")],
                    "measured_front": [brief(r, "decode_ms_measured")
                                       for r in front(runs["analytic"], "decode_ms_measured")]}
        reranked["same_front_architectures"] = ({r["arch_id"] for r in reranked["analytic_front"]}
                                                == {r["arch_id"] for r in reranked["measured_front"]})
        reranked["winner_analytic"] = brief(winner(front(runs["analytic"], "state_bytes"), "state_bytes",
                                                   args.tolerance), "state_bytes")
        reranked["winner_measured"] = brief(winner(front(runs["analytic"], "decode_ms_measured"), "decode_ms_measured",
                                                   args.tolerance), "decode_ms_measured")
        result["reranked_analytic_trials"] = reranked
        # 3. the two searches side by side, on the common axes (val_loss, measured decode ms)
        common = [r for rows in runs.values() for r in rows if r.get("status") == "completed"
                  and isinstance(r.get("decode_ms_measured"), float)]
        axes = ["val_loss", "decode_ms_measured"]
        reference = reference_point([[r["val_loss"], r["decode_ms_measured"]] for r in common], ["min", "min"]) \
            if common else None
        searches = {}
        for name, rows in runs.items():
            members = front(rows, cost[name])
            searches[name] = {
                "completed": sum(r.get("status") == "completed" for r in rows),
                "front": [brief(r, cost[name]) for r in members],
                "winner": brief(winner(members, cost[name], args.tolerance), cost[name]),
                "hypervolume_common_axes": hypervolume(rows, axes, ["min", "min"], reference) if reference else None,
            }
        # the measured search measured its candidates again, in its own run folder: how repeatable is the ranking?
        again = {r["arch_id"]: r[cost["measured"]] for r in runs["measured"]
                 if isinstance(r.get(cost["measured"]), float) and r.get("arch_id") in measured}
        if len(again) >= 3:
            searches["measurement_repeatability"] = {
                "architectures": len(again),
                **agreement([measured[i]["decode_ms_per_token"] for i in again], list(again.values()))}
        a, m = searches["analytic"]["winner"], searches["measured"]["winner"]
        searches["same_winner"] = bool(a and m and a["arch_id"] == m["arch_id"])
        result["searches"] = searches
        print(f"   winners: analytic {a and a['stripe']}, measured {m and m['stripe']}", flush=True)
    result.update(elapsed_s=round(time.time() - started, 1), load_average_before=load_before,
                  load_average_after=os.getloadavg())
    path = write_result("measured_objective_tiny" if args.tiny else "measured_objective", result)
    print(f"wrote {path} in {result['elapsed_s']} s (load average before {load_before}, after "
          f"{result['load_average_after']})")


if __name__ == "__main__":
    main()
