"""A ladder file, read into a `scaling.ladder.Ladder` (its trials, runs and analysis: scaling/ladder.py).

A ladder file (YAML):

    name: demo
    task: {name: text, seq_len: 128}         # or a task name; or {name: text, params: {seq_len: 128}}
    architectures:                           # name -> spec path (relative to this file) or inline spec
      attention: ../search_spaces/architectures/gpt_small.yaml
    sizes: [30K, 100K, 300K]                 # parameter targets, counted by `count`
    count: non_embedding                     # scaling.rules.Count: non_embedding | total | active
    method: auto                             # scaling.rules.Method: auto | stack | stretch (fit_to_params)
    tolerance: 0.05
    budget: {tokens_per_param: 20}           # or {tokens: 1M} or {flops: [1e12, 3e12]} (IsoFLOP)
    seeds: [0, 1]
    train: {lr: 3e-3, batch_size: 16}        # training settings (composer/training/config.py)
    predict_at: 10M                          # optional: predicted loss (with interval) at this size
    bootstrap: 500                           # resamples for the fits' intervals
    logging: [tensorboard, csv]              # optional: per-trial trackers (composer/tracking.py)

Token budgets: `tokens_per_param: r` trains a size of N parameters on r * N tokens (N by `count`);
`tokens: D` trains every size on D tokens; `flops: [C, ...]` trains every size at every compute budget C on
C / (training FLOPs per token) tokens (IsoFLOP). `min_tokens` / `max_tokens` clamp the result.

Every mistake is one UserError naming the field (and its line in a file); parameter targets are held to
MAX_PARAMS, token counts to MAX_TOKENS and FLOP budgets to MAX_FLOPS (composer/limits.py). The fields are
those of `scaling.ladder.Ladder`, read by the one reader (composer/reader.py): the ones its types and
declarations say enough about (task, count, method, tolerance) by the reader itself, the rest by the
functions in `FIELDS` below.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

from composer.errors import UserError
from composer.limits import MAX_BOOTSTRAP, MAX_FLOPS, MAX_LADDER_TRIALS, MAX_PARAMS, MAX_SEED, MAX_TOKENS
from composer.names import brief
from composer.reader import Reader, join, keys_of
from composer.runs import safe_name
from composer.spec import ArchSpec
from composer.spec_parse import load_spec
from composer.training.config import TrainConfig
from composer.yaml_source import read_source
from scaling.ladder import Ladder

LADDER_KEYS = keys_of(Ladder, skip=("run_dir", "task_vocabulary"))   # the keys of a ladder file: Ladder's fields
SUFFIXES = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}
SET_BY_THE_LADDER = {**{k: "the ladder sets each trial's tokens: use `budget`" for k in ("steps", "tokens", "seconds")},
                     "seed": "the ladder sets each trial's seed: use `seeds`",
                     "workers": "the ladder sets each trial's data-parallel workers: use `workers_per_trial`"}


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
    reader = Reader(source)
    if not isinstance(source.data, dict):
        raise reader.fail("a ladder is a mapping", "")
    data = reader.mapping(source.data, "", LADDER_KEYS)
    base = Path(source.filename).parent if source.filename else Path(".")
    given = {key: read(reader, data[key], key, base) for key, read in FIELDS.items() if key in data}
    ladder = reader.read(Ladder, data, skip=("run_dir", "task_vocabulary"), **given)
    if isinstance(data.get("architectures"), dict):
        ladder = dataclasses.replace(ladder, task_vocabulary=_unstated_vocabulary(data["architectures"], base))
    if ladder.workers_per_trial > 1:
        from composer.training.ray_train import check_settings

        try:
            check_settings(ladder.train.with_settings(workers=ladder.workers_per_trial))
        except UserError as e:
            raise reader.fail(e.message, "workers_per_trial" if e.path == "workers" else f"train.{e.path}") from None
    trials = (len(ladder.architectures) * len(ladder.sizes) * len(ladder.seeds)
              * len(ladder.budget.get("flops", [None])))
    if trials > MAX_LADDER_TRIALS:
        raise reader.fail(f"{trials:,} trials (architectures x sizes x seeds x budgets), more than "
                           f"{MAX_LADDER_TRIALS:,} (limit MAX_LADDER_TRIALS)", "sizes")
    return ladder


def _name(reader: Reader, value: Any, path: str, base: Path) -> str:
    try:
        return safe_name(value, path)        # the ladder's folder under --out-root
    except UserError as e:
        raise reader.fail(e.message, path) from None


def _seeds(reader: Reader, value: Any, path: str, base: Path) -> list[int]:
    if (not isinstance(value, list) or not value
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED for s in value)):
        raise reader.fail(f"expected a list of integer seeds in [0, {MAX_SEED}], got {brief(value)}", path)
    return list(value)


def _train(reader: Reader, value: Any, path: str, base: Path) -> TrainConfig:
    try:
        return TrainConfig.from_dict(value, path, SET_BY_THE_LADDER)
    except UserError as e:
        raise reader.relay(e) from None


def _predict_at(reader: Reader, value: Any, path: str, base: Path) -> int | None:
    return None if value is None else _count(reader, value, path, MAX_PARAMS)


def _bootstrap(reader: Reader, value: Any, path: str, base: Path) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_BOOTSTRAP:
        raise reader.fail(f"expected a number of resamples in [0, {MAX_BOOTSTRAP:,}] (limit MAX_BOOTSTRAP), "
                          f"got {brief(value)}", path)
    return value


def _loss_metric(reader: Reader, value: Any, path: str, base: Path) -> str:
    if not isinstance(value, str):
        raise reader.fail(f"expected a metric name, got {brief(value)}", path)
    return value


def _logging(reader: Reader, value: Any, path: str, base: Path) -> list[str]:
    from composer.tracking import check_backends

    if value is None:
        return []
    try:
        return check_backends(value, path)
    except UserError as e:
        raise reader.fail(e.message, _logging_path(value)) from None


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


def _count(reader: Reader, value: Any, path: str, maximum: float | None = None) -> int:
    try:
        return parse_count(value, maximum)
    except ValueError as e:
        raise reader.fail(str(e), path) from None


def _architectures(reader: Reader, value: Any, path: str, base: Path) -> dict[str, ArchSpec]:
    if not isinstance(value, dict) or len(value) < 1:
        raise reader.fail("expected a mapping of name -> spec path or inline spec", "architectures")
    out = {}
    for name, spec in value.items():
        where = join(path, str(name))
        try:
            if isinstance(spec, str):
                file = Path(spec) if Path(spec).is_absolute() else base / spec
                if not file.is_file():
                    raise reader.fail(f"spec file not found: {file}", where)
                out[str(name)] = load_spec(str(file))
            elif isinstance(spec, dict):
                out[str(name)] = load_spec(spec)
            else:
                raise reader.fail("expected a spec path or an inline spec mapping", where)
        except UserError as e:
            if e.path and not e.source:
                raise reader.relay(e, where) from None
            raise
    return out


def _unstated_vocabulary(architectures: dict[str, Any], base: Path) -> tuple[str, ...]:
    """The architectures whose spec (a file or a mapping) states no vocab_size: they train at the task's."""
    from composer.training.setup import states_vocab_size

    out = []
    for name, spec in architectures.items():
        source = (Path(spec) if Path(spec).is_absolute() else base / spec) if isinstance(spec, str) else spec
        if not states_vocab_size(source):
            out.append(str(name))
    return tuple(out)


def _sizes(reader: Reader, value: Any, path: str, base: Path) -> list[tuple[str, int]]:
    if not isinstance(value, list) or len(value) < 2:
        raise reader.fail("expected a list of at least two parameter targets (e.g. [1M, 3M, 10M])", "sizes")
    sizes = [(str(v), _count(reader, v, join("sizes", i), MAX_PARAMS)) for i, v in enumerate(value)]
    if [n for _, n in sizes] != sorted({n for _, n in sizes}):
        raise reader.fail("sizes must be distinct and increasing", "sizes")
    return sizes


def _budget(reader: Reader, value: Any, path: str, base: Path) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise reader.fail("expected a mapping: tokens_per_param, tokens or flops", "budget")
    modes = [k for k in ("tokens_per_param", "tokens", "flops") if k in value]
    if len(modes) != 1:
        raise reader.fail("give exactly one of tokens_per_param, tokens, flops", "budget")
    reader.mapping(value, path, ("tokens_per_param", "tokens", "flops", "min_tokens", "max_tokens"))
    out: dict[str, Any] = {}
    for key in ("tokens", "min_tokens", "max_tokens"):
        if key in value:
            out[key] = _count(reader, value[key], join("budget", key), MAX_TOKENS)
    if "tokens_per_param" in value:
        out["tokens_per_param"] = reader.number(value["tokens_per_param"], join(path, "tokens_per_param"), gt=0)
    if "flops" in value:
        flops = value["flops"] if isinstance(value["flops"], list) else [value["flops"]]
        out["flops"] = [float(_count(reader, f, join("budget.flops", i), MAX_FLOPS)) for i, f in enumerate(flops)]
    return out


FIELDS = {"name": _name, "architectures": _architectures, "sizes": _sizes, "budget": _budget, "seeds": _seeds,
          "train": _train, "predict_at": _predict_at, "bootstrap": _bootstrap, "loss_metric": _loss_metric,
          "logging": _logging}
