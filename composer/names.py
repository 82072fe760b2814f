"""How messages name things: the did-you-mean hint for an unknown name, and a value quoted briefly.

A ground-floor module (the standard library only; see composer/fields.py): the primitives import it too, and the
standalone export inlines it.
"""

from __future__ import annotations

import difflib
from typing import Any


def close_matches(name: Any, known: list[str], n: int = 1) -> list[str]:
    """The names in `known` close to `name`, closest first (at most `n`)."""
    return difflib.get_close_matches(str(name), known, n=n, cutoff=0.5)


def suggestion(name: Any, known: list[str], n: int = 1) -> str:
    """`did you mean 'x'?` (up to `n` close matches), or `known: a, b, c` when none is close."""
    close = close_matches(name, known, n)
    if close:
        return f"did you mean {' or '.join(repr(c) for c in close)}?"
    return f"known: {', '.join(sorted(known))}"


def unknown_name_message(what: str, name: Any, known: list[str]) -> str:
    """`unknown primitive 'atention'; did you mean 'attention'?`"""
    return f"unknown {what} {name!r}; {suggestion(name, known)}"


def brief(value: Any, limit: int = 60) -> str:
    """`repr(value)` with its middle cut out past `limit` characters (a 5,000-digit number in a message)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit // 2]}...{text[-limit // 2:]} ({len(text):,} characters)"
