"""Zoo members as confirm baselines: `--baseline zoo:samba` (or `baseline: zoo:samba` in a space's confirm section).

A member enters confirm as its repeating unit (`composer.zoo.period`: the first `unit` layers its entry names, else
every top-level `repeat` once, else the whole layer list) at its published widths, and is then fitted to each size by
the same rules as every candidate (sizing.py: the unit stacked, or its runs stretched, and the width scaled by
`scaling.rules.widen`, heads scaled and head dimensions kept), so the published layer pattern is kept and a searched
hybrid meets it at equal size.
"""

from __future__ import annotations

from composer.spec import ArchSpec
from composer.zoo import is_zoo_ref, zoo_member

__all__ = ["is_zoo_ref", "zoo_baseline"]


def zoo_baseline(ref: str) -> tuple[ArchSpec, str]:
    """(the member's repeating unit, its candidate name) for a `zoo:NAME` baseline."""
    member = zoo_member(ref)
    return member.unit.replace(description=f"{member.entry.title}'s repeating unit, fitted to each size"), member.name
