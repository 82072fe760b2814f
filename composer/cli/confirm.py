"""`composer confirm RUN`: train a search's top candidates, its consensus and a baseline at larger sizes on the
target task with several seeds, and report whether the search's winner holds up (composer/confirm/)."""

from __future__ import annotations

import argparse
import typing
from typing import Any

from composer.cli.common import add_setting_flags, print_json
from composer.errors import UserError
from composer.yaml_source import parse_yaml

BUDGET_FLAGS = ("steps", "seconds")
SET_HERE = ("lrs", "final_splits", "workers")   # settings confirm sets itself: --lrs (its sweep), --workers-per-trial


def register(sub: argparse._SubParsersAction) -> None:
    from scaling.rules import Count, Method

    p = sub.add_parser(
        "confirm", help="confirm a search's winners at larger sizes against a baseline, with statistics",
        description="Fit the top-k trials of a search, its consensus and a baseline (default: the transformer of "
        "the search's base) to each size (equal counted parameters, within the tolerance), sweep each one's "
        "learning rate (chosen on the validation split), train them with equal tokens and several seeds (Ray "
        "tasks; a rerun resumes), and report per size, on the test split: the loss over seeds with intervals, "
        "proxy -> target rank agreement beside the seed-to-seed noise floor, and paired differences against the "
        "baseline with a verdict. Writes RUN/confirm.json and RUN/confirm/ladder.json. Defaults come from the "
        "space's `confirm:` block, then these flags. Training settings default to the search's (budget aside).")
    p.add_argument("run", help="search run directory (runs/<name>)")
    p.add_argument("--sizes", nargs="+", metavar="N", help="parameter targets (e.g. 1M 4M), or multiples of the best "
                   "trial's size (10x); default 10x")
    p.add_argument("--seeds", metavar="N|auto", help="seeds per candidate and size (at least 2), or auto (default): "
                   "2, and more for the best trial and the first baseline while their difference is undecided")
    p.add_argument("--max-seeds", type=int, metavar="N", help="with --seeds auto, add seeds up to N (default 6)")
    p.add_argument("--resolution", type=float, metavar="NATS", help="with --seeds auto, stop once the interval's "
                   "half-width is at most this (default 0.01)")
    p.add_argument("--lrs", nargs="+", metavar="LR", help="each candidate's learning-rate sweep at each size: "
                   "multiples of the recipe's lr (default 0.5x 1x 2x) or learning rates (1e-3 3e-3); one value: "
                   "no sweep")
    p.add_argument("--lr-extend", type=int, metavar="N", help="a best lr at an end of the sweep extends it one step "
                   "beyond, at most N times (default 2)")
    p.add_argument("--top-k", type=int, metavar="K", help="distinct completed trials to confirm (default 3)")
    p.add_argument("--spread", type=int, metavar="N", help="also N trials spread evenly over the rest of the "
                   "search's ranking, so the proxy -> target rank agreement spans good and bad candidates "
                   "(default 0)")
    p.add_argument("--baseline", nargs="+", metavar="B",
                   help="`transformer` (default), zoo:NAME members (`composer zoo`) and/or spec files")
    p.add_argument("--no-consensus", action="store_true", help="leave the consensus out")
    p.add_argument("--tokens-per-param", type=float, metavar="R",
                   help="train each size on R x its parameter target tokens (default 20)")
    p.add_argument("--count", choices=typing.get_args(Count), help="which parameters a size counts "
                   "(default non_embedding)")
    p.add_argument("--method", choices=typing.get_args(Method), help="depth rule (default auto: stack a search "
                   "of fewer than 16 layers, stretch a longer one)")
    p.add_argument("--tolerance", type=float, metavar="F", help="how far apart (relative) two candidates' counted "
                   "parameters at one size may be; each is fitted to within half of it of the target, and a "
                   "comparison further apart is refused (default 0.02)")
    p.add_argument("--task", metavar="NAME", help="target task (default: the search's task)")
    p.add_argument("--data", metavar="PATH", help="text task: a file, directory or glob")
    p.add_argument("--set", dest="task_settings", action="append", default=[], metavar="KEY=VALUE",
                   help="task setting, e.g. --set seq_len=128 (repeatable)")
    p.add_argument("--runner", choices=("ray", "local"), default="ray",
                   help="ray: trials as Ray tasks (default); local: processes on this machine")
    p.add_argument("--workers", type=int, metavar="N", help="trials at once (default: 1 with --runner local; with "
                   "ray, as many as the CPUs allow)")
    p.add_argument("--address", help="Ray cluster to join ('auto' or host:port; default: RAY_ADDRESS or embedded)")
    p.add_argument("--plan", action="store_true", help="print the candidates, how each is sized and the trials; "
                   "train nothing, write nothing")
    p.add_argument("--json", action="store_true", help="print the result (or with --plan, the plan) as JSON")
    p.add_argument("--workers-per-trial", type=int, metavar="N", help="data-parallel workers each trial trains on "
                   "(Ray Train), the trial's --threads split evenly over them (default: the search's "
                   "resources.workers_per_trial)")
    add_setting_flags(p, skip=SET_HERE)
    p.set_defaults(func=run)


def settings_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The training settings given as flags (budget and seed are the confirmation's own)."""
    from composer.training.config import SETTINGS

    given = {key: getattr(args, key) for key in SETTINGS
             if key not in SET_HERE and getattr(args, key, None) is not None}
    for key in BUDGET_FLAGS:
        if key in given:
            raise UserError("confirm trains every candidate on equal tokens: use --tokens or --tokens-per-param",
                            path=f"--{key}")
    if "seed" in given:
        raise UserError("confirm sets each trial's seed: use --seeds N", path="--seed")
    given.pop("tokens", None)
    given.pop("threads", None)          # how trials run, not how they train: passed to the runner
    return given


def config_from_args(args: argparse.Namespace) -> Any:
    """The run's `confirm:` block (if any), then the flags; one ConfirmConfig."""
    from composer.confirm import parse_confirm
    from composer.runs import RunDir
    from composer.yaml_source import read_source

    run = RunDir(args.run)
    block: dict[str, Any] = {}
    if run.exists():
        data = read_source(run.path("space.yaml")).data or {}
        block = dict(data.get("confirm") or {}) if isinstance(data, dict) else {}
    flags = {"sizes": args.sizes, "seeds": args.seeds, "max_seeds": args.max_seeds, "resolution": args.resolution,
             "lrs": args.lrs, "lr_extend": args.lr_extend, "top_k": args.top_k, "spread": args.spread,
             "baseline": args.baseline, "tokens_per_param": args.tokens_per_param, "count": args.count,
             "method": args.method, "tolerance": args.tolerance, "workers_per_trial": args.workers_per_trial}
    given = {k: v for k, v in flags.items() if v is not None}
    if args.no_consensus:
        given["consensus"] = False
    if args.tokens is not None and args.tokens_per_param is not None:
        raise UserError("give --tokens or --tokens-per-param, not both", path="--tokens")
    if args.tokens is not None:
        given["tokens"] = args.tokens
        block.pop("tokens_per_param", None)
    elif args.tokens_per_param is not None:
        block.pop("tokens", None)
    task = _task(args, block, run)
    if task is not None:
        given["task"] = task
    train = {**(block.get("train") or {}), **settings_from_flags(args)}
    if train:
        given["train"] = train
    try:
        return parse_confirm({**block, **given}, path="confirm")
    except UserError as e:
        if e.path and e.path.startswith("confirm.") and e.path.split(".")[1] in flags:
            raise UserError(e.message, path="--" + e.path.split(".")[1].replace("_", "-")) from None
        raise


def _task(args: argparse.Namespace, block: dict[str, Any], run: Any) -> dict[str, Any] | None:
    """The task from --task / --data / --set over the block's (or the search's) task; None when not given."""
    from composer.tasks import TaskRef

    if args.task is None and args.data is None and not args.task_settings:
        return None
    base = block.get("task")
    if base is None and run.exists():
        from composer.yaml_source import read_source

        data = read_source(run.path("space.yaml")).data
        base = data.get("task") if isinstance(data, dict) else None
    base = {"name": base} if isinstance(base, str) else dict(base or {})
    name = args.task or base.get("name")
    if args.data is not None and args.task is None and name != "text":
        raise UserError(f"--data applies to the text task; the search's task is {name!r}: add --task text",
                        path="--data")
    params = dict(TaskRef.of(base).params) if base and name == base.get("name") else {}
    params.update(parse_task_settings(args.task_settings))
    if args.data is not None:
        params["data"] = args.data
    return {"name": name, "params": params}


def parse_task_settings(items: list[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` items -> task parameters (values read as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"expected KEY=VALUE, got {item!r}", path="--set")
        try:
            out[key.strip()] = parse_yaml(value).data
        except UserError as e:
            raise UserError(e.message, path=f"--set {key.strip()}") from None
    return out


def run(args: argparse.Namespace) -> int:
    from composer.confirm import format_plan, format_results, plan_confirm, run_plan

    if args.workers is not None and args.workers < 1:
        raise UserError(f"expected an integer >= 1, got {args.workers}", path="--workers")
    plan = plan_confirm(args.run, config_from_args(args))
    if args.json and args.plan:
        print_json(plan.describe())
    elif not args.json:
        print(format_plan(plan.describe()), flush=True)
    if args.plan:
        return 0
    result = run_plan(plan, runner=args.runner, workers=args.workers, threads=args.threads or 1,
                      address=args.address, log=None if args.json else (lambda m: print(m, flush=True)))
    if args.json:
        print_json(result)
    else:
        print(format_results(result))
        print(f"wrote {result['trials_file']} and {args.run.rstrip('/')}/confirm.json")
    return 0
