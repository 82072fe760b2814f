"""The import rule export's inliner rests on: every family module imports only the standard library, torch,
`primitives.base`, `primitives.common` and `primitives.ops` (never the Triton package, nor another family)."""

from __future__ import annotations

import importlib
import inspect

import pytest

import primitives
from composer.export.standalone import Inliner, import_rule_violations

FAMILY_MODULES = sorted({cls.__module__ for cls in primitives.registered().values()})


def test_every_builtin_family_is_checked():
    assert {"primitives.attention", "primitives.ssm", "primitives.xlstm", "primitives.linear_attention",
            "primitives.conv", "primitives.rnn", "primitives.mlp", "primitives.moe"} <= set(FAMILY_MODULES)


@pytest.mark.parametrize("module", [*FAMILY_MODULES, "primitives.common"])
def test_module_follows_the_import_rule(module):
    source = inspect.getsource(importlib.import_module(module))
    assert import_rule_violations(source) == []


def test_the_rule_flags_other_families_kernels_third_party_and_relative_imports():
    source = '''
from __future__ import annotations
import math
import torch.nn.functional as F
from torch import nn
from primitives.base import Cost
from primitives.common import ShortConv
from primitives.ops import CHUNK_SIZE
from primitives.ops.scan_diagonal import scan_diagonal
from primitives.linear_attention import HeadMixer
import primitives.conv
from primitives.ops.kernels import FLA_AVAILABLE
import numpy
from .base import Cost


def f():
    from composer.spec import ArchSpec
'''
    assert import_rule_violations(source) == [
        "line 10: imports primitives.linear_attention",
        "line 11: imports primitives.conv",
        "line 12: imports primitives.ops.kernels",
        "line 13: imports numpy",
        "line 14: imports .base",
        "line 18: imports composer.spec",
    ]


def test_constants_re_exported_by_a_package_resolve_to_the_module_that_assigns_them():
    inliner = Inliner()
    assert inliner.providers("primitives.ops", ["CHUNK_SIZE", "simple_gla", "chunk_mlstm"]) == [
        "primitives.ops.dispatch", "primitives.ops.dispatch", "primitives.ops.chunked_mlstm"]
