"""Does a measured cost change the winner of hybrid_ratio? -> benchmarks/results/measured_objective.json

search_spaces/hybrid_ratio.yaml trades validation loss against the analytic decoding state at a 4096-token context
(`state_bytes`). What deployment pays is measured: decode ms/token after a 4096-token prompt on the machine
(`{metric: decode_ms_per_token, context: 4096}`, composer/measure). The space is small (n_attention 0-6 x 6 linear
families: 37 distinct architectures), so rather than two NSGA-II searches, whose winners also differ by sampling
noise, every architecture is measured and trained once, and each objective's front and winner are read off the same
numbers: only the cost axis differs.

1. Measure (nothing else running): each architecture's decode ms/token (median and spread of `repeats` runs of
   `decode_tokens` tokens after warm-up, each architecture in its own process, 1 thread), peak memory, and its
   analytic state bytes at the context. Rank agreement (Spearman, Kendall, pairwise) of state bytes and decode ms.
2. Train every architecture on the space's task (Tiny Shakespeare, seq 64, batch 32) for `--steps` steps at the
   log-midpoint of the space's learning-rate range, two at a time (1 thread each).
3. The front on (val_loss, state bytes) and on (val_loss, measured decode ms); each one's winner by one rule: the
   cheapest front member within `--tolerance` (relative) of the best val_loss, and at tolerances 0-10 %; what the
   analytic winner costs in measured ms/token against the measured winner (and what the measured winner gives up in
   val_loss); both fronts' hypervolumes on the measured axes with one reference point (how much of the
   measured-optimal front the analytic objective finds).

    python benchmarks/bench_measured_objective.py            # the space's 37 architectures: <= 10 min, 2 idle cores
    python benchmarks/bench_measured_objective.py --smoke    # 5 tiny architectures, context 256: < 1 min (plumbing)

The full size's budget, from CPU seconds measured on a loaded machine: measuring ~3 CPU s per architecture (~2 min
for 37, serial), training 80 steps 10-25 CPU s each (~5 min for 37 on two workers). The space itself trains 400
steps (`--steps 400`: about 25 min more).

Run the full size on a quiet machine: decode times are wall-clock. The result records the load averages before and
after and each stage's wall and CPU seconds. --smoke writes runs/bench_measured_objective/smoke.json instead.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import math
import multiprocessing
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, default_data, write_result  # noqa: E402

SPACE = REPO / "search_spaces" / "hybrid_ratio.yaml"
TOLERANCES = (0.0, 0.01, 0.02, 0.05, 0.1)


def space_data(smoke: bool, context: int, data: str | None) -> dict[str, Any]:
    """hybrid_ratio as plain data, its constraint context set to the measured one; --smoke shrinks it."""
    import yaml

    space = yaml.safe_load(SPACE.read_text())
    space["base"]["max_seq_len"] = context             # the measured context must be one the candidates declare
    space["constraints"]["context"] = context
    if data is not None:
        space["task"]["params"]["data"] = data
    if smoke:
        space["base"]["d_model"] = 32
        space["layers"]["pattern"].update(n_layers=2, n_attention={"int": [0, 2]}, mixer={"choice": ["gla", "mingru"]})
        space["task"]["params"]["seq_len"] = 32
        space["train"]["batch_size"] = 8
    return space


def architectures(space: Any) -> list[Any]:
    """Every distinct architecture of the space, in the order of its grid (the learning rate does not change it)."""
    import optuna

    from composer import arch_id

    dists = space.distributions()
    names = [n for n in dists if n != "lr"]
    seen: dict[str, Any] = {}
    for values in itertools.product(*(dists[n].grid() for n in names)):
        params = {**dict(zip(names, values)), **({"lr": dists["lr"].first()} if "lr" in dists else {})}
        candidate = space.sample_unmatched(optuna.trial.FixedTrial(params))
        if candidate.spec is not None:
            seen.setdefault(arch_id(candidate.spec), candidate.spec)
    return list(seen.values())


def measure_all(specs: list[Any], context: int, settings: Any) -> dict[str, dict[str, Any]]:
    from composer import arch_id, model_cost, stripe
    from composer.measure import measure

    out = {}
    for i, spec in enumerate(specs, 1):
        [m] = measure(spec, [context], settings)
        decode = m["decode_ms_per_token"]
        out[arch_id(spec)] = {"stripe": stripe(spec), "state_bytes": model_cost(spec, context).state_bytes,
                              "decode_ms_per_token": decode["median"], "decode_spread": [decode["min"], decode["max"]],
                              "peak_memory_bytes": m["peak_memory_bytes"]}
        row = out[arch_id(spec)]
        print(f"  [{i}/{len(specs)}] {row['stripe']}: {row['decode_ms_per_token']:.3g} ms/token "
              f"({decode['min']:.3g}-{decode['max']:.3g}), state {row['state_bytes']:,} B", flush=True)
    return out


def train_one(spec: dict[str, Any], task: dict[str, Any], config: dict[str, Any], lr: float) -> dict[str, Any]:
    """One architecture trained (in a pool worker, 1 thread): its status, val_loss and CPU seconds."""
    from composer.trainer import train

    started = time.process_time()
    result = train(spec, task["name"], config=config, lr=lr, threads=1, task_params=task.get("params") or {})
    loss = result.metrics.get("val_loss")
    return {"status": result.status, "val_loss": loss if isinstance(loss, float) and math.isfinite(loss) else None,
            "steps": result.step, "cpu_s": round(time.process_time() - started, 2)}


def train_all(specs: list[Any], space: dict[str, Any], steps: int, lr: float, workers: int) -> dict[str, Any]:
    from composer import arch_id, stripe

    config = {"steps": steps, "batch_size": space["train"]["batch_size"], "eval_every": steps}
    out: dict[str, Any] = {}
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = {pool.submit(train_one, spec.to_dict(), space["task"], config, lr): spec for spec in specs}
        for done in concurrent.futures.as_completed(jobs):
            spec = jobs[done]
            out[arch_id(spec)] = done.result()
            print(f"  [{len(out)}/{len(specs)}] {stripe(spec)}: {out[arch_id(spec)]['status']} val_loss "
                  f"{out[arch_id(spec)]['val_loss']}", flush=True)
    return out


def front(rows: list[dict[str, Any]], cost: str) -> list[dict[str, Any]]:
    """The rows no other row beats on both val_loss and `cost` (lower is better on both), cheapest first."""
    return sorted((r for r in rows if not any(o["val_loss"] <= r["val_loss"] and o[cost] <= r[cost]
                                              and (o["val_loss"], o[cost]) != (r["val_loss"], r[cost]) for o in rows)),
                  key=lambda r: (r[cost], r["val_loss"]))


def winner(members: list[dict[str, Any]], cost: str, tolerance: float) -> dict[str, Any]:
    """The cheapest front member whose val_loss is within `tolerance` (relative) of the front's best."""
    best = min(r["val_loss"] for r in members)
    return min((r for r in members if r["val_loss"] <= best * (1 + tolerance)), key=lambda r: (r[cost], r["val_loss"]))


def brief(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("arch_id", "stripe", "val_loss", "state_bytes", "decode_ms_per_token",
                                "decode_spread")}


def compare(rows: list[dict[str, Any]], tolerance: float) -> dict[str, Any]:
    """The two objectives' fronts, winners and hypervolumes over the same trained and measured rows."""
    from composer.search.pareto import hypervolume, reference_point

    fronts = {"analytic": front(rows, "state_bytes"), "measured": front(rows, "decode_ms_per_token")}
    costs = {"analytic": "state_bytes", "measured": "decode_ms_per_token"}
    winners = {name: winner(fronts[name], costs[name], tolerance) for name in fronts}
    a, m = winners["analytic"], winners["measured"]
    axes = ["val_loss", "decode_ms_per_token"]
    every = [{"status": "completed", **r} for r in rows]
    reference = reference_point([[r["val_loss"], r["decode_ms_per_token"]] for r in rows], ["min", "min"])
    volumes = {name: hypervolume([{"status": "completed", **r} for r in fronts[name]], axes, ["min", "min"],
                                 reference)["hypervolume"] for name in fronts}
    volumes["every_architecture"] = hypervolume(every, axes, ["min", "min"], reference)["hypervolume"]
    by_tolerance = []
    for t in TOLERANCES:
        wa, wm = winner(fronts["analytic"], "state_bytes", t), winner(fronts["measured"], "decode_ms_per_token", t)
        by_tolerance.append({"tolerance": t, "analytic": wa["stripe"], "measured": wm["stripe"],
                             "same": wa["arch_id"] == wm["arch_id"],
                             "analytic_winner_decode_ms_over_measured": wa["decode_ms_per_token"]
                             / wm["decode_ms_per_token"]})
    return {
        "fronts": {name: [brief(r) for r in members] for name, members in fronts.items()},
        "fronts_share": sorted({r["stripe"] for r in fronts["analytic"]} & {r["stripe"] for r in fronts["measured"]}),
        "winners": {name: brief(w) for name, w in winners.items()},
        "same_winner": a["arch_id"] == m["arch_id"],
        # what choosing by state bytes costs in measured decode time, and what the measured winner gives up
        "analytic_winner_decode_ms_over_measured": a["decode_ms_per_token"] / m["decode_ms_per_token"],
        "measured_winner_val_loss_minus_analytic": m["val_loss"] - a["val_loss"],
        # the winners' decode spreads (min-max over repeats) apart: the difference is beyond the measurement's noise
        "winners_decode_spreads_disjoint": (a["decode_spread"][0] > m["decode_spread"][1]
                                            or m["decode_spread"][0] > a["decode_spread"][1]),
        "hypervolume_measured_axes": {"reference_point": reference, **volumes,
                                      "analytic_front_over_measured_front": volumes["analytic"] / volumes["measured"]
                                      if volumes["measured"] else None},
        "winners_by_tolerance": by_tolerance,
    }


def cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="5 tiny architectures at context 256: a plumbing check")
    parser.add_argument("--context", type=int, default=None, help="the measured context (default 4096; smoke 256)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per architecture (default 80; "
                                                                "smoke 10)")
    parser.add_argument("--workers", type=int, default=2, help="architectures trained at once (default 2)")
    parser.add_argument("--tolerance", type=float, default=0.02,
                        help="the winner: the cheapest front member within this relative val_loss of the best")
    args = parser.parse_args()
    context = args.context or (256 if args.smoke else 4096)
    steps = args.steps or (10 if args.smoke else 80)
    started, load_before = time.time(), os.getloadavg()

    from composer.measure import MeasureSettings
    from composer.search.space_parse import load_space
    from scaling.transfer import agreement

    data = space_data(args.smoke, context, default_data())
    space = load_space(data)
    low, high = data["train"]["lr"]["float"]
    lr = math.sqrt(low * high)
    settings = MeasureSettings(device="cpu", threads=1, warmup=1, repeats=2 if args.smoke else 5, prefill_repeats=1,
                               decode_tokens=4 if args.smoke else 16)
    specs = architectures(space)
    stages: dict[str, dict[str, float]] = {}

    print(f"1. measuring {len(specs)} architectures at context {context:,} (one process each, 1 thread)", flush=True)
    t, cpu = time.time(), cpu_children()
    measured = measure_all(specs, context, settings)
    stages["measure"] = {"wall_s": round(time.time() - t, 1), "cpu_s": round(cpu_children() - cpu, 1)}

    print(f"2. training {len(specs)} architectures, {steps} steps at lr {lr:.3g}, {args.workers} at a time", flush=True)
    t = time.time()
    trained = train_all(specs, data, steps, lr, args.workers)
    stages["train"] = {"wall_s": round(time.time() - t, 1),
                       "cpu_s": round(sum(r["cpu_s"] for r in trained.values()), 1)}

    ids = list(measured)
    state = [float(measured[i]["state_bytes"]) for i in ids]
    rows = [{"arch_id": i, **measured[i], **trained[i]} for i in ids]
    usable = [r for r in rows if r["val_loss"] is not None]
    result: dict[str, Any] = {
        "question": "how much a measured objective (decode ms/token) changes hybrid_ratio's winner against the "
                    "analytic state-bytes objective",
        "smoke": args.smoke, "context": context, "steps": steps, "lr": lr, "tolerance": args.tolerance,
        "measure_settings": {k: getattr(settings, k) for k in ("device", "threads", "warmup", "repeats",
                                                               "prefill_repeats", "decode_tokens")},
        "space": data, "architectures": rows,
        "rank_agreement": {
            "state_bytes_vs_decode_ms": agreement(state, [measured[i]["decode_ms_per_token"] for i in ids]),
            "state_bytes_vs_peak_memory": agreement(state, [float(measured[i]["peak_memory_bytes"]) for i in ids]),
        },
        "not_trained": [r["stripe"] for r in rows if r["val_loss"] is None],
    }
    if len(usable) >= 2:
        result["comparison"] = compare(usable, args.tolerance)
    result.update(stages=stages, elapsed_s=round(time.time() - started, 1), load_average_before=load_before,
                  load_average_after=os.getloadavg())
    print(f"3. rank agreement of state bytes and decode ms: {result['rank_agreement']['state_bytes_vs_decode_ms']}")
    if "comparison" in result:
        c = result["comparison"]
        print(f"   winners (tolerance {args.tolerance:g}): analytic {c['winners']['analytic']['stripe']}, measured "
              f"{c['winners']['measured']['stripe']}; the analytic winner decodes at "
              f"{c['analytic_winner_decode_ms_over_measured']:.3g}x the measured winner's ms/token")
    if args.smoke:
        path = REPO / "runs" / "bench_measured_objective" / "smoke.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))
    else:
        path = write_result("measured_objective", result)
    print(f"wrote {path} in {result['elapsed_s']} s (stages {stages}; load average before {load_before}, after "
          f"{result['load_average_after']})")


if __name__ == "__main__":
    main()
