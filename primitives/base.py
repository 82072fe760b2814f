"""The Primitive interface, its configuration dataclasses, costs and the registry.

Every layer Composer can place in an architecture is a `Primitive`: one residual sub-layer's inner
operator (`x + op(norm(x))`; the residual and the norm belong to the model, not to the primitive).

A primitive class declares

* `name`     the registry name used in YAML (set by `@register("name")`),
* `symbol`   its letter(s) in one-line stripes such as `A M (A M)x2` (default: the name's first two letters),
* `kind`     "token_mixer" (mixes along time: attention, SSMs) or "channel_mixer" (MLP, MoE),
* `Config`   a dataclass of its parameters, each declared with `composer.fields.option(default, help, bounds)`
  (what the YAML may set; `composer primitives` shows the help),
* `forward(x, state=None) -> (y, new_state)`: `x` is `[B, T, D]`. With `state=None` the sequence starts
  fresh and `new_state` may be None; with a state from `init_state` the call continues that sequence
  and returns the state after it. Running a sequence in pieces must equal running it whole.
* `init_state(batch_size, device, dtype)`: the empty state (a dict of tensors), or None if stateless,
* `cost(cfg, d_model, seq_len, dtype_bytes)`: analytic parameters, forward FLOPs per token at context
  `seq_len`, and state bytes per sequence at that context.
* `width_scaled`: the Config fields that grow in proportion to d_model when `scaling.rules.widen` widens a
  model (see `width_fields`).
* `follow(earlier)`: called at build with the nearest earlier layer of the same primitive (see the method).
* `aux_losses()`: the weighted auxiliary losses of its most recent call (e.g. MoE load balancing). The block
  that calls a primitive reads them right after the call and returns them with its output, so that every
  call counts once, whatever loops, shared layers or recomputation do.

Three options serve layers that are more than `x + op(norm(x))` (Zamba2's shared block, primitives/zamba2.py):

* `reads_embeddings`: `forward` is also given `embeddings=` the model's input embeddings `[B, T, D]` (after the
  meta tokens; in a parallel block with `split`, the branch's slice of their channels);
* `feeds_next`: the sub-layer has no norm; its output is added to the next sub-layer's input (before that
  sub-layer's norm) instead of to the residual stream, which it leaves as it is. Where the next block at the same
  level is not a plain sub-layer (a loop, a parallel block, another feeding layer, or none), the output is added
  to the stream. As a branch of a parallel block it is an ordinary branch.
* `new_application()`: a module of per-use parameters. Every sub-layer or branch that uses the primitive's
  weights (the layer that owns them and each `share` of them) owns one and passes it as `application=`;
  `application_cost(cfg, d_model)` is its cost, counted once per use.

A family module imports only the standard library, torch, Composer's ground floor (`composer.fields` for the
field declarations; see its docstring), this module, `primitives.common` (the layers families share) and
`primitives.ops` (never `primitives.ops.kernels`, nor another family), so that export can inline exactly the
families a model uses (`composer.export.standalone.import_rule_violations`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from composer.errors import UserError
from composer.fields import bounds_of
from composer.names import unknown_name_message
from composer.reader import Reader

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
    reads_embeddings: ClassVar[bool] = False  # see the module docstring for these two
    feeds_next: ClassVar[bool] = False

    def __init__(self, d_model: int, cfg: Any):
        super().__init__()
        self.d_model = d_model
        self.cfg = cfg

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        raise NotImplementedError

    def init_state(self, batch_size: int, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> State:
        return None

    def new_application(self) -> nn.Module | None:
        """The parameters of one more use of this primitive's weights (see the module docstring); None: none."""
        return None

    @classmethod
    def application_cost(cls, cfg: Any, d_model: int) -> Cost:
        """The cost of one `new_application` module: its parameters and its FLOPs per token."""
        return ZERO_COST

    def aux_losses(self) -> dict[str, torch.Tensor]:
        """Weighted auxiliary losses of the most recent call (e.g. MoE load balancing); empty by default."""
        return {}

    def follow(self, earlier: Primitive | None) -> None:
        """Called once when a model is built, with the nearest earlier layer of the same primitive (None: this is
        the first): a layer that reads another's results keeps it here (Hymba's cross-layer key/value sharing).
        Nothing by default."""

    @classmethod
    def validate(cls, cfg: Any, d_model: int) -> None:
        """Raise `ConfigError(field, message)` when the parameters cannot make a valid layer: every field within
        its declared bounds (composer.fields.option; floats finite, integers within MAX_INTEGER), then the
        primitive's own `check`. Call this rather than `check`: a Config built in Python has not been through
        make_config."""
        for f in dataclasses.fields(cfg):
            check_bounds(f, getattr(cfg, f.name))
        cls.check(cfg, d_model)

    @classmethod
    def check(cls, cfg: Any, d_model: int) -> None:
        """The rules that relate fields to each other or to d_model (a head count dividing the width, top_k at
        most n_experts); raise `ConfigError(field, message)`. Single-field bounds are declared on the fields
        (composer.fields.option), which `validate` checks first."""

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


# ----------------------------------------------------------------------------------------------
# Building a Config from plain data (YAML), with field-level errors


def config_fields(cls: type[Primitive]) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls.Config)}


def make_config(cls: type[Primitive], params: dict[str, Any]) -> Any:
    """Build `cls.Config` from a dict, checking names, types and bounds (composer.reader, in the spec's style:
    every float finite, every integer within MAX_INTEGER, and the field's declared bounds); raises ConfigError
    naming the field."""
    try:
        return Reader(spec_style=True).read(cls.Config, params, what=f"parameter of {cls.name!r}")
    except UserError as e:
        raise ConfigError(e.path or "", e.message) from None


def check_bounds(f: dataclasses.Field, value: Any) -> None:
    """ConfigError when a number (or a number in a list) of field `f` is not finite or out of its bounds."""
    for item in value if isinstance(value, (list, tuple)) else (value,):
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            try:
                Reader(spec_style=True).number(item, f.name, int if isinstance(item, int) else float, **bounds_of(f))
            except UserError as e:
                raise ConfigError(f.name, e.message) from None


def divides(field: str, divisor: int, total: int, total_name: str) -> None:
    """Helper for `check`: `divisor` must divide `total`."""
    if divisor <= 0 or total % divisor:
        raise ConfigError(field, f"{field}={divisor} must divide {total_name}={total}")
