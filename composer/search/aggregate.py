"""Aggregation of a layer-wise search (the Composer paper's): select the top candidates, then merge them into
one consensus architecture by a per-layer vote.

Selection (`aggregate.select`), over completed candidates ranked best first, one per arch_id:

- `top_k`: the first `top_k` (default: the top quarter, at least 3);
- `threshold`: those within `threshold` of the best (absolute difference in the objective);
- `kmeans`: the top cluster of a 1-D k-means of the objective values into `clusters` groups. The clustering is
  the exact one (the least within-cluster sum of squares, found by dynamic programming over the sorted values),
  so it is deterministic and does not depend on a start.

`top_k` also caps a `threshold` or `kmeans` selection when given. Without `select`: `threshold` when a threshold
is given, else `top_k` when a top_k is, else `kmeans` with 5 clusters (its consensus landed in the top 5% most
often in benchmarks/bench_strategies.py). `train` (default true; `false` turns it
off) trains and scores the consensus as one more trial at the end of every search.

Vote (`aggregate.vote`), on the expanded top-level layer list of each spec (a `repeat` written out):

- `n0`: each position takes the most common layer among the candidates that have it (per-layer majority);
- `nc` with `context: c`: position i takes the most common layer among the candidates whose previous c layers
  equal the consensus built so far (N_c). When no candidate matches the full context, the longest context some
  candidate matches is used (down to none: N_0's vote).

The depth is the most common depth. Ties go to the better-ranked candidate, so the result is deterministic
given the ranking. A spec that is one loop around its whole stack (a space's `loop:` over the layers) votes with
the loop's body, and the loop count is voted too (no loop counts as 1): the consensus is the voted body, looped
that many times when more than once, with the loop settings of the best candidate looped that often.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from composer.fields import option
from composer.spec import ArchSpec, Loop, flatten, node_to_data
from composer.spec_parse import validate_spec

Selection = Literal["top_k", "threshold", "kmeans"]
Vote = Literal["n0", "nc"]


@dataclass(frozen=True)
class Aggregation:
    """How a search's consensus is made: the selection and the vote (see the module docstring)."""

    select: Selection = option("kmeans", "how the top candidates are selected")
    top_k: int | None = option(None, "the first top_k (default: the top quarter, at least 3); caps the others",
                               ge=1)
    threshold: float | None = option(None, "those within this distance of the best objective", ge=0)
    clusters: int = option(5, "k of the 1-D k-means whose top cluster is selected", ge=1)
    vote: Vote = option("n0", "n0: per-layer majority; nc: majority among those matching the last `context` layers")
    context: int = option(1, "the layers an nc vote matches", ge=1)
    train: bool = option(True, "train and score the consensus as a trial (composer/search/consensus.py)")

    def top(self, rows: list[dict[str, Any]], metric: str, mode: str) -> list[dict[str, Any]]:
        return select_top(rows, metric, mode, top_k=self.top_k,
                          threshold=self.threshold if self.select == "threshold" else None,
                          clusters=self.clusters if self.select == "kmeans" else None)

    def merge(self, specs: list[ArchSpec], name: str = "consensus", ignore: tuple[str, ...] = ()) -> ArchSpec:
        return vote_specs(specs, name, context=self.context if self.vote == "nc" else 0, ignore=ignore)

    def describe(self) -> str:
        if self.select == "kmeans":
            chosen = f"top cluster of {self.clusters}-means"
        elif self.select == "threshold":
            chosen = f"within {self.threshold:g} of the best"
        else:
            chosen = f"top {self.top_k}" if self.top_k else "top quarter"
        return chosen + (f", N_{self.context} vote" if self.vote == "nc" else ", per-layer majority vote (N_0)")


def select_top(rows: list[dict[str, Any]], metric: str, mode: str, top_k: int | None = None,
               threshold: float | None = None, clusters: int | None = None) -> list[dict[str, Any]]:
    """Completed rows ranked best first, one per arch_id; those in the top `clusters`-means cluster, and/or
    within `threshold` of the best (absolute difference in `metric`), and/or the first `top_k`. With none of
    them, the top quarter (at least 3, when there are that many)."""
    usable = [r for r in rows if r.get("status") == "completed" and _finite(r.get(metric))]
    ranked, seen = [], set()
    for row in sorted(usable, key=lambda r: r[metric], reverse=(mode == "max")):
        if row.get("arch_id") is None or row["arch_id"] not in seen:     # a reused duplicate votes once
            ranked.append(row)
            seen.add(row.get("arch_id"))
    if not ranked:
        return []
    if clusters is not None:
        ranked = ranked[:top_cluster_size([r[metric] for r in ranked], clusters)]
    if threshold is not None:
        best = ranked[0][metric]
        ranked = [r for r in ranked if abs(r[metric] - best) <= threshold]
    if top_k is None and threshold is None and clusters is None:
        top_k = max(3, math.ceil(len(ranked) / 4))
    return ranked[:top_k] if top_k is not None else ranked


def kmeans_1d(values: Sequence[float], k: int) -> list[int]:
    """The exact 1-D k-means clustering of `values`: a cluster index per value (0 = the smallest values), the
    partition of the sorted values into at most `k` runs with the least within-cluster sum of squares.

    Optimal 1-D clusters are contiguous in sorted order, so dynamic programming over split points finds the
    optimum: cost[m][j] = min over i of cost[m-1][i] + SSE(sorted[i:j]), in O(k n^2) with prefix sums. A tie
    between splits keeps the earliest, so the result is deterministic; equal values share a cluster."""
    if k < 1:
        raise ValueError("k-means needs k >= 1")
    n = len(values)
    if n == 0:
        return []
    order = sorted(range(n), key=lambda i: values[i])
    xs = [float(values[i]) for i in order]
    k = min(k, len(set(xs)))
    s1, s2 = [0.0], [0.0]
    for x in xs:
        s1.append(s1[-1] + x)
        s2.append(s2[-1] + x * x)

    def sse(i: int, j: int) -> float:          # xs[i:j]
        total = s1[j] - s1[i]
        return max(0.0, s2[j] - s2[i] - total * total / (j - i))

    inf = float("inf")
    cost = [[inf] * (n + 1) for _ in range(k + 1)]
    split = [[0] * (n + 1) for _ in range(k + 1)]
    cost[0][0] = 0.0
    for m in range(1, k + 1):
        for j in range(m, n + 1):
            for i in range(m - 1, j):
                if cost[m - 1][i] < inf and (c := cost[m - 1][i] + sse(i, j)) < cost[m][j] - 1e-12:
                    cost[m][j], split[m][j] = c, i
    bounds, j = [], n
    for m in range(k, 0, -1):
        bounds.append((split[m][j], j))
        j = split[m][j]
    labels = [0] * n
    for cluster, (i, j) in enumerate(reversed(bounds)):
        for position in range(i, j):
            labels[order[position]] = cluster
    # equal values in one cluster: a value that straddles a boundary joins the lower cluster
    lowest: dict[float, int] = {}
    for position in range(n):
        x = xs[position]
        lowest.setdefault(x, labels[order[position]])
        labels[order[position]] = lowest[x]
    return labels


def top_cluster_size(ranked_values: Sequence[float], clusters: int) -> int:
    """How many of `ranked_values` (best first) are in the best value's k-means cluster."""
    labels = kmeans_1d(ranked_values, clusters)
    return sum(1 for label in labels if label == labels[0])


def vote_keys(stacks: Sequence[Sequence[Hashable]], context: int = 0) -> list[Hashable]:
    """The consensus of `stacks` (ranked best first): the most common depth, then at each position the most
    common key among the stacks that reach it and whose previous `context` keys equal the consensus so far
    (`context` 0: N_0, a per-position majority; see the module docstring for the fallback)."""
    if not stacks:
        raise ValueError("a vote needs at least one candidate")
    depth = most_common([len(s) for s in stacks])
    out: list[Hashable] = []
    for i in range(depth):
        reaching = [s for s in stacks if len(s) > i]
        for c in range(min(context, i), -1, -1):
            matching = [s[i] for s in reaching if list(s[i - c:i]) == out[i - c:i]]
            if matching:
                out.append(most_common(matching))
                break
    return out


def vote_specs(specs: list[ArchSpec], name: str = "consensus", context: int = 0,
               ignore: tuple[str, ...] = ()) -> ArchSpec:
    """One architecture from `specs` (ranked best first) by the per-layer vote with `context` (0: N_0);
    model-wide fields come from the best spec. Layer parameters named in `ignore` (a width the space sets per
    candidate to equalise sizes) are left out of the vote and of the consensus."""
    if not specs:
        raise ValueError("a vote needs at least one spec")
    loops = [_whole_stack_loop(s) for s in specs]
    bodies = [loop.body if loop is not None else s.layers for s, loop in zip(specs, loops)]
    stacks = [[json.dumps(_without(node_to_data(n), ignore), sort_keys=True) for n in flatten(body)]
              for body in bodies]
    layers = [json.loads(k) for k in vote_keys(stacks, context)]
    times = most_common([loop.times if loop is not None else 1 for loop in loops])
    if times > 1:
        template = next(loop for loop in loops if loop is not None and loop.times == times)
        layers = [{"loop": {**node_to_data(template)["loop"], "body": layers}}]
    best = specs[0]
    data = best.to_dict()
    data["layers"] = layers
    data["name"] = name
    how = f"N_{context} vote" if context else "per-layer majority vote"
    data["description"] = f"{how} of the top {len(specs)} candidates"
    from composer.spec_parse import load_spec

    return validate_spec(load_spec(data))


def majority_vote(specs: list[ArchSpec], name: str = "consensus") -> ArchSpec:
    """One architecture from `specs` (ranked best first) by per-layer majority vote (N_0); model-wide fields
    come from the best spec."""
    return vote_specs(specs, name)


def _without(data: Any, ignore: tuple[str, ...]) -> Any:
    """A layer's plain data without the parameters in `ignore` (a bare op name when nothing else is left)."""
    if not ignore or not isinstance(data, dict) or "op" not in data:
        return data
    kept = {k: v for k, v in data.items() if k not in ignore}
    return kept["op"] if set(kept) == {"op"} else kept


def _whole_stack_loop(spec: ArchSpec) -> Loop | None:
    return spec.layers[0] if len(spec.layers) == 1 and isinstance(spec.layers[0], Loop) else None


def most_common(values: list[Any]) -> Any:
    """The most frequent value; on a tie, the one that appears first (the better-ranked candidate)."""
    counts = Counter(values)
    top = max(counts.values())
    return next(v for v in values if counts[v] == top)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def searched(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The search's own trials (not the consensus trained at the end)."""
    return [r for r in rows if not r.get("consensus")]
