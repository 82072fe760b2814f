"""Aggregation of a layer-wise search: select the top candidates, then take the per-layer majority vote.

The vote works on the expanded top-level layer list of each spec (a `repeat` written out): the depth is the
most common depth, and each position takes the most common layer among the candidates that have it. Ties
go to the better-ranked candidate, so the result is deterministic given the ranking.

A spec that is one loop around its whole stack (a space's `loop:` over the layers) votes with the loop's body,
and the loop count is voted too (no loop counts as 1): the consensus is the voted body, looped that many
times when more than once, with the loop settings of the best candidate looped that often.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

from composer.spec import ArchSpec, Loop, flatten, node_to_data
from composer.spec_parse import validate_spec


def select_top(rows: list[dict[str, Any]], metric: str, mode: str, top_k: int | None = None,
               threshold: float | None = None) -> list[dict[str, Any]]:
    """Completed rows ranked best first, one per arch_id; the first `top_k`, and/or those within `threshold` of the best
    (absolute difference in `metric`). With neither, the top quarter (at least 3, when there are that many)."""
    usable = [r for r in rows if r.get("status") == "completed" and _finite(r.get(metric))]
    ranked, seen = [], set()
    for row in sorted(usable, key=lambda r: r[metric], reverse=(mode == "max")):
        if row.get("arch_id") is None or row["arch_id"] not in seen:     # a reused duplicate votes once
            ranked.append(row)
            seen.add(row.get("arch_id"))
    if not ranked:
        return []
    if threshold is not None:
        best = ranked[0][metric]
        ranked = [r for r in ranked if abs(r[metric] - best) <= threshold]
    if top_k is None and threshold is None:
        top_k = max(3, math.ceil(len(ranked) / 4))
    return ranked[:top_k] if top_k is not None else ranked


def majority_vote(specs: list[ArchSpec], name: str = "consensus") -> ArchSpec:
    """One architecture from `specs` (ranked best first) by per-layer majority vote; model-wide fields come
    from the best spec."""
    if not specs:
        raise ValueError("majority_vote needs at least one spec")
    loops = [_whole_stack_loop(s) for s in specs]
    bodies = [loop.body if loop is not None else s.layers for s, loop in zip(specs, loops)]
    stacks = [[json.dumps(node_to_data(n), sort_keys=True) for n in flatten(body)] for body in bodies]
    depth = _most_common([len(s) for s in stacks])
    keys = [_most_common([s[i] for s in stacks if len(s) > i]) for i in range(depth)]
    layers = [json.loads(k) for k in keys]
    times = _most_common([loop.times if loop is not None else 1 for loop in loops])
    if times > 1:
        template = next(loop for loop in loops if loop is not None and loop.times == times)
        layers = [{"loop": {**node_to_data(template)["loop"], "body": layers}}]
    best = specs[0]
    data = best.to_dict()
    data["layers"] = layers
    data["name"] = name
    data["description"] = f"per-layer majority vote of the top {len(specs)} candidates"
    from composer.spec_parse import load_spec

    return validate_spec(load_spec(data))


def _whole_stack_loop(spec: ArchSpec) -> Loop | None:
    return spec.layers[0] if len(spec.layers) == 1 and isinstance(spec.layers[0], Loop) else None


def _most_common(values: list[Any]) -> Any:
    """The most frequent value; on a tie, the one that appears first (the better-ranked candidate)."""
    counts = Counter(values)
    top = max(counts.values())
    return next(v for v in values if counts[v] == top)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
