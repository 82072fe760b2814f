"""The Primitive interface, its configuration dataclasses, costs and the registry.

Every layer Composer can place in an architecture is a `Primitive`: one residual sub-layer's inner
operator (`x + op(norm(x))`; the residual and the norm belong to the model, not to the primitive).

A primitive class declares

* `name`     the registry name used in YAML (set by `@register("name")`),
* `symbol`   its letter(s) in one-line stripes such as `A M (A M)x2` (default: the name's first two letters),
* `kind`     "token_mixer" (mixes along time: attention, SSMs) or "channel_mixer" (MLP, MoE),
* `Config`   a dataclass of its parameters with defaults (what the YAML may set),
* `forward(x, state=None) -> (y, new_state)`: `x` is `[B, T, D]`. With `state=None` the sequence starts
  fresh and `new_state` may be None; with a state from `init_state` the call continues that sequence
  and returns the state after it. Running a sequence in pieces must equal running it whole.
* `init_state(batch_size, device, dtype)`: the empty state (a dict of tensors), or None if stateless,
* `cost(cfg, d_model, seq_len, dtype_bytes)`: analytic parameters, forward FLOPs per token at context
  `seq_len`, and state bytes per sequence at that context.
* `width_scaled`: the Config fields that grow in proportion to d_model when `scaling.rules.widen` widens a
  model (see `width_fields`).
* `aux_losses()`: the weighted auxiliary losses of its most recent call (e.g. MoE load balancing). The block
  that calls a primitive reads them right after the call and returns them with its output, so that every
  call counts once, whatever loops, shared layers or recomputation do.

A family module imports only the standard library, torch, this module, `primitives.common` (the layers
families share) and `primitives.ops` (never `primitives.ops.triton`, nor another family), so that export
can inline exactly the families a model uses (`composer.export.standalone.import_rule_violations`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import operator
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

State = dict[str, torch.Tensor] | None


@dataclass(frozen=True)
class Cost:
    """Analytic cost of one layer (or a sum of layers).

    params:          parameters of the module (exactly `sum(p.numel())`).
    flops_per_token: forward FLOPs per token, averaged over a sequence of `seq_len` tokens
                     (a multiply-add counts as 2 FLOPs).
    state_bytes:     bytes of decoding state per sequence after `seq_len` tokens.
    active_params:   parameters touched per token (differs from `params` for MoE).
    """

    params: int
    flops_per_token: float
    state_bytes: int
    active_params: int | None = None

    @property
    def active(self) -> int:
        return self.params if self.active_params is None else self.active_params

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.params + other.params,
            self.flops_per_token + other.flops_per_token,
            self.state_bytes + other.state_bytes,
            self.active + other.active,
        )

    def scaled(self, flops: float = 1.0, state: int = 1, params: int = 1) -> Cost:
        """Multiply FLOPs, state and parameters, e.g. for a loop that runs its body several times."""
        return Cost(
            self.params * params,
            self.flops_per_token * flops,
            self.state_bytes * state,
            self.active * params,
        )


ZERO_COST = Cost(0, 0.0, 0, 0)


class ConfigError(ValueError):
    """A primitive parameter is invalid. `field` names the offending parameter."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass
class NoConfig:
    """Config of a primitive without parameters."""


class Primitive(nn.Module):
    """Base class of every layer; see the module docstring for the contract."""

    name: ClassVar[str] = ""
    symbol: ClassVar[str] = ""  # set from the name by `register` when a class gives none
    kind: ClassVar[Literal["token_mixer", "channel_mixer"]] = "token_mixer"
    Config: ClassVar[type] = NoConfig
    # Config fields that grow in proportion to d_model when a model is widened; None: the generic guess of
    # `width_fields`. Fields not named keep their value (head dims, expansion ratios, per-channel state sizes).
    width_scaled: ClassVar[tuple[str, ...] | None] = None
    # Values the layer keeps for its backward pass beyond its projections (scan states, chunk tiles, gates), per
    # token in multiples of its width, measured with saved-tensor hooks (composer/training/memory.py's estimate);
    # None: assume the most any registered primitive keeps.
    saved_values: ClassVar[int | None] = None

    def __init__(self, d_model: int, cfg: Any):
        super().__init__()
        self.d_model = d_model
        self.cfg = cfg

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        raise NotImplementedError

    def init_state(self, batch_size: int, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> State:
        return None

    def aux_losses(self) -> dict[str, torch.Tensor]:
        """Weighted auxiliary losses of the most recent call (e.g. MoE load balancing); empty by default."""
        return {}

    @classmethod
    def validate(cls, cfg: Any, d_model: int) -> None:
        """Raise `ConfigError(field, message)` when the parameters cannot make a valid layer: every field within
        its bounds (`bounded` metadata; floats finite, integers within MAX_INTEGER), then the primitive's own
        `check`. Call this rather than `check`: a Config built in Python has not been through make_config."""
        for f in dataclasses.fields(cfg):
            check_bounds(f.name, getattr(cfg, f.name), f.metadata)
        cls.check(cfg, d_model)

    @classmethod
    def check(cls, cfg: Any, d_model: int) -> None:
        """The rules that relate fields to each other or to d_model (a head count dividing the width, top_k at
        most n_experts); raise `ConfigError(field, message)`. Single-field bounds are the fields' `bounded`
        metadata, which `validate` checks first."""

    @classmethod
    def resolve(cls, cfg: Any, d_model: int) -> Any:
        """The config with derived defaults written out (e.g. `n_heads=None` -> the number it means).

        Used for the canonical form, so that a default left implicit and the same value written out give
        the same `arch_id`. Primitives whose `None` fields derive from `d_model` should override it.
        """
        return cfg

    @classmethod
    def cost(cls, cfg: Any, d_model: int, seq_len: int, dtype_bytes: int = 2) -> Cost:
        raise NotImplementedError

    @classmethod
    def width_fields(cls) -> tuple[str, ...]:
        """The Config fields widening scales with d_model: `width_scaled`, or when a class does not say, every
        field named like `n_heads` (`*heads`), `d_ff`, `dt_rank` or `*_rank`."""
        if cls.width_scaled is not None:
            return cls.width_scaled
        names = (f.name for f in dataclasses.fields(cls.Config))
        return tuple(n for n in names if n.endswith("heads") or n in ("d_ff", "dt_rank") or n.endswith("_rank"))


# ----------------------------------------------------------------------------------------------
# Registry

_REGISTRY: dict[str, type[Primitive]] = {}


def register(name: str):
    """Class decorator: make a Primitive subclass usable by `name` in architecture specs."""

    def wrap(cls: type[Primitive]) -> type[Primitive]:
        if not (isinstance(cls, type) and issubclass(cls, Primitive)):
            raise TypeError(f"@register({name!r}) expects a Primitive subclass, got {cls!r}")
        if not dataclasses.is_dataclass(cls.Config):
            raise TypeError(f"{cls.__name__}.Config must be a dataclass")
        if cls.kind not in ("token_mixer", "channel_mixer"):
            raise TypeError(f"{cls.__name__}.kind must be 'token_mixer' or 'channel_mixer'")
        cls.name = name
        cls.symbol = cls.__dict__.get("symbol") or name[:2].upper()
        _REGISTRY[name] = cls
        return cls

    return wrap


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def registered() -> dict[str, type[Primitive]]:
    """All registered primitives by name. The built-in families are registered by importing this package's
    `__init__`, which Python runs before this module (and the standalone export inlines them)."""
    return dict(_REGISTRY)


def get_primitive(name: str) -> type[Primitive]:
    """The primitive class called `name`; KeyError with a suggestion when unknown."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    raise KeyError(unknown_name_message("primitive", name, list(_REGISTRY)))


def unknown_name_message(what: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(known))}"
    return f"unknown {what} {name!r}{hint}"


# ----------------------------------------------------------------------------------------------
# Building a Config from plain data (YAML), with field-level errors


# The largest integer any Config field may hold (sizes, counts): far above any real layer, and small enough that
# sizes fit a tensor dimension and convert to float. composer/limits.py lists it with the other input limits.
MAX_INTEGER = 2**31 - 1
BOUND_CHECKS = {"ge": operator.ge, "gt": operator.gt, "le": operator.le, "lt": operator.lt}


def bounded(default: Any, **bounds: float) -> Any:
    """A Config field with numeric bounds (`ge`, `gt`, `le`, `lt`) that `make_config` checks, e.g.
    `rope_base: float = bounded(10000.0, gt=1)`. Every number is checked to be finite (floats) and at most
    MAX_INTEGER (integers) whether or not it has bounds."""
    unknown = set(bounds) - set(BOUND_CHECKS)
    if unknown:
        raise TypeError(f"unknown bound(s) {sorted(unknown)}; use ge, gt, le, lt")
    return dataclasses.field(default=default, metadata=bounds)


def config_fields(cls: type[Primitive]) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls.Config)}


def make_config(cls: type[Primitive], params: dict[str, Any]) -> Any:
    """Build `cls.Config` from a dict, checking names, types and bounds; raises ConfigError naming the field.

    The bounds: every float finite, every integer within MAX_INTEGER, and the field's own bounds metadata
    (see `bounded`), so a new primitive's fields get the generic checks for free."""
    fields = config_fields(cls)
    hints = typing.get_type_hints(cls.Config)
    values = {}
    for key, value in params.items():
        if key not in fields:
            raise ConfigError(key, unknown_name_message(f"parameter of {cls.name!r}", key, list(fields)))
        values[key] = coerce(key, value, hints[key])
        check_bounds(key, values[key], fields[key].metadata)
    cfg = cls.Config(**values)
    return cfg


def in_bounds(value: float, bounds: typing.Mapping[str, Any]) -> bool:
    """Whether a number is finite, within MAX_INTEGER when an integer, and inside `bounds` (ge, gt, le, lt)."""
    if isinstance(value, int) and abs(value) > MAX_INTEGER:
        return False
    return math.isfinite(value) and all(BOUND_CHECKS[key](value, bound) for key, bound in bounds.items()
                                        if key in BOUND_CHECKS)


def as_float(value: int | float) -> float:
    """`float(value)`, or inf for an integer past the float range (which the finite check then refuses)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def finite_number(value: Any) -> bool:
    """Whether `value` is an int or float (not a bool) with a finite float value."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(as_float(value))


def range_text(bounds: typing.Mapping[str, Any]) -> str:
    """` in [0, 1)`, ` >= 0`, ... for a field's numeric bounds; empty without bounds."""
    low = next(((key, bounds[key]) for key in ("ge", "gt") if key in bounds), None)
    high = next(((key, bounds[key]) for key in ("le", "lt") if key in bounds), None)
    if low and high:
        return f" in {'[' if low[0] == 'ge' else '('}{low[1]}, {high[1]}{']' if high[0] == 'le' else ')'}"
    signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return "".join(f" {signs[pair[0]]} {pair[1]}" for pair in (low, high) if pair)


def brief(value: Any, limit: int = 60) -> str:
    """`repr(value)` with its middle cut out past `limit` characters (a 5,000-digit number in a message)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit // 2]}...{text[-limit // 2:]} ({len(text):,} characters)"


def bounds_message(value: Any, bounds: typing.Mapping[str, Any]) -> str:
    """What a number out of bounds should have been: "expected an integer >= 1, got 0"."""
    if isinstance(value, int) and abs(value) > MAX_INTEGER:
        return f"expected an integer of at most {MAX_INTEGER:,} (limit MAX_INTEGER), got {brief(value)}"
    kind = "a finite number" if isinstance(value, float) and not math.isfinite(value) else (
        "an integer" if isinstance(value, int) else "a number")
    return f"expected {kind}{range_text(bounds)}, got {value!r}"


def check_bounds(field: str, value: Any, bounds: typing.Mapping[str, Any]) -> None:
    """ConfigError when a number (or a number in a list) is not finite or out of its bounds."""
    for item in value if isinstance(value, (list, tuple)) else (value,):
        if isinstance(item, (int, float)) and not isinstance(item, bool) and not in_bounds(item, bounds):
            raise ConfigError(field, bounds_message(item, bounds))


def coerce(field: str, value: Any, hint: Any) -> Any:
    """Check `value` against a type hint (int, float, bool, str, Literal, Optional, list, tuple)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(field, value, arg)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(field, f"expected {describe(hint)}, got {value!r}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(field, f"expected one of {', '.join(repr(a) for a in args)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(field, f"expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [coerce(field, v, inner) for v in value]
        return tuple(items) if origin is tuple else items
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return as_float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise ConfigError(field, f"expected {describe(hint)}, got {value!r}")


def describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def divides(field: str, divisor: int, total: int, total_name: str) -> None:
    """Helper for `check`: `divisor` must divide `total`."""
    if divisor <= 0 or total % divisor:
        raise ConfigError(field, f"{field}={divisor} must divide {total_name}={total}")
