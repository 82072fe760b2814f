"""`composer report runs/<name>`: an HTML page (figures inlined, opens offline) and PNGs for a search run."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="write an HTML + PNG report of a search run",
        description="The best architecture and the consensus, counts per status, wall time and the objective; "
                    "then Pareto fronts (quality vs parameters, FLOPs, state bytes), best-so-far, learning "
                    "curves, architecture stripes, parameter importances and scaling fits (when the run has a "
                    "ladder); then a sortable leaderboard. Writes <run>/report/report.html unless --out is given.")
    parser.add_argument("run", help="search run directory (runs/<name>)")
    parser.add_argument("--out", help="folder for report.html and the PNGs (default: <run>/report)")
    parser.add_argument("--include-pruned", action="store_true",
                        help="draw the trials stopped early on the Pareto figure too (apart from the front, "
                             "which holds full-budget trials only)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from composer.errors import UserError
    from composer.report import build_report

    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"{args.out} is a file; give a folder for the report", path="--out")
    build_report(args.run, args.out, include_pruned=args.include_pruned)
    return 0
