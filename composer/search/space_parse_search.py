"""Parsing how a space is searched: the strategy and scheduler (their options finite numbers), a layer-wise
strategy's options, `aggregate:`, `match:`, `resources:` and the `confirm:` block. A mixin of the space parser
(composer/search/space_parse.py), whose `fail`, `mapping`, `number` and `integer` it uses, so every error names
its YAML path and line."""

from __future__ import annotations

import math
from typing import Any

from composer.errors import UserError
from composer.search.aggregate import SELECTIONS, VOTES, Aggregation
from composer.search.equal_size import COUNTS, QUANTITIES, Match
from composer.search.space import Dist, SearchSpace
from composer.search.strategies import STRATEGIES
from composer.yaml_source import join
from primitives.base import config_fields, registered, unknown_name_message

AGGREGATE_KEYS = ("select", "top_k", "threshold", "clusters", "vote", "context", "train")
MATCH_KEYS = (*QUANTITIES, "by", "tol", "count", "context")
LAYERWISE_OPTIONS = {"one_shot": ("sampler", "sampler_options", "top_k", "threshold"),
                     "incremental": ("sampler", "sampler_options", "top_k", "threshold", "step", "variant")}
VARIANTS = ("end", "middle")


class SearchSettingsParser:
    """The sections of a space that say how it is searched (see the module docstring)."""

    def named(self, value: Any, path: str, default: str) -> dict[str, Any]:
        if value is None or isinstance(value, str):
            value = {"name": value or default}
        value = self.mapping(value, path)
        if not isinstance(value.get("name"), str):
            raise self.fail("expected a name", join(path, "name"))
        self.finite(value, path)
        return dict(value)

    def finite(self, value: Any, path: str) -> None:
        """Every number in an options mapping (a strategy's, a scheduler's) is finite: the samplers and schedulers
        take NaN and infinity without complaint and then misbehave, or fail with a message about something else."""
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(f"expected a finite number, got {value}", path)
        if isinstance(value, dict):
            for key, item in value.items():
                self.finite(item, join(path, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                self.finite(item, join(path, i))

    def resources(self, value: Any) -> dict[str, Any]:
        value = self.mapping(value or {}, "resources", ("cpus_per_trial", "gpus_per_trial", "max_concurrent"))
        out = {"cpus_per_trial": value.get("cpus_per_trial", 1), "gpus_per_trial": value.get("gpus_per_trial", 0),
               "max_concurrent": value.get("max_concurrent")}
        self.number(out["cpus_per_trial"], "resources.cpus_per_trial")
        if out["gpus_per_trial"]:
            self.number(out["gpus_per_trial"], "resources.gpus_per_trial")
        if out["max_concurrent"] is not None:
            self.integer(out["max_concurrent"], "resources.max_concurrent")
        return out

    def aggregate(self, value: Any, strategy: dict[str, Any]) -> Aggregation:
        """`aggregate:` (composer/search/aggregate.py); without it, a layer-wise strategy's legacy
        `options.top_k` / `options.threshold`. The consensus is trained (`train`) unless `train: false`."""
        options = strategy.get("options") if isinstance(strategy.get("options"), dict) else {}
        legacy = {k: options[k] for k in ("top_k", "threshold") if k in options}
        if value is None:
            value = legacy
            path = "strategy.options"
        else:
            if legacy:
                raise self.fail("give the top set in `aggregate:` (select, top_k, threshold), not in the "
                                "strategy's options", join("strategy.options", next(iter(legacy))))
            path = "aggregate"
        value = self.mapping(value, path, AGGREGATE_KEYS)
        select = value.get("select", "threshold" if "threshold" in value else "top_k" if "top_k" in value
                           else "kmeans")
        if select not in SELECTIONS:
            raise self.fail(f"expected one of {', '.join(SELECTIONS)}, got {select!r}", join(path, "select"))
        vote = value.get("vote", "n0")
        if vote not in VOTES:
            raise self.fail(f"expected one of {', '.join(VOTES)}, got {vote!r}", join(path, "vote"))
        needs = {"threshold": ("select", "threshold"), "clusters": ("select", "kmeans"), "context": ("vote", "nc")}
        for key, (field, wanted) in needs.items():
            if key in value and {"select": select, "vote": vote}[field] != wanted:
                raise self.fail(f"`{key}` applies with `{field}: {wanted}`", join(path, key))
        if select == "threshold" and "threshold" not in value:
            raise self.fail("`select: threshold` needs `threshold` (the largest distance from the best objective)",
                            join(path, "threshold"))
        top_k = value.get("top_k")
        threshold = value.get("threshold")
        if not isinstance(value.get("train", True), bool):
            raise self.fail(f"expected true or false, got {value['train']!r}", join(path, "train"))
        if threshold is not None and not (self.number(threshold, join(path, "threshold"), positive=False) >= 0):
            raise self.fail(f"expected a number >= 0, got {threshold!r}", join(path, "threshold"))
        return Aggregation(
            select=select, vote=vote,
            top_k=None if top_k is None else self.integer(top_k, join(path, "top_k")),
            threshold=None if threshold is None else self.number(threshold, join(path, "threshold"), positive=False),
            clusters=self.integer(value.get("clusters", 5), join(path, "clusters")),
            context=self.integer(value.get("context", 1), join(path, "context")), train=value.get("train", True))

    def layerwise(self, space: SearchSpace) -> None:
        """The options of `one_shot` and `incremental`, and what incremental needs of the layers."""
        name = space.strategy["name"]
        if name not in LAYERWISE_OPTIONS:
            return
        options = self.mapping(space.strategy.get("options") or {}, "strategy.options", LAYERWISE_OPTIONS[name])
        if not isinstance(options.get("sampler", "random"), str):
            raise self.fail("expected a strategy name (random, tpe, gp, ...)", "strategy.options.sampler")
        if options.get("sampler") in LAYERWISE_OPTIONS:
            raise self.fail("the sampler of a layer-wise search is a plain strategy (random, tpe, gp, ...)",
                            "strategy.options.sampler")
        plain = [s for s in STRATEGIES if s not in LAYERWISE_OPTIONS]
        if options.get("sampler", "random") not in plain:
            raise self.fail(unknown_name_message("sampler", options["sampler"], plain), "strategy.options.sampler")
        if options.get("sampler_options") is not None:
            self.mapping(options["sampler_options"], "strategy.options.sampler_options")
        if name != "incremental":
            return
        self.integer(options.get("step", 2), "strategy.options.step")
        if options.get("variant", "end") not in VARIANTS:
            raise self.fail(f"expected one of {', '.join(VARIANTS)}, got {options.get('variant')!r}",
                            "strategy.options.variant")
        kind, cfg = space.layers
        if kind != "slots":
            raise self.fail("the incremental strategy needs a `slots` layer space", "strategy.name")
        if isinstance(cfg["n_layers"], Dist):
            raise self.fail("the incremental strategy grows the stack slot by slot to every slot; give "
                            "`n_layers` as a number", "layers.n_layers")

    def match(self, value: Any, space: SearchSpace) -> Match:
        """`match:` (composer/search/equal_size.py); the target is measured now, so a bad one fails here."""
        value = self.mapping(value, "match", MATCH_KEYS)
        given = [q for q in QUANTITIES if q in value]
        if len(given) != 1:
            raise self.fail(f"give one of {', '.join(QUANTITIES)} (a number, or `base`)", "match")
        quantity = given[0]
        where = join("match", quantity)
        target = value[quantity]
        if target != "base":
            target = self.number(target, where)
        if "by" not in value:
            raise self.fail("`match` needs `by`: the width to adjust (d_model, d_ff, d_state, ...)", "match.by")
        by = value["by"]
        widths = sorted({"d_model", *(f for cls in registered().values() for f, spec in config_fields(cls).items()
                                      if "int" in str(spec.type))})
        if by not in widths:
            raise self.fail(unknown_name_message("width", by, widths), "match.by")
        if "count" in value and quantity != "params":
            raise self.fail("`count` applies to `params`", "match.count")
        if value.get("count", "non_embedding") not in COUNTS:
            raise self.fail(f"expected one of {', '.join(COUNTS)}, got {value['count']!r}", "match.count")
        if "context" in value and quantity != "state_bytes":
            raise self.fail("`context` applies to `state_bytes`", "match.context")
        tol = self.number(value.get("tol", 0.02), "match.tol")
        if tol >= 1:
            raise self.fail(f"expected a relative tolerance below 1, got {tol!r}", "match.tol")
        match = Match(quantity, None if target == "base" else float(target), by, tol,
                      value.get("count", "non_embedding"),
                      None if value.get("context") is None else self.integer(value["context"], "match.context"))
        space.match = match
        try:
            reached = space.match_target()
        except UserError as e:
            raise self.fail(e.message, where) from None
        if reached <= 0:
            raise self.fail(f"the reference candidate has no {match.label()} to match", where)
        return match

    def confirm(self, value: Any) -> None:
        """A `confirm:` block (space_confirm.py), run after the search: its fields are checked now."""
        from composer.search.space_confirm import parse_confirm

        try:
            parse_confirm(value, "confirm")
        except UserError as e:
            raise self.fail(e.message, e.path) from None
