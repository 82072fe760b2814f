"""Reading how a space is searched: the strategy and scheduler (their options finite numbers; what a strategy needs
of its options and of the space is its own check, composer/search/strategies), `aggregate:`, `match:`,
`resources:`, the `confirm:` block and `logging:`. Functions `(reader, value, path)` that
composer/search/space_parse.py calls for those fields of a space, with the reader of its document, so every error
names its YAML path and line."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from composer.errors import UserError
from composer.names import unknown_name_message
from composer.reader import Reader, join, keys_of
from composer.search.aggregate import Aggregation
from composer.search.equal_size import QUANTITIES, Match
from composer.search.space import Resources, SearchSpace
from composer.search.strategies import find_strategy
from primitives.base import config_fields, registered


def named(reader: Reader, value: Any, path: str, default: str) -> dict[str, Any]:
    """{name, options...} from a name or a mapping with `name`; every number in it finite."""
    if value is None or isinstance(value, str):
        value = {"name": value or default}
    value = reader.mapping(value, path)
    if not isinstance(value.get("name"), str):
        raise reader.fail("expected a name", join(path, "name"))
    finite(reader, value, path)
    return dict(value)


def strategy(reader: Reader, value: Any, path: str) -> dict[str, Any]:
    return named(reader, value, path, "tpe")


def scheduler(reader: Reader, value: Any, path: str) -> dict[str, Any]:
    return named(reader, value, path, "asha")


def finite(reader: Reader, value: Any, path: str) -> None:
    """Every number in an options mapping (a strategy's, a scheduler's) is finite: the samplers and schedulers
    take NaN and infinity without complaint and then misbehave, or fail with a message about something else."""
    if isinstance(value, float) and not math.isfinite(value):
        raise reader.fail(f"expected a finite number, got {value}", path)
    if isinstance(value, dict):
        for key, item in value.items():
            finite(reader, item, join(path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            finite(reader, item, join(path, i))


def resources(reader: Reader, value: Any, path: str) -> dict[str, Any]:
    """`resources:`; with `workers_per_trial`, the trial's CPUs and GPUs must split evenly over its workers."""
    from composer.ray_cluster import split_trial

    found = reader.read(Resources, value, path)
    try:
        split_trial(found.cpus_per_trial, found.gpus_per_trial, found.workers_per_trial,
                    join(path, "cpus_per_trial"), join(path, "gpus_per_trial"))
    except UserError as e:
        raise reader.fail(e.message, e.path) from None
    return dataclasses.asdict(found)


def aggregate(reader: Reader, value: Any, strategy: dict[str, Any]) -> Aggregation:
    """`aggregate:` (composer/search/aggregate.py); without it, a layer-wise strategy's legacy
    `options.top_k` / `options.threshold`. The consensus is trained (`train`) unless `train: false`."""
    options = strategy.get("options") if isinstance(strategy.get("options"), dict) else {}
    legacy = {k: options[k] for k in ("top_k", "threshold") if k in options}
    if value is None:
        value = legacy
        path = "strategy.options"
    else:
        if legacy:
            raise reader.fail("give the top set in `aggregate:` (select, top_k, threshold), not in the "
                              "strategy's options", join("strategy.options", next(iter(legacy))))
        path = "aggregate"
    value = reader.mapping(value, path, keys_of(Aggregation))
    select = "threshold" if "threshold" in value else "top_k" if "top_k" in value else "kmeans"
    found = reader.read(Aggregation, {"select": select, **value}, path)
    needs = {"threshold": ("select", "threshold"), "clusters": ("select", "kmeans"), "context": ("vote", "nc")}
    for key, (field, wanted) in needs.items():
        if key in value and getattr(found, field) != wanted:
            raise reader.fail(f"`{key}` applies with `{field}: {wanted}`", join(path, key))
    if found.select == "threshold" and found.threshold is None:
        raise reader.fail("`select: threshold` needs `threshold` (the largest distance from the best objective)",
                          join(path, "threshold"))
    return found


def check_strategy(reader: Reader, space: SearchSpace) -> None:
    """The strategy's options, read against its declaration of them, and its own checks of them and of the space
    (`Strategy.validate`). An unknown name is left to check_search, whose sampler says which are known."""
    strategy = find_strategy(space.strategy["name"])
    if strategy is not None:
        strategy.validate(space, reader)


def match(reader: Reader, value: Any, space: SearchSpace) -> SearchSpace:
    """The space with its `match:` (composer/search/equal_size.py); the target is measured now, so a bad one
    fails here."""
    value = reader.mapping(value, "match", (*QUANTITIES, *keys_of(Match, skip=("quantity", "target"))))
    given = [q for q in QUANTITIES if q in value]
    if len(given) != 1:
        raise reader.fail(f"give one of {', '.join(QUANTITIES)} (a number, or `base`)", "match")
    quantity = given[0]
    where = join("match", quantity)
    target = value[quantity]
    if target != "base":
        target = reader.number(target, where, gt=0)
    if "by" not in value:
        raise reader.fail("`match` needs `by`: the width to adjust (d_model, d_ff, d_state, ...)", "match.by")
    widths = sorted({"d_model", *(f for cls in registered().values() for f, spec in config_fields(cls).items()
                                  if "int" in str(spec.type))})
    if value["by"] not in widths:
        raise reader.fail(unknown_name_message("width", value["by"], widths), "match.by")
    if "count" in value and quantity != "params":
        raise reader.fail("`count` applies to `params`", "match.count")
    if "context" in value and quantity != "state_bytes":
        raise reader.fail("`context` applies to `state_bytes`", "match.context")
    found = reader.read(Match, {k: v for k, v in value.items() if k != quantity}, "match", quantity=quantity,
                        target=None if target == "base" else float(target))
    if found.tol >= 1:
        raise reader.fail(f"expected a relative tolerance below 1, got {found.tol!r}", "match.tol")
    space = dataclasses.replace(space, match=found)
    try:
        reached = space.match_target()
    except UserError as e:
        raise reader.fail(e.message, where) from None
    if reached <= 0:
        raise reader.fail(f"the reference candidate has no {found.label()} to match", where)
    return space


def confirm(reader: Reader, value: Any, path: str) -> dict[str, Any] | None:
    """A `confirm:` block (space_confirm.py), run after the search: its fields are checked now, the block kept as
    written."""
    from composer.search.space_confirm import parse_confirm

    parse_confirm(value, path, reader)
    return value


def logging(reader: Reader, value: Any, path: str) -> Any:
    from composer.tracking import check_backends

    if value is not None:
        try:
            check_backends(value, path, search=True)
        except UserError as e:
            raise reader.fail(e.message, path) from None
    return value
