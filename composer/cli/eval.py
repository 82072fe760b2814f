"""`composer eval BUNDLE --tasks hellaswag,arc_easy`: lm-evaluation-harness tasks on an exported bundle.

Needs the optional extra: `pip install 'hybrid-composer[eval]'`.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from composer.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="run lm-evaluation-harness tasks on an exported bundle (needs the eval extra)",
        description="Evaluate a bundle written by `composer export` with lm-evaluation-harness (its Python API): "
                    "standard tasks by name (hellaswag, arc_easy, lambada_openai, ...; list them with "
                    "`lm-eval ls tasks`), task YAML files, or tasks defined in --include folders. "
                    "Install with: pip install 'hybrid-composer[eval]'.")
    parser.add_argument("bundle", help="bundle directory (from composer export)")
    parser.add_argument("--tasks", required=True, help="comma-separated lm-eval task names or task YAML files")
    parser.add_argument("--include", action="append", default=[], metavar="DIR",
                        help="a folder of task YAML files (lm-eval's include_path; repeatable)")
    parser.add_argument("--num-fewshot", type=int, default=None, help="few-shot examples (default: the task's)")
    parser.add_argument("--limit", type=float, default=None,
                        help="examples per task (a count, or a fraction below 1); for quick checks only")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass (default 16)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu), e.g. cuda")
    parser.add_argument("--seed", type=int, default=0, help="seed for few-shot sampling (default 0)")
    parser.add_argument("--out", default=None, metavar="FILE", help="write the results as JSON here")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from composer.atomic import write_atomic
    from composer.eval import evaluate_bundle, require_lm_eval
    from composer.provenance import provenance

    require_lm_eval()
    bundle = Path(args.bundle)
    if not bundle.is_dir():
        raise UserError(f"{bundle}: no such bundle directory")
    missing = [name for name in ("spec.yaml", "config.json") if not (bundle / name).is_file()]
    if missing:
        raise UserError(f"{bundle}: not a bundle (no {' or '.join(missing)}); write one with `composer export`")
    if args.limit is not None and not (math.isfinite(args.limit) and args.limit > 0):
        raise UserError(f"expected a count, or a fraction below 1, > 0, got {args.limit}", path="--limit")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}", path="--batch-size")
    out = Path(args.out) if args.out else None
    if out is not None and out.is_dir():
        raise UserError(f"{out}: is a folder; give a file name for the results", path="--out")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    _check_device(args.device)
    results = evaluate_bundle(bundle, tasks, include=args.include, num_fewshot=args.num_fewshot, limit=args.limit,
                              batch_size=args.batch_size, device=args.device, seed=args.seed)
    report = {"bundle": str(bundle), "tasks": tasks, "results": results.get("results", {}),
              "groups": results.get("groups", {}), "n-shot": results.get("n-shot", {}),
              "versions": results.get("versions", {}), "n-samples": results.get("n-samples", {}),
              "limit": args.limit, "provenance": provenance(args.device)}
    text = json.dumps(report, indent=2, default=str)
    if out is not None:
        write_atomic(out, text + "\n")
    if args.json:
        print(text)
    else:
        from lm_eval.utils import make_table

        print(make_table(results))
        if results.get("groups"):
            print(make_table(results, "groups"))
        if out is not None:
            print(f"wrote {out}")
    return 0


def _check_device(device: str) -> None:
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError) as e:
        raise UserError(f"not a torch device: {device!r} ({e})", path="--device") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: CUDA is not available on this machine", path="--device")
