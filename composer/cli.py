"""The `composer` command. Each subcommand lives in its own module with `register(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from composer.errors import UserError

SUBCOMMAND_MODULES = ("composer.cli_spec", "composer.cli_train", "composer.cli_search", "composer.cli_scale",
                      "composer.cli_export", "composer.cli_report", "composer.cli_primitives",
                      "composer.cli_eval")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="composer",
        description="Design hybrid sequence-model architectures by search.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def version() -> str:
    """The installed distribution's version, else the package's `__version__` (a source tree not installed)."""
    from importlib import metadata

    try:
        return metadata.version("hybrid-composer")
    except metadata.PackageNotFoundError:
        import composer

        return getattr(composer, "__version__", "unknown")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


def print_json(data: object) -> None:
    print(json.dumps(data, indent=2, default=str))
