"""The `composer` command. Each subcommand lives in its own module of this package with `register(subparsers)`;
what they share is in common.py (they never import one another).

Every way a command can fail because of its input ends in one line `error: ...` on stderr and exit code 2:
a UserError, a command-line usage error, and an OSError from the file system (a path that is a file, no
permission, a full disk). Ctrl-C exits 130; a closed stdout (`composer primitives | head`) exits quietly.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import NoReturn

from composer.errors import UserError

SUBCOMMAND_MODULES = tuple(f"composer.cli.{name}" for name in (
    "spec", "train", "search", "scale", "export", "report", "primitives", "eval", "confirm", "bench", "zoo"))


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a usage mistake reported as one `error:` line and exit 2, like every other user error
    (subcommand parsers are made by the same class)."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


PROGRAMS = ("composer", "hybrid-composer")   # the command's two names (pyproject.toml [project.scripts])


class VersionAction(argparse.Action):
    """`--version`: `composer 0.1.0`, and on a line of its own (never wrapped) the warning when another
    distribution provides Composer's import names."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> NoReturn:
        warning = conflict_warning()
        print(f"{parser.prog} {version()}" + (f"\n{warning}" if warning else ""))
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=program_name(),
        description="Design hybrid sequence-model architectures by search.",
    )
    parser.add_argument("--version", action=VersionAction, nargs=0, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def program_name() -> str:
    """`hybrid-composer` when the command was run by that name, else `composer`."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return name if name in PROGRAMS else "composer"


def conflict_warning() -> str | None:
    """The one-line warning when another installed distribution provides `composer`, `primitives` or `scaling`
    (composer/version.py)."""
    from composer.version import conflict_warning as warning

    return warning()


def version() -> str:
    """The installed distribution's version, else the package's `__version__` (a source tree not installed)."""
    from composer.version import installed_version

    return installed_version()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    words = sys.argv[1:] if argv is None else argv
    warning = conflict_warning()
    if warning and "--version" not in words:        # --version prints it with the version
        print(warning, file=sys.stderr)
    try:
        args = parser.parse_args(argv)
        result = args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return 1
    except OSError as e:
        print(f"error: {UserError(os_error_text(e))}", file=sys.stderr)
        return 2
    return int(result or 0)


def os_error_text(e: OSError) -> str:
    """`runs/x: Permission denied` for an OSError from the file system."""
    names = " -> ".join(str(name) for name in (e.filename, e.filename2) if name is not None)
    return f"{names}: {e.strerror}" if names and e.strerror else str(e)


def _quiet_stdout() -> None:
    """After the reader of stdout went away: point stdout at devnull, so the interpreter's final flush does not
    fail again (the recipe of the `signal` module's documentation, "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file descriptor (captured in a test)
        pass
