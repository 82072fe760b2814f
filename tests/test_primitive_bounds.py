"""Every primitive's single-field bounds live once, declared on its Config fields (composer.fields.option), and
hold however the Config was built: `Primitive.validate` checks them (then the primitive's own cross-field
`check`) for a Config made in Python as well as one parsed from a spec."""

import dataclasses
import math

import pytest

from composer import UserError, load_spec
from composer.fields import bounds_of
from primitives import registered
from primitives.base import ConfigError

BOUNDED = [(name, f) for name, cls in sorted(registered().items()) for f in dataclasses.fields(cls.Config)
           if bounds_of(f)]


def outside(field: dataclasses.Field) -> float | int:
    """A value just past the field's lower bound (or upper, when it has only that)."""
    bounds = bounds_of(field)
    step = 1 if "int" in str(field.type) else 0.5
    if "ge" in bounds:
        return bounds["ge"] - step
    if "gt" in bounds:
        return bounds["gt"]
    if "le" in bounds:
        return bounds["le"] + step
    return bounds["lt"]


def test_the_primitives_have_bounded_fields():
    assert len(BOUNDED) >= 30 and len({name for name, _ in BOUNDED}) >= 10


@pytest.mark.parametrize("name, field", BOUNDED, ids=[f"{n}.{f.name}" for n, f in BOUNDED])
def test_a_value_out_of_bounds_is_refused_however_the_config_was_made(name, field):
    cls = registered()[name]
    value = outside(field)
    with pytest.raises(ConfigError) as info:
        cls.validate(cls.Config(**{field.name: value}), 64)
    assert info.value.field == field.name and f"got {value!r}" in str(info.value)
    with pytest.raises(UserError) as parsed:
        load_spec({"d_model": 64, "layers": [{"op": name, field.name: value}]})
    assert parsed.value.path == f"layers[0].{field.name}"


def test_floats_must_be_finite_in_a_config_made_in_python():
    cls = registered()["attention"]
    with pytest.raises(ConfigError, match="expected a finite number"):
        cls.validate(cls.Config(rope_base=math.nan), 64)


def test_every_primitive_parameter_declares_its_help():
    """`composer primitives` shows each parameter's meaning from its declaration, never from a table elsewhere."""
    from composer.fields import help_of

    missing = [f"{name}.{f.name}" for name, cls in sorted(registered().items()) for f in dataclasses.fields(cls.Config)
               if not help_of(f)]
    assert missing == []
