"""Sample efficiency of the search strategies, on a table -> benchmarks/results/strategies.json and .png

    python benchmarks/bench_strategies.py --table-only        # 1. the table (resumable; ~15 CPU-minutes)
    python benchmarks/bench_strategies.py [--seeds 20] [--trials 48]   # 2. the replay (and the table if missing)

1. The table (benchmarks/strategy_table.py): every architecture of 6 slots x {attention, MLP} trained once on
   character-level Tiny Shakespeare, two seeds (and the depth-3 stacks an incremental search trains first).
2. The replay: each strategy searches the table's space again and again (`--seeds` times, `--trials` trials each)
   through the code path of a real search, with the training replaced by a look-up: the runner's define-by-run
   function (`DefineByRun`: sampling, costs, constraints), the Optuna study behind Composer's Tune searcher
   (`StudySearch.suggest` / `on_trial_complete`, which tell the study COMPLETE only for a final result), the
   strategy's sampler (`make_sampler`), the strategy's stages (`Strategy.drive`) and the consensus
   (`make_consensus`, the space's `aggregate:`). Ray itself is not started: 20 seeds x 9 strategies x 48 trials
   through Tune would spend hours in its per-trial overhead (~0.9 s, benchmarks/results/search.json) for
   look-ups that take milliseconds; Tune calls exactly these two Searcher methods.

Reported per strategy: the mean regret (best full-depth objective so far minus the table's best; none before a
strategy has a full-depth candidate) after each trial, the trials needed to reach the table's top 5% (median and
mean over seeds; a seed that never does counts as `--trials`, a lower bound, and the fraction that does is
given), and how often the consensus of the search is in the top 5%, made with the top quarter and N_0 (the
default before this benchmark) and with the paper's K-means top cluster and N_0 / N_1 votes. `gp_startup10` is
GP with Optuna's default 10 random start-up trials (Composer's default is 5, as for TPE: measured here). The
incremental search spends its first stage on depth-3 models: those trials count as trials, but not as finds.
The layer-wise strategies sample with their default samplers (one-shot: TPE; incremental: random);
`incremental_tpe` is the end-layer search with TPE, and the `_top_quarter` rows vote
each stage over the top quarter instead of the default 5-means top cluster.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, write_result  # noqa: E402
from benchmarks.strategy_table import TABLE_PATH, build_table, table_space_yaml  # noqa: E402

STRATEGIES = {
    "random": {"name": "random"},
    "grid": {"name": "grid"},
    "tpe": {"name": "tpe"},
    "gp": {"name": "gp"},
    "gp_startup10": {"name": "gp", "options": {"n_startup_trials": 10}},
    "nsga2": {"name": "nsga2"},
    "evolution": {"name": "evolution"},
    "one_shot": {"name": "one_shot"},
    "incremental": {"name": "incremental", "options": {"step": 3}},
    "incremental_middle": {"name": "incremental", "options": {"step": 3, "variant": "middle"}},
    "incremental_tpe": {"name": "incremental", "options": {"step": 3, "sampler": "tpe"}},
    "incremental_top_quarter": {"name": "incremental", "options": {"step": 3}},
    "incremental_middle_top_quarter": {"name": "incremental", "options": {"step": 3, "variant": "middle"}},
    "incremental_tpe_top_quarter": {"name": "incremental", "options": {"step": 3, "sampler": "tpe"}},
}
# the space's `aggregate:` for these (the incremental stages vote with it): the top quarter instead of 5-means
AGGREGATE = {name: {"select": "top_k"} for name in STRATEGIES if name.endswith("_top_quarter")}
TOP_FRACTION = 0.05
AGGREGATIONS = {"top_quarter_n0": {"select": "top_k"}, "kmeans5_n0": {"select": "kmeans"},
                "kmeans5_n1": {"select": "kmeans", "vote": "nc", "context": 1}}


class Replay:
    """One search of the table's space by one strategy: trials are asked and told through StudySearch, with the
    result looked up in the table instead of trained."""

    def __init__(self, space: Any, table: dict[str, Any], run_dir: Path):
        import optuna

        self.space, self.table, self.run_dir = space, table, run_dir
        self.storage = optuna.storages.InMemoryStorage()
        self.rows: list[dict[str, Any]] = []
        self.specs: dict[int, dict[str, Any]] = {}

    def run_trials(self, space: Any, n: int) -> None:
        """What runner._run_tune does for `n` trials, with the trainable replaced by `lookup`."""
        from composer.search.optuna_search import StudySearch
        from composer.search.runner import DefineByRun
        from composer.search.strategies import make_sampler

        sampler = make_sampler(space.strategy, space, space.seed + len(self.rows))
        searcher = StudySearch(space=DefineByRun(space), metric="objective_0", mode=space.modes()[0],
                               sampler=sampler, storage=self.storage, study_name=space.name)
        for _ in range(n):
            trial_id = f"replay_{len(self.rows)}"
            meta = searcher.suggest(trial_id)["meta"]
            result = self.lookup(meta)
            searcher.on_trial_complete(trial_id, result)
            self.rows.append({"trial": meta["trial"], "status": result["status"], "arch_id": meta.get("arch_id"),
                              "val_loss": result.get("val_loss"),
                              "params_json": json.dumps(meta["params"], sort_keys=True, default=str)})
            if meta.get("spec"):
                self.specs[meta["trial"]] = meta["spec"]

    def lookup(self, meta: dict[str, Any]) -> dict[str, Any]:
        """The trial's final report, as composer/search/trial.py makes it, from the table."""
        from composer.search.trial import objectives

        if meta.get("reason"):
            result = {"status": meta["status"], "reason": meta["reason"]}
        else:
            result = {"status": "completed", "val_loss": self.table["archs"][meta["arch_id"]]["val_loss"]}
        result.update(trial=meta["trial"], arch_id=meta.get("arch_id"))
        return {**result, **objectives(result, self.space.objective_names(), self.space.modes()),
                "evaluation": 1, "final": True}

    def search(self) -> None:
        from composer.search.strategies import strategy_of

        strategy_of(self.space).drive(self.space, self.run_dir, lambda: self.rows, self.run_trials)

    def consensus(self, aggregation: dict[str, Any]) -> str | None:
        """The arch_id of the search's consensus under `aggregation` (Aggregation's fields)."""
        import dataclasses

        from composer.canonical_form import arch_id
        from composer.search.aggregate import Aggregation
        from composer.search.consensus import make_consensus
        from composer.spec_parse import load_spec

        space = dataclasses.replace(self.space, aggregate=Aggregation(**aggregation))
        spec = make_consensus(space, self.run_dir, self.rows, lambda r: load_spec(self.specs[r["trial"]]),
                              "consensus")
        return None if spec is None else arch_id(spec)


def replay(name: str, seed: int, trials: int, table: dict[str, Any]) -> dict[str, Any]:
    from composer.search.aggregate import Aggregation
    from composer.search.space_parse import load_space
    from composer.search.strategies import final_rows

    space = load_space(table_space_yaml()).with_overrides(strategy=STRATEGIES[name], seed=seed, trials=trials,
                                                          aggregate=Aggregation(**AGGREGATE.get(name, {})))
    with tempfile.TemporaryDirectory() as tmp:
        run = Replay(space, table, Path(tmp))
        run.search()
        full = {int(r["trial"]) for r in final_rows(space, Path(tmp), run.rows)}
        found = [r["arch_id"] if int(r["trial"]) in full and r["status"] == "completed" else None for r in run.rows]
        return {"found": found, "consensus": {k: run.consensus(v) for k, v in AGGREGATIONS.items()}}


def summarize(name: str, runs: list[dict[str, Any]], table: dict[str, Any], trials: int) -> dict[str, Any]:
    full = {k: v["val_loss"] for k, v in table["archs"].items() if v["depth"] == 6}
    ranked = sorted(full.values())
    best = ranked[0]
    top_n = math.ceil(TOP_FRACTION * len(ranked))
    top = {k for k, v in full.items() if v <= ranked[top_n - 1]}
    curves, reach = [], []
    consensus_top = dict.fromkeys(AGGREGATIONS, 0)
    consensus_regret: dict[str, list[float]] = {k: [] for k in AGGREGATIONS}
    for run in runs:
        so_far, curve, hit = math.inf, [], None
        for t, key in enumerate(run["found"][:trials], start=1):
            if key is not None:
                so_far = min(so_far, full[key])
                if hit is None and key in top:
                    hit = t
            curve.append(so_far - best if so_far < math.inf else None)
        curves.append(curve)
        reach.append(hit)
        for how, key in run["consensus"].items():
            if key in full:
                consensus_top[how] += key in top
                consensus_regret[how].append(full[key] - best)
    reached = [r for r in reach if r is not None]
    censored = [r if r is not None else trials for r in reach]
    return {"strategy": STRATEGIES[name], "seeds": len(runs),
            "mean_regret": [mean_of([c[t] for c in curves]) for t in range(trials)],
            "trials_to_top5": {"median": statistics.median(censored), "mean": round(statistics.fmean(censored), 2),
                               "reached": f"{len(reached)}/{len(runs)}", "per_seed": reach},
            "consensus_in_top5": {how: f"{n}/{len(runs)}" for how, n in consensus_top.items()},
            "consensus_mean_regret": {how: round(statistics.fmean(v), 5) if v else None
                                      for how, v in consensus_regret.items()}}


def mean_of(values: list[float | None]) -> float | None:
    """The mean over the seeds that have a value (all seeds do, but an incremental search's first stage)."""
    known = [v for v in values if v is not None]
    return round(statistics.fmean(known), 5) if len(known) == len(values) else None


def table_facts(table: dict[str, Any]) -> dict[str, Any]:
    full = [v for v in table["archs"].values() if v["depth"] == 6]
    values = sorted(v["val_loss"] for v in full)
    noise = statistics.fmean(abs(v["runs"][0]["val_loss"] - v["runs"][1]["val_loss"]) for v in full)
    top_n = math.ceil(TOP_FRACTION * len(values))
    best = sorted(full, key=lambda v: v["val_loss"])
    return {"archs": len(full), "best": round(values[0], 4), "worst": round(values[-1], 4),
            "mean": round(statistics.fmean(values), 4), "std": round(statistics.pstdev(values), 4),
            "mean_seed_gap": round(noise, 4), "spread_over_seed_gap": round((values[-1] - values[0]) / noise, 1),
            "top5": {"size": top_n, "threshold": round(values[top_n - 1], 4),
                     "stripes": [v["stripe"] for v in best[:top_n]]},
            "cpu_s": round(sum(r["cpu_s"] for v in table["archs"].values() for r in v["runs"]), 1)}


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tab20 = plt.get_cmap("tab20").colors
    palette = [tab20[i] for i in (*range(0, 20, 2), *range(1, 20, 2))]      # the dark ten, then the light ten
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    names = list(results)
    for i, name in enumerate(names):
        curve = results[name]["mean_regret"]
        points = [(t, v) for t, v in enumerate(curve, start=1) if v is not None]
        left.plot([t for t, _ in points], [v for _, v in points], label=name, color=palette[i % 20], lw=1.6)
    left.set_yscale("symlog", linthresh=1e-3)
    left.set_xlabel("trials")
    left.set_ylabel("mean regret (validation loss above the table's best)")
    left.set_title("Regret vs trials (mean over replay seeds)")
    left.legend(fontsize=8, ncol=2)
    left.grid(alpha=0.3)
    per_seed = [[r if r is not None else float("nan") for r in results[n]["trials_to_top5"]["per_seed"]]
                for n in names]
    for i, values in enumerate(per_seed):
        xs = [v for v in values if not math.isnan(v)]
        right.scatter(xs, [i] * len(xs), s=12, alpha=0.5, color=palette[i % 20])
        right.scatter([results[names[i]]["trials_to_top5"]["median"]], [i], marker="|", s=300, color="black")
    right.set_yticks(range(len(names)), [f"{n} ({results[n]['trials_to_top5']['reached']})" for n in names],
                     fontsize=8)
    right.invert_yaxis()
    right.set_xlabel("trials to reach the top 5% (| median; unreached count as the budget)")
    right.set_title("Trials to the top 5%")
    right.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table-only", action="store_true", help="build (or finish) the table, then stop")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--trials", type=int, default=48)
    parser.add_argument("--strategies", nargs="*", default=list(STRATEGIES))
    parser.add_argument("--plot-only", action="store_true", help="redraw strategies.png from strategies.json")
    args = parser.parse_args()
    if args.plot_only:
        plot(json.loads((RESULTS / "strategies.json").read_text())["strategies"], RESULTS / "strategies.png")
        return
    import optuna
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    table = build_table(log=lambda m: print(m, flush=True))
    if args.table_only:
        print(TABLE_PATH)
        return
    facts = table_facts(table)
    print(facts, flush=True)
    results = {}
    for name in args.strategies:
        start, cpu = time.time(), time.process_time()
        runs = [replay(name, seed, args.trials, table) for seed in range(args.seeds)]
        results[name] = summarize(name, runs, table, args.trials)
        results[name]["replay_cpu_s"] = round(time.process_time() - cpu, 1)
        print(name, results[name]["trials_to_top5"], "consensus in top 5%:", results[name]["consensus_in_top5"],
              f"({time.time() - start:.0f} s)", flush=True)
    random_median = results.get("random", {}).get("trials_to_top5", {}).get("median")
    goal = {n: {"median": results[n]["trials_to_top5"]["median"], "random_median": random_median,
                "at_most_half_of_random": results[n]["trials_to_top5"]["median"] <= random_median / 2}
            for n in ("gp", "tpe") if n in results and random_median}
    plot(results, RESULTS / "strategies.png")
    print(write_result("strategies", {"table": facts, "trials": args.trials, "seeds": args.seeds,
                                      "goal_model_based_at_most_half_of_random": goal, "strategies": results}))


if __name__ == "__main__":
    main()
