"""A ladder file, read into a `scaling.ladder.Ladder` (its trials, runs and analysis: scaling/ladder.py).

A ladder file (YAML):

    name: demo
    task: {name: text, seq_len: 128}         # or a task name; or {name: text, params: {seq_len: 128}}
    architectures:                           # name -> spec path (relative to this file) or inline spec
      attention: ../search_spaces/architectures/gpt_small.yaml
    sizes: [30K, 100K, 300K]                 # parameter targets, counted by `count`
    count: non_embedding                     # non_embedding | total | active
    method: auto                             # auto | stack | stretch  (see scaling.rules.fit_to_params)
    tolerance: 0.05
    budget: {tokens_per_param: 20}           # or {tokens: 1M} or {flops: [1e12, 3e12]} (IsoFLOP)
    seeds: [0, 1]
    train: {lr: 3e-3, batch_size: 16}        # training settings (composer/training/config.py)
    predict_at: 10M                          # optional: predicted loss (with interval) at this size
    bootstrap: 500                           # resamples for the fits' intervals
    logging: [tensorboard, csv]              # optional: per-trial trackers (composer/tracking/)

Token budgets: `tokens_per_param: r` trains a size of N parameters on r * N tokens (N by `count`);
`tokens: D` trains every size on D tokens; `flops: [C, ...]` trains every size at every compute budget C on
C / (training FLOPs per token) tokens (IsoFLOP). `min_tokens` / `max_tokens` clamp the result.

Every mistake is one UserError naming the field (and its line in a file); parameter targets are held to
MAX_PARAMS, token counts to MAX_TOKENS and FLOP budgets to MAX_FLOPS (composer/limits.py).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from composer.errors import UserError
from composer.limits import MAX_BOOTSTRAP, MAX_FLOPS, MAX_LADDER_TRIALS, MAX_PARAMS, MAX_SEED, MAX_TOKENS
from composer.runs import safe_name
from composer.spec import ArchSpec
from composer.spec_parse import load_spec
from composer.training.config import TrainConfig
from composer.yaml_source import Source, join, read_source
from primitives.base import brief, finite_number
from scaling.ladder import Ladder

LADDER_KEYS = ("name", "task", "architectures", "sizes", "count", "method", "tolerance", "budget", "seeds",
               "train", "predict_at", "loss_metric", "bootstrap", "logging")
SUFFIXES = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}
SET_BY_THE_LADDER = {**{k: "the ladder sets each trial's tokens: use `budget`" for k in ("steps", "tokens", "seconds")},
                     "seed": "the ladder sets each trial's seed: use `seeds`"}


def parse_count(value: Any, maximum: float | None = None) -> int:
    """20M, 1.5B, 300K, 1e6 or 123456 -> an integer (at most `maximum` when given); ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected a count like 20M, got {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMBGTkmbgt]?)\s*", str(value))
        if not match:
            raise ValueError(f"expected a count like 20M, 1.5B or 300000, got {value!r}")
        number = float(match.group(1)) * SUFFIXES.get(match.group(2).upper(), 1.0)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"expected a positive count, got {value!r}")
    if maximum is not None and number > maximum:
        raise ValueError(f"expected at most {maximum:.0e}, got {value!r}")
    return int(round(number))


def load_ladder(obj: Any) -> Ladder:
    """A Ladder from a YAML path, YAML text or a dict; every mistake is a UserError naming the field."""
    source = read_source(obj)
    data = source.data
    if not isinstance(data, dict):
        raise source.error("a ladder is a mapping", "")
    for key in data:
        if key not in LADDER_KEYS:
            raise source.error(f"unknown field {key!r}; expected one of {', '.join(LADDER_KEYS)}", str(key))
    for key in ("name", "task", "architectures", "sizes"):
        if key not in data:
            raise source.error("missing required field", key)
    base = Path(source.filename).parent if source.filename else Path(".")
    task = data["task"]
    task = {"name": task} if isinstance(task, str) else task
    if not isinstance(task, dict) or not isinstance(task.get("name"), str):
        raise source.error("expected a task name or a mapping with `name`", "task")
    from composer.tasks import task_params

    try:
        task = {"name": task["name"], **task_params(task)}
    except UserError as e:
        raise source.error(e.message, f"task.{e.path}") from None
    archs = _architectures(source, data["architectures"], base)
    sizes = _sizes(source, data["sizes"])
    try:
        name = safe_name(data["name"], "name")        # the ladder's folder under --out-root
    except UserError as e:
        raise source.error(e.message, "name") from None
    ladder = Ladder(name=name, task=dict(task), architectures=archs, sizes=sizes)
    if "count" in data:
        if data["count"] not in ("non_embedding", "total", "active"):
            raise source.error(f"expected non_embedding, total or active, got {data['count']!r}", "count")
        ladder.count = data["count"]
    if "method" in data:
        if data["method"] not in ("auto", "stack", "stretch"):
            raise source.error(f"expected auto, stack or stretch, got {data['method']!r}", "method")
        ladder.method = data["method"]
    if "tolerance" in data:
        tol = data["tolerance"]
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 < tol < 1:
            raise source.error(f"expected a fraction in (0, 1), got {tol!r}", "tolerance")
        ladder.tolerance = float(tol)
    if "budget" in data:
        ladder.budget = _budget(source, data["budget"])
    if "seeds" in data:
        seeds = data["seeds"]
        if (not isinstance(seeds, list) or not seeds
                or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED for s in seeds)):
            raise source.error(f"expected a list of integer seeds in [0, {MAX_SEED}], got {brief(seeds)}", "seeds")
        ladder.seeds = list(seeds)
    if "train" in data:
        try:
            ladder.train = TrainConfig.from_dict(data["train"], "train", SET_BY_THE_LADDER)
        except UserError as e:
            raise source.error(e.message, e.path) from None
    if data.get("predict_at") is not None:
        ladder.predict_at = _count(source, data["predict_at"], "predict_at", MAX_PARAMS)
    if "bootstrap" in data:
        n_boot = data["bootstrap"]
        if not isinstance(n_boot, int) or isinstance(n_boot, bool) or not 0 <= n_boot <= MAX_BOOTSTRAP:
            raise source.error(f"expected a number of resamples in [0, {MAX_BOOTSTRAP:,}] (limit MAX_BOOTSTRAP), "
                               f"got {brief(n_boot)}", "bootstrap")
        ladder.bootstrap = n_boot
    if "loss_metric" in data:
        if not isinstance(data["loss_metric"], str):
            raise source.error(f"expected a metric name, got {brief(data['loss_metric'])}", "loss_metric")
        ladder.loss_metric = data["loss_metric"]
    if data.get("logging") is not None:
        from composer.tracking import check_backends

        try:
            ladder.logging = check_backends(data["logging"], "logging")
        except UserError as e:
            raise source.error(e.message, _logging_path(data["logging"])) from None
    trials = (len(ladder.architectures) * len(ladder.sizes) * len(ladder.seeds)
              * len(ladder.budget.get("flops", [None])))
    if trials > MAX_LADDER_TRIALS:
        raise source.error(f"{trials:,} trials (architectures x sizes x seeds x budgets), more than "
                           f"{MAX_LADDER_TRIALS:,} (limit MAX_LADDER_TRIALS)", "sizes")
    return ladder


def _logging_path(names: Any) -> str:
    """`logging[i]` for the first entry that is not a known, installed backend; `logging` otherwise."""
    from composer.tracking import check_backends

    if isinstance(names, list):
        for i, name in enumerate(names):
            try:
                check_backends([name], "logging")
            except UserError:
                return join("logging", i)
    return "logging"


def _count(source: Source, value: Any, path: str, maximum: float | None = None) -> int:
    try:
        return parse_count(value, maximum)
    except ValueError as e:
        raise source.error(str(e), path) from None


def _architectures(source: Source, value: Any, base: Path) -> dict[str, ArchSpec]:
    if not isinstance(value, dict) or len(value) < 1:
        raise source.error("expected a mapping of name -> spec path or inline spec", "architectures")
    out = {}
    for name, spec in value.items():
        path = join("architectures", str(name))
        try:
            if isinstance(spec, str):
                file = Path(spec) if Path(spec).is_absolute() else base / spec
                if not file.is_file():
                    raise source.error(f"spec file not found: {file}", path)
                out[str(name)] = load_spec(str(file))
            elif isinstance(spec, dict):
                out[str(name)] = load_spec(spec)
            else:
                raise source.error("expected a spec path or an inline spec mapping", path)
        except UserError as e:
            if e.path and not e.source:
                raise source.error(e.message, join(path, e.path)) from None
            raise
    return out


def _sizes(source: Source, value: Any) -> list[tuple[str, int]]:
    if not isinstance(value, list) or len(value) < 2:
        raise source.error("expected a list of at least two parameter targets (e.g. [1M, 3M, 10M])", "sizes")
    sizes = [(str(v), _count(source, v, join("sizes", i), MAX_PARAMS)) for i, v in enumerate(value)]
    if [n for _, n in sizes] != sorted({n for _, n in sizes}):
        raise source.error("sizes must be distinct and increasing", "sizes")
    return sizes


def _budget(source: Source, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise source.error("expected a mapping: tokens_per_param, tokens or flops", "budget")
    modes = [k for k in ("tokens_per_param", "tokens", "flops") if k in value]
    if len(modes) != 1:
        raise source.error("give exactly one of tokens_per_param, tokens, flops", "budget")
    for key in value:
        if key not in ("tokens_per_param", "tokens", "flops", "min_tokens", "max_tokens"):
            raise source.error(f"unknown field {key!r}", join("budget", key))
    out: dict[str, Any] = {}
    for key in ("tokens", "min_tokens", "max_tokens"):
        if key in value:
            out[key] = _count(source, value[key], join("budget", key), MAX_TOKENS)
    if "tokens_per_param" in value:
        r = value["tokens_per_param"]
        if not finite_number(r) or r <= 0:
            raise source.error(f"expected a finite positive number, got {r!r}", "budget.tokens_per_param")
        out["tokens_per_param"] = float(r)
    if "flops" in value:
        flops = value["flops"] if isinstance(value["flops"], list) else [value["flops"]]
        out["flops"] = [float(_count(source, f, join("budget.flops", i), MAX_FLOPS)) for i, f in enumerate(flops)]
    return out
