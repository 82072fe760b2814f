"""`composer search SPACE`: run an architecture search; `--dry-run` checks the whole search and shows the space
without starting Ray; `--resume runs/<name>` continues an interrupted search. Ctrl-C (or SIGTERM) stops the
trials, writes what finished marked partial, and exits 130 (143 for SIGTERM)."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from composer.errors import UserError
from composer.limits import MAX_DRY_RUN_SAMPLES


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("search", help="search a YAML space of architectures (Ray Tune + Optuna)",
                              description=__doc__)
    p.add_argument("space", nargs="?", help="the search space YAML (e.g. search_spaces/quickstart.yaml)")
    p.add_argument("--name", help="the run folder name under --runs-dir (default: the space's name)")
    p.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the search in RUN_DIR (e.g. runs/quickstart)")
    p.add_argument("--trials", type=int, help="number of trials (overrides the space)")
    p.add_argument("--max-concurrent", type=int, help="trials running at once (overrides the space)")
    p.add_argument("--address", help="join a Ray cluster ('auto', or host:port); default: RAY_ADDRESS or embedded")
    p.add_argument("--dry-run", action="store_true", help="print the space size and sampled candidates; no training")
    p.add_argument("--samples", type=int, default=5, help="candidates shown by --dry-run (default 5)")
    p.add_argument("--verbose", action="store_true", help="show Ray's logs and Tune's progress tables")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="PATH=VALUE",
                   help="override the space by dotted path, values as YAML: --set train.warmup_steps=5 "
                   "task.params.seq_len=64 base.d_model=96 trials=4")
    p.add_argument("--log", nargs="+", metavar="LOGGER", help="Ray Tune loggers per trial (the space's `logging:`): "
                   "tensorboard (needs tensorboardX), csv, wandb (offline), mlflow (RUN/mlruns); default csv, and "
                   "tensorboard when tensorboardX is installed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.resume and args.space:
        raise UserError("give either SPACE or --resume RUN_DIR, not both")
    if not args.resume and not args.space:
        raise UserError("expected a search space file (composer search SPACE) or --resume RUN_DIR")
    for flag in ("trials", "max_concurrent", "samples"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if args.samples > MAX_DRY_RUN_SAMPLES:
        raise UserError(f"expected at most {MAX_DRY_RUN_SAMPLES:,} (limit MAX_DRY_RUN_SAMPLES), got {args.samples}",
                        path="--samples")
    if args.name is not None:
        from composer.runs import safe_name

        safe_name(args.name, "--name")
    space_arg = args.space
    if args.log:
        args.overrides = [*args.overrides, f"logging={args.log!r}"]
    if args.overrides:
        if args.resume:
            raise UserError("--set changes the space; a resumed search keeps the space it started with", path="--set")
        from composer.overrides import apply_to_source
        from composer.search.space_parse import TOP_KEYS
        from composer.yaml_source import read_source

        space_arg = apply_to_source(read_source(args.space), args.overrides, TOP_KEYS)
    if args.dry_run:
        from composer.search.setup import check_search
        from composer.search.space_parse import load_space

        space = load_space(space_arg or f"{args.resume}/space.yaml")
        space = space.with_overrides(trials=args.trials)
        if args.max_concurrent:
            space = space.with_overrides(resources={**space.resources, "max_concurrent": args.max_concurrent})
        check_search(space, args.address)
        print(dry_run(space, args.samples))
        return 0
    from composer.confirm import search_then_confirm
    from composer.search.runner import SearchInterrupted

    try:
        result = search_then_confirm(space_arg, name=args.name, runs_dir=args.runs_dir, run_dir=args.resume,
                                     resume=bool(args.resume), trials=args.trials, max_concurrent=args.max_concurrent,
                                     address=args.address, verbose=args.verbose)
    except SearchInterrupted as stop:
        print(summary_text(stop.result))
        print(f"search interrupted by {stop.result.summary['signal']}: {stop.result.summary['partial']}; "
              f"continue with: {stop.result.summary['resume']}", file=sys.stderr)
        return stop.exit_code
    print(summary_text(result))
    return 0


def dry_run(space: Any, samples: int) -> str:
    """The space's size, its searched names, and a few random candidates with their costs."""
    import optuna

    from composer.canonical_form import arch_id, stripe
    from composer.costs import model_cost

    size = space.size()
    lines = [f"search space {space.name!r}: {space.description}" if space.description else
             f"search space {space.name!r}",
             f"  size: {'infinite (continuous ranges)' if math.isinf(size) else f'{int(size):,} parameter settings'}",
             f"  task: {space.task.name} {space.task.params}; objectives: "
             + ", ".join(f"{o['mode']} {o['metric']}" for o in space.objectives),
             f"  strategy: {space.strategy['name']}; scheduler: {space.scheduler['name']}; trials: {space.trials}",
             "  searched:"]
    for name, dist in space.distributions().items():
        values = dist.values if dist.kind == "choice" else f"{dist.kind} [{dist.low}, {dist.high}]" + (
            " log" if dist.log else "")
        lines.append(f"    {name}: {values}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=space.seed))
    lines.append(f"  {samples} sampled candidates:")
    for _ in range(samples):
        candidate = space.sample(study.ask())
        if candidate.invalid:
            lines.append(f"    INVALID {candidate.invalid}")
            continue
        cost = model_cost(candidate.spec, seq_len=space.task_seq_len())
        verdict = space.check_constraints(candidate.spec)
        lines.append(f"    {arch_id(candidate.spec)[:10]}  {stripe(candidate.spec):<28} params {cost.params:>10,}  "
                     f"flops/token {cost.flops_per_token:>12,.0f}  state {cost.state_bytes:>10,} B"
                     + (f"  PRUNED: {verdict}" if verdict else ""))
    return "\n".join(lines)


def summary_text(result: Any) -> str:
    """What a search did: its own trials counted (the consensus, trained after them, has its own line)."""
    from collections import Counter

    from composer.search.aggregate import searched

    own = searched(result.rows)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(Counter(r["status"] for r in own).items()))
    state = (f"search interrupted (partial): {len(own)} of {result.summary.get('planned_trials')}"
             if result.summary.get("interrupted") else f"search finished: {len(own)}")
    lines = [f"{state} trials ({counts}) in {result.summary.get('elapsed_s')} s", f"  run folder: {result.run_dir}"]
    if result.best_row:
        metric = result.summary["objectives"][0]["metric"]
        so_far = " so far" if result.summary.get("interrupted") else ""
        lines.append(f"  best{so_far}: trial {result.best_row['trial']} {result.best_row['stripe']}  "
                     f"{metric} {result.best_row.get(metric)}  -> {result.run_dir}/best.yaml")
    if result.consensus is not None:
        from composer.canonical_form import stripe

        lines.append(f"  consensus: {stripe(result.consensus)}  -> {result.run_dir}/consensus.yaml")
        scored = result.summary.get("consensus") or {}
        if scored.get("trial") is not None and scored.get("same_as_best"):
            lines.append(f"    trained as trial {scored['trial']}: the best single trial's architecture "
                         f"({scored['metric']} {scored['value']})")
        elif scored.get("trial") is not None:       # trained as its own trial (composer/search/consensus.py)
            verdict = "beats" if scored["beats_best"] else "does not beat"
            lines.append(f"    trained as trial {scored['trial']}: {scored['metric']} {scored['value']}, {verdict} the "
                         f"best single trial ({scored['best_value']})")
        else:
            for row in (r for r in result.rows if r.get("consensus")):
                reason = f": {row['reason']}" if row.get("reason") else ""
                lines.append(f"    trial {row['trial']} (the consensus): {row['status']}{reason}")
    if "hypervolume" in result.summary:         # a multi-objective search
        volume = result.summary["hypervolume"]
        measure = (f", hypervolume {volume['hypervolume']:.4g} (reference point ["
                   + ", ".join(f"{v:.4g}" for v in volume["reference_point"]) + "])") if volume else ""
        lines.append(f"  Pareto front: {len(result.pareto)} trials{measure}  -> {result.run_dir}/pareto.json")
    lines.append(f"  leaderboard: {result.run_dir}/leaderboard.csv; "
                 f"study: optuna-dashboard sqlite:///{result.run_dir}/study.db")
    return "\n".join(lines)
