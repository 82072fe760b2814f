"""`composer scale SPEC ...` (grow or shrink a spec by the scaling rules), `composer ladder LADDER.yaml`."""

from __future__ import annotations

import argparse
import typing
from pathlib import Path

from composer.atomic import write_atomic
from composer.canonical_form import stripe
from composer.cli.common import check_context
from composer.costs import model_cost
from composer.errors import UserError
from composer.limits import MAX_LAYERS
from composer.reader import Reader
from composer.runs import check_not_run_file
from composer.spec import ArchSpec
from composer.spec_parse import load_spec
from composer.units import human


def register(sub: argparse._SubParsersAction) -> None:
    from scaling.rules import Count, Method

    p = sub.add_parser("scale", help="scale an architecture to a size, depth or width",
                       description="Apply the scaling rules (stack, stretch, widen, fit to a parameter "
                       "count) to a spec, print the before/after table and write the new spec.")
    p.add_argument("spec", help="architecture YAML file")
    target = p.add_mutually_exclusive_group(required=False)
    target.add_argument("--params", metavar="N", help="parameter target, e.g. 20M (depth and width chosen)")
    p.add_argument("--layers", type=int, metavar="L", help="number of layer units (stack: a multiple of the "
                   "current count)")
    p.add_argument("--d-model", type=int, metavar="D", help="model width (heads, d_ff, ... rescaled)")
    p.add_argument("--method", choices=typing.get_args(Method), default="auto",
                   help="depth rule; auto stacks a spec of fewer than 16 layer units, stretches a longer one")
    p.add_argument("--count", choices=typing.get_args(Count), default="non_embedding",
                   help="which parameters --params counts (default non_embedding; active for MoE)")
    p.add_argument("--tol", type=float, default=0.02, help="relative tolerance of --params (default 0.02)")
    p.add_argument("--context", type=int, default=None, metavar="L",
                   help="context length for FLOPs and state (default: the spec's max_seq_len)")
    p.add_argument("--out", required=True, help="where to write the scaled spec (YAML)")
    p.set_defaults(func=run_scale)

    p = sub.add_parser("ladder", help="train architectures at several sizes and fit scaling laws",
                       description="Train each architecture of a ladder file at each size (and seed), fit "
                       "L(N) = E + A N^-alpha with bootstrap intervals, and report rank transfer from the "
                       "smallest size. Results in <out-root>/<name>/ladder.json; a rerun resumes.")
    p.add_argument("ladder", help="ladder YAML file")
    p.add_argument("--out-root", default="runs", help="directory of ladder results (default runs)")
    p.add_argument("--runner", choices=["ray", "local"], default="ray",
                   help="ray: trials as Ray tasks, like `composer search` (default); local: processes here")
    p.add_argument("--address", default=None, help="Ray cluster to join ('auto' or host:port; default: "
                   "RAY_ADDRESS or embedded)")
    p.add_argument("--workers", type=int, default=1,
                   help="with --runner local: trials trained at once (processes; default 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per trial")
    p.add_argument("--plan", action="store_true", help="print the trials (sizes, depth, width, tokens) only")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="PATH=VALUE",
                   help="override the ladder by dotted path, values as YAML: --set train.warmup_steps=5 "
                   "task.params.seq_len=64 seeds=[0,1]")
    p.add_argument("--log", nargs="+", default=None, metavar="LOGGER",
                   help="log each trial's settings and evaluations to tensorboard, csv, wandb and/or mlflow in "
                   "<out-root>/<name>/trials/<trial>/ (replaces the file's `logging:`)")
    p.set_defaults(func=run_ladder_command)


def scale_spec(spec: ArchSpec, args: argparse.Namespace) -> ArchSpec:
    from composer.limits import MAX_PARAMS
    from scaling.ladder_parse import parse_count
    from scaling.rules import choose_method, fit_to_params, stack, stretch, units, widen

    if args.params is not None:
        if args.layers is not None or args.d_model is not None:
            raise UserError("give --params alone, or --layers and/or --d-model")
        try:
            n = parse_count(args.params, MAX_PARAMS)
        except ValueError as e:
            raise UserError(str(e), path="--params") from None
        tol = Reader().number(args.tol, "--tol", gt=0, lt=1)
        return fit_to_params(spec, n, tol, method=args.method, count=args.count)
    if args.layers is None and args.d_model is None:
        raise UserError("give --params, --layers or --d-model")
    if args.layers is not None:
        if not 1 <= args.layers <= MAX_LAYERS:
            raise UserError(f"expected a layer count in [1, {MAX_LAYERS:,}] (limit MAX_LAYERS), got {args.layers}",
                            path="--layers")
        method = choose_method(spec, args.method)
        current = len(units(spec))
        if method == "stack":
            if args.layers % current:
                raise UserError(f"stacking keeps the searched block whole: --layers must be a multiple of "
                                f"{current} (or use --method stretch)", path="--layers")
            spec = stack(spec, args.layers // current)
        else:
            spec = stretch(spec, args.layers)
    if args.d_model is not None:
        spec = widen(spec, args.d_model)
    return spec


def facts(spec: ArchSpec, context: int | None) -> dict[str, str]:
    from scaling.rules import units

    cost = model_cost(spec, seq_len=context)
    return {
        "layers": str(len(units(spec))),
        "d_model": str(spec.d_model),
        "params": f"{cost.params:,}",
        "non-embedding": f"{cost.non_embedding_params:,}",
        "active": f"{cost.active_params:,}",
        "FLOPs/token": human(cost.flops_per_token),
        "state bytes": f"{cost.state_bytes:,}",
        "stripe": stripe(spec),
    }


def comparison_table(before: dict[str, str], after: dict[str, str]) -> str:
    rows = [("", "before", "after")] + [(k, before[k], after[k]) for k in before if k != "stripe"]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + [f"stripe before  {before['stripe']}", f"stripe after   {after['stripe']}"])


def run_scale(args: argparse.Namespace) -> int:
    from composer.spec_parse import dump_spec

    if not Path(args.out).parent.is_dir():
        raise UserError(f"directory does not exist: {Path(args.out).parent}", path="--out")
    check_not_run_file(args.out, "--out")
    check_context(args.context)
    spec = load_spec(Path(args.spec))
    scaled = scale_spec(spec, args)
    write_atomic(args.out, dump_spec(scaled))
    print(comparison_table(facts(spec, args.context), facts(scaled, args.context)))
    print(f"wrote {args.out}")
    return 0


def run_ladder_command(args: argparse.Namespace) -> int:
    from scaling.ladder import LocalRunner, plan, run_ladder
    from scaling.ladder_parse import load_ladder

    for flag in ("workers", "threads"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UserError(f"expected a number >= 1, got {value}", path=f"--{flag}")
    source = args.ladder
    if args.overrides:
        from composer.overrides import apply_to_source
        from composer.yaml_source import read_source
        from scaling.ladder_parse import LADDER_KEYS

        source = apply_to_source(read_source(args.ladder), args.overrides, LADDER_KEYS)
    ladder = load_ladder(source)
    if args.log is not None:
        from composer.tracking import check_backends

        ladder.logging = check_backends(args.log)
    if args.plan:
        for trial in plan(ladder):
            print(f"{trial.arch:24s} {trial.size:>8s} seed {trial.seed}  d_model {trial.spec.d_model:5d}  "
                  f"{stripe(trial.spec)}  tokens {trial.tokens:,}")
        return 0
    if args.runner == "ray":
        from scaling.ray_runner import RayRunner

        runner = RayRunner(args.address, threads=args.threads or 1, log=print)
    else:
        runner = LocalRunner(args.workers, args.threads, log=print)
    result = run_ladder(ladder, args.out_root, runner, log=print)
    print(format_report(result))
    return 0


def format_report(result: dict) -> str:
    lines = ["", "fits  L(N) = E + A * N^-alpha  (90% bootstrap intervals)"]
    for arch, fit in result.get("fits", {}).items():
        from scaling.laws import describe_fit

        line = f"  {arch:24s} {describe_fit(fit)}"          # an unidentifiable fit: why, and no numbers
        if "prediction" in fit and fit.get("identifiable", True):
            p = fit["prediction"]
            lo, hi = p["interval"]
            line += f"  L({p['n_params']:.3g})={p['loss']:.3f} [{lo:.3f}, {hi:.3f}]"
        lines.append(line)
    transfer = result.get("transfer", {})
    if "transfer" in transfer:
        lines.append(f"rank transfer from {transfer['base_size']} (noise floor: agreement between seeds)")
        for size, agree in transfer["transfer"].items():
            floor = transfer["noise_floor"].get(size, {}).get("spearman", float("nan"))
            lines.append(f"  {size:>8s} spearman {agree['spearman']:+.3f} kendall {agree['kendall']:+.3f} "
                         f"pairwise {agree['pairwise']:.3f}   floor spearman {floor:+.3f}")
    if "plot" in result:
        lines.append(f"plot: {result['plot']}")
    return "\n".join(lines)
