"""`composer report runs/<name>`: an HTML page (figures inlined, opens offline) and PNGs for a search run."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="write an HTML + PNG report of a search run",
        description="Leaderboard, Pareto fronts (quality vs parameters, FLOPs, state bytes), best-so-far, "
                    "learning curves, architecture stripes, parameter importances and scaling fits "
                    "(when the run has a ladder). Writes <run>/report/report.html unless --out is given.")
    parser.add_argument("run", help="search run directory (runs/<name>)")
    parser.add_argument("--out", help="folder for report.html and the PNGs (default: <run>/report)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from composer.report import build_report

    build_report(args.run, args.out)
    return 0
