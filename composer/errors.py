"""User-facing errors: one clear message, a non-zero exit, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (spec, search space, command line). The CLI prints it and exits 2.

    `path` names the offending field (e.g. `layers[3].body[1].n_heads`), `line` the line in the source file
    when known, `source` the file name when known.
    """

    def __init__(self, message: str, path: str | None = None, line: int | None = None,
                 source: str | None = None):
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.source = source

    def __str__(self) -> str:
        where = ""
        if self.source:
            where = self.source + (f":{self.line}" if self.line else "") + ": "
        elif self.line:
            where = f"line {self.line}: "
        field = f"{self.path}: " if self.path else ""
        return one_line(f"{where}{field}{self.message}")


def one_line(text: str, limit: int = 2000) -> str:
    """A message on one line (line breaks become spaces) of at most `limit` characters (the middle cut out), so
    that a hostile value quoted in a message cannot flood the terminal."""
    text = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    if len(text) > limit:
        text = f"{text[:limit // 2 - 3]} ... {text[-(limit // 2 - 3):]}"
    return text


class SpecError(UserError):
    """An invalid architecture spec."""
