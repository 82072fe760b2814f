"""What a confirmation trains: the top-k distinct completed trials of a search, `spread` more taken evenly from
the rest of its ranking (so the proxy -> target rank agreement is measured over good and bad candidates, not
only over near-ties at the top), its consensus, and baselines.

Each candidate keeps its *proxy score*: the search objective's value of the trial that trained that
architecture (matched by arch_id), or None when the search never trained it (then it is left out of the
proxy -> target correlation). An architecture that fills several roles (the consensus equal to a top trial,
a baseline the search also sampled) is one candidate with several roles, trained once.

The default baseline `transformer` is the Llama-style model of the search's own base: the best trial's
model-wide fields (d_model, norm, vocabulary, ...) and its `attention` / `mlp` defaults, with attention + MLP
in each of the best trial's slots (a slot: a unit holding a token mixer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from composer.canonical_form import arch_id, stripe
from composer.confirm.zoo import is_zoo_ref, zoo_baseline
from composer.errors import UserError
from composer.runs import RunDir
from composer.search.aggregate import select_top
from composer.search.space import SearchSpace
from composer.search.space_parse import load_space
from composer.search.strategies import final_rows
from composer.spec import ArchSpec, Layer, Loop, Node, Parallel, flatten
from composer.spec_parse import load_spec
from primitives.base import get_primitive

TRANSFORMER = "transformer"


@dataclass
class Candidate:
    """One architecture to confirm, at the size the search trained it."""

    name: str                          # trial_7, consensus, transformer, or a baseline file's stem
    spec: ArchSpec
    roles: list[str]                   # top1 .. topK, rank<N> (spread), consensus, baseline
    proxy: float | None = None         # the search objective's value (None: the search never trained it)
    trial: int | None = None           # the trial the proxy score comes from
    notes: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)    # the names of the roles it also fills (transformer, ...)
    arch_id: str = field(init=False)   # of the spec as the search knew it (before adapting it to a task)

    def __post_init__(self) -> None:
        self.arch_id = arch_id(self.spec)

    @property
    def is_baseline(self) -> bool:
        return "baseline" in self.roles

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "roles": self.roles, "aliases": self.aliases, "arch_id": self.arch_id,
                "stripe": stripe(self.spec), "proxy": self.proxy, "trial": self.trial, "notes": self.notes,
                "spec": self.spec.to_dict()}


@dataclass
class SearchRun:
    """A finished (or stopped) search as a confirmation reads it."""

    run: RunDir
    space: SearchSpace
    rows: list[dict[str, Any]]
    metric: str                       # the search's (first) objective
    mode: str                         # min | max

    def completed(self) -> list[dict[str, Any]]:
        """Full-budget completed trials with a finite objective, best first, one per arch_id (the consensus the
        search trained included): where proxy scores come from."""
        return select_top(self.rows, self.metric, self.mode, top_k=len(self.rows) or 1)

    def ranked(self) -> list[dict[str, Any]]:
        """The search's own candidates as `completed` ranks them: not the consensus it trained at the end, and
        for an incremental search only its last (full-depth) stage."""
        return select_top(final_rows(self.space, self.run.root, self.rows), self.metric, self.mode,
                          top_k=len(self.rows) or 1)

    def spec_of(self, row: dict[str, Any]) -> ArchSpec:
        path = self.run.trial_dir(int(row["trial"])) / "spec.yaml"
        if not path.is_file():
            raise UserError(f"{self.run.root}: trial {row['trial']} has no spec.yaml")
        return load_spec(str(path))

    def proxy_of(self, spec: ArchSpec) -> tuple[float | None, int | None]:
        """(objective value, trial) of the best completed trial that trained this architecture."""
        wanted = arch_id(spec)
        row = next((r for r in self.completed() if r.get("arch_id") == wanted), None)
        return (float(row[self.metric]), int(row["trial"])) if row else (None, None)


def read_search(run_dir: str | Path) -> SearchRun:
    """The run's space, leaderboard and objective; a UserError when it is not a search run."""
    run = RunDir(run_dir)
    if not run.root.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    if not run.exists():
        raise UserError(f"{run_dir}: not a search run (no space.yaml)")
    space = load_space(str(run.path("space.yaml")))
    objectives = run.read_summary().get("objectives") or space.objectives
    return SearchRun(run, space, run.read_leaderboard(), objectives[0]["metric"], objectives[0]["mode"])


def select_candidates(search: SearchRun, top_k: int, consensus: bool, baselines: tuple[str, ...],
                      spread: int = 0) -> list[Candidate]:
    """The top-k trials (best first), the spread trials, then the consensus, then the baselines; one candidate per
    architecture."""
    ranked = search.ranked()
    if not ranked:
        counts: dict[str, int] = {}
        for row in search.rows:
            counts[str(row.get("status"))] = counts.get(str(row.get("status")), 0) + 1
        found = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no trials"
        raise UserError(f"{search.run.root}: no completed trial to confirm ({found})")
    out: list[Candidate] = []
    for i, row in enumerate(ranked[:top_k]):
        out.append(Candidate(f"trial_{row['trial']}", search.spec_of(row), [f"top{i + 1}"],
                             float(row[search.metric]), int(row["trial"])))
    for rank in spread_ranks(len(ranked), top_k, spread):
        row = ranked[rank]
        out.append(Candidate(f"trial_{row['trial']}", search.spec_of(row), [f"rank{rank + 1}"],
                             float(row[search.metric]), int(row["trial"])))
    if consensus and search.run.path("consensus.yaml").is_file():
        spec = load_spec(str(search.run.path("consensus.yaml")))
        _add(out, Candidate("consensus", spec, ["consensus"]), search,
             "the search never trained the consensus: no proxy score")
    best = out[0]
    names = {c.name for c in out}
    for given in baselines:
        if given == TRANSFORMER:
            spec, name = transformer_baseline(best.spec, best.name), TRANSFORMER
        elif is_zoo_ref(given):
            spec, name = zoo_baseline(given)
        elif Path(given).is_file():
            spec, name = load_spec(given), Path(given).stem
        else:
            raise UserError(f"unknown baseline {given!r}: expected `transformer`, zoo:NAME or a spec file (no such "
                            "file)", path="baseline")
        while name in names:
            name += "_baseline"
        names.add(name)
        _add(out, Candidate(name, spec, ["baseline"]), search, "not in the search: no proxy score")
    return out


def spread_ranks(n: int, top_k: int, spread: int) -> list[int]:
    """`spread` ranks (0-based) evenly spaced over the ranks after the top k (top_k .. n-1), from the next one to
    the worst (one alone: the worst); all of them when there are no more than `spread`."""
    rest = n - top_k
    if spread <= 0 or rest <= 0:
        return []
    if spread >= rest:
        return list(range(top_k, n))
    if spread == 1:
        return [n - 1]
    return [top_k + round(j * (rest - 1) / (spread - 1)) for j in range(spread)]


def _add(out: list[Candidate], new: Candidate, search: SearchRun, missing: str) -> None:
    """Add `new`, or give its role to the candidate with the same architecture."""
    same = next((c for c in out if c.arch_id == new.arch_id), None)
    if same is not None:
        same.roles += new.roles
        same.aliases.append(new.name)
        same.notes.append(f"also the {new.name} (same architecture): trained once")
        return
    new.proxy, new.trial = search.proxy_of(new.spec)
    if new.proxy is None:
        new.notes.append(missing)
    else:
        new.notes.append(f"trained in the search as trial {new.trial}")
    out.append(new)


def slots(nodes: tuple[Node, ...]) -> int:
    """Units holding a token mixer (a loop's body counted once: the weights it holds)."""
    count = 0
    for node in flatten(nodes):
        if isinstance(node, Loop):
            count += slots(node.body)
        elif isinstance(node, Parallel):
            count += any(_mixes_tokens(b) for b in node.branches)
        elif _mixes_tokens(node):
            count += 1
    return count


def _mixes_tokens(node: Node) -> bool:
    return isinstance(node, Layer) and get_primitive(node.op).kind == "token_mixer"


def transformer_baseline(best: ArchSpec, best_name: str) -> ArchSpec:
    """Attention + MLP in each slot of `best`, with its model-wide fields and attention / MLP defaults."""
    n = max(1, slots(best.layers))
    defaults = {op: dict(params) for op, params in best.defaults.items() if op in ("attention", "mlp")}
    data = best.to_dict()
    data.update(name=TRANSFORMER, layers=["attention", "mlp"] * n, defaults=defaults,
                description=f"Llama-style baseline: attention + MLP in each of the {n} slots of {best_name}")
    return load_spec(data)


def adapt_to_task(spec: ArchSpec, vocab_size: int, seq_len: int) -> ArchSpec:
    """The spec with the target task's vocabulary and a context at least the task's sequence length."""
    return spec.replace(vocab_size=vocab_size, max_seq_len=max(spec.max_seq_len, seq_len))


def proxy_loss(value: float | None, mode: str) -> float | None:
    """A proxy score oriented like a loss (lower is better)."""
    if value is None or not math.isfinite(value):
        return None
    return value if mode == "min" else -value
