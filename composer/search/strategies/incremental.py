"""`incremental`: Composer's layer-wise search that grows the model a few slots at a time, freezing what was found
(a strategy with a stage driver: composer/search/strategies/base.py). Its options: those of every layer-wise
search (composer/search/strategies/layerwise.py; its sampler: random by default), `step` (slots per stage,
default 2) and `variant` (`end`, default, or `middle`); it needs a `slots` layer space of a fixed `n_layers`.

Each stage searches `step` new slots inside a model made of the slots found so far, frozen to the vote of the
previous stages' top candidates (the space's `aggregate:` selection and vote, over the slots' sampled values):

- `variant: end` (default): new slots are added at the end (stage k searches slots k*step .. k*step+step-1);
- `variant: middle`: new slots are inserted in the middle: the first stage searches the outermost slots (the
  first ceil(step/2) and the last floor(step/2)), each later stage the next ones inwards, so every stage's new
  slots sit between the frozen front and the frozen back.

Slots are named by their place in the full-depth model (`layer5.op` is always slot 5), so each parameter name
offers the same choices at every stage, as Optuna requires. The trials are split evenly over the stages (the last
takes the rest). The final consensus and the best candidate are drawn only from the last stage (full depth).

Progress is kept in `incremental.json` in the run folder, written atomically when a stage ends: per finished
stage its trial numbers and the frozen values. A resumed search skips the finished stages (their votes are
read back, not recomputed), continues the current stage with the trials it still lacks, and goes on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from composer.atomic import write_json
from composer.errors import UserError
from composer.fields import option
from composer.search.aggregate import searched, vote_keys
from composer.search.space import SearchSpace
from composer.search.space_layers import SlotLayers
from composer.search.strategies.base import StageDriver, Strategy, register_strategy
from composer.search.strategies.layerwise import LayerwiseOptions, layerwise_sampler

STATE_FILE = "incremental.json"


@dataclass(frozen=True)
class Stage:
    index: int
    positions: tuple[int, ...]       # the stage model's slots (full-depth indices, in model order)
    new: tuple[int, ...]             # the slots this stage searches
    trials: int


def plan(space: SearchSpace) -> list[Stage]:
    """The stages of an incremental search of `space` (a `slots` space)."""
    options = space.strategy.get("options") or {}
    step, variant = int(options.get("step", 2)), options.get("variant", "end")
    depth = len(space.layers.slots)
    groups = end_groups(depth, step) if variant == "end" else middle_groups(depth, step)
    share = space.trials // len(groups)
    stages, placed = [], []
    for k, group in enumerate(groups):
        placed = sorted(placed + group)
        trials = share if k < len(groups) - 1 else space.trials - share * (len(groups) - 1)
        stages.append(Stage(k, tuple(placed), tuple(group), max(1, trials)))
    return stages


def end_groups(depth: int, step: int) -> list[list[int]]:
    return [list(range(start, min(depth, start + step))) for start in range(0, depth, step)]


def middle_groups(depth: int, step: int) -> list[list[int]]:
    """Outermost slots first: each group takes ceil(step/2) from the front and floor(step/2) from the back of
    the slots not yet placed."""
    lo, hi, groups = 0, depth - 1, []
    while lo <= hi:
        if hi - lo + 1 <= step:
            groups.append(list(range(lo, hi + 1)))
            break
        front, back = math.ceil(step / 2), step // 2
        groups.append(list(range(lo, lo + front)) + list(range(hi - back + 1, hi + 1)))
        lo, hi = lo + front, hi - back
    return groups


def stage_space(space: SearchSpace, stage: Stage, frozen: dict[int, dict[str, Any]]) -> SearchSpace:
    """The space one stage searches: its slots, those found by earlier stages fixed to their voted values. A
    `match` target (a number, or the full-depth base candidate's size) is scaled to the stage's share of the depth,
    so the last stage's candidates and the consensus are matched to the same size."""
    full = space.layers
    slots = tuple(freeze(full.slots[p], frozen[p]) if p in frozen else full.slots[p] for p in stage.positions)
    layers = replace(full, n_layers=len(slots), slots=slots, names=stage.positions)
    match = space.match
    if match is not None:
        match = replace(match, target=space.match_target() * len(slots) / len(full.slots))
    return space.with_overrides(layers=layers, match=match)


def freeze(template: dict[str, Any], voted: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The slot template with its voted values fixed (a channel template recursively)."""
    out = {}
    for key, value in template.items():
        if key == "channel" and isinstance(value, dict):
            out[key] = freeze(value, voted, prefix + "channel.")
        else:
            out[key] = voted.get(prefix + key, value)
    return out


def slot_values(params: dict[str, Any], position: int) -> dict[str, Any]:
    """Slot `position`'s sampled values (`op`, `d_ff`, `channel.op`, ...) from a trial's parameters."""
    prefix = f"layer{position}."
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def vote_slots(space: SearchSpace, rows: list[dict[str, Any]], stage: Stage) -> dict[int, dict[str, Any]]:
    """The new slots' values voted over the stage's top candidates (the space's aggregation: its selection,
    and N_0 or N_c over the stage's slots in model order); {} when no candidate completed."""
    top = space.aggregate.top(rows, space.objective_names()[0], space.modes()[0])
    if not top:
        return {}
    stacks = []
    for row in top:
        params = json.loads(row["params_json"]) if isinstance(row.get("params_json"), str) else {}
        stacks.append([json.dumps(slot_values(params, p), sort_keys=True) for p in stage.positions])
    context = space.aggregate.context if space.aggregate.vote == "nc" else 0
    voted = vote_keys(stacks, context)
    return {p: json.loads(key) for p, key in zip(stage.positions, voted) if p in stage.new}


def read_state(run_dir: Path | None) -> list[dict[str, Any]]:
    path = None if run_dir is None else Path(run_dir) / STATE_FILE
    return json.loads(path.read_text())["stages"] if path is not None and path.is_file() else []


def run_incremental(space: SearchSpace, run_dir: Path | None, rows: Callable[[], list[dict[str, Any]]],
                    run_stage: Callable[[SearchSpace, int], None], stopped: Callable[[], bool] = lambda: False,
                    log: Callable[[str], None] | None = None) -> None:
    """Run (or continue) the stages. `rows()` gives the leaderboard rows so far; `run_stage(space, n)` runs n
    trials of a stage's space; `stopped()` says the search was interrupted (the stage is then not recorded, so a
    resume continues it). With `run_dir` None nothing is written (a replay)."""
    done = read_state(run_dir)
    frozen = {int(p): v for stage in done for p, v in stage["frozen"].items()}
    finished = {t for stage in done for t in stage["trials"]}
    for stage in plan(space)[len(done):]:
        staged = stage_space(space, stage, frozen)

        def current() -> list[dict[str, Any]]:
            return [r for r in searched(rows()) if int(r["trial"]) not in finished]

        missing = stage.trials - len(current())
        if missing > 0:
            if log is not None:
                log(f"incremental stage {stage.index + 1}: slots {list(stage.new)} of {list(stage.positions)}, "
                    f"{missing} trials")
            run_stage(staged, missing)
        if stopped():
            return
        members = current()
        votes = vote_slots(staged, members, stage)
        frozen.update(votes)
        finished.update(int(r["trial"]) for r in members)
        done.append({"stage": stage.index, "positions": list(stage.positions), "new": list(stage.new),
                     "trials": sorted(int(r["trial"]) for r in members),
                     "frozen": {str(p): v for p, v in votes.items()}})
        if run_dir is not None:
            write_json(Path(run_dir) / STATE_FILE, {"variant": (space.strategy.get("options") or {}).get(
                "variant", "end"), "stages": done})


def final_rows(space: SearchSpace, run_dir: Path | None, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The candidates an incremental search's best and consensus come from: its last stage's (full depth)
    trials."""
    rows = searched(rows)
    done = read_state(run_dir)
    last = len(plan(space)) - 1
    if len(done) > last:
        members = set(done[last]["trials"])
        return [r for r in rows if int(r["trial"]) in members]
    earlier = {t for stage in done for t in stage["trials"]}
    return [r for r in rows if int(r["trial"]) not in earlier] if len(done) == last else []


@dataclass(frozen=True)
class IncrementalOptions(LayerwiseOptions):
    step: int = option(2, "slots each stage searches", ge=1)
    variant: Literal["end", "middle"] = option("end", "where each stage's new slots go: at the end, or the "
                                                      "outermost first")


def needs_slots(options: dict[str, Any], space: SearchSpace) -> None:
    """The stages grow a `slots` layer space slot by slot, to a fixed depth."""
    if not isinstance(space.layers, SlotLayers):
        raise UserError("the incremental strategy needs a `slots` layer space", path="strategy.name")
    if not isinstance(space.layers.n_layers, int):
        raise UserError("the incremental strategy grows the stack slot by slot to every slot; give `n_layers` as "
                        "a number", path="layers.n_layers")


register_strategy(Strategy("incremental", layerwise_sampler("random"), options=IncrementalOptions, check=needs_slots,
                           stages=StageDriver(run_incremental, final_rows), plain=False))
