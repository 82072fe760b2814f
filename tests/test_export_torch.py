"""`torch.export` of every registered primitive: a program equal to the model, or a clear reason.

Known at the time of writing: every primitive exports except `moe` (its dispatch sizes expert groups from
the routing, a data-dependent shape). The test records which fail rather than hard-coding the list, but
holds the ones that export to the model's logits.
"""

from __future__ import annotations

import pytest
import torch

import primitives
from composer import HybridLM, load_spec
from composer.export.torch_export import export_program

pytestmark = pytest.mark.slow  # tracing each primitive: ~15-30 s in all

MUST_EXPORT = ("attention", "mlp", "mamba2", "gla", "gated_deltanet")


@pytest.mark.parametrize("name", sorted(primitives.registered()))
def test_torch_export_each_primitive(tmp_path, name):
    cls = primitives.registered()[name]
    layers = [name] if cls.kind == "channel_mixer" else [name, "mlp"]
    spec = load_spec({"d_model": 32, "vocab_size": 50, "layers": layers})
    model = HybridLM(spec).eval()
    status = export_program(model, 12, tmp_path / "m.pt2")
    if name in MUST_EXPORT:
        assert status == "ok"
    if status != "ok":
        assert status.startswith("failed: ") and len(status) > len("failed: ")
        assert not (tmp_path / "m.pt2").exists()
        return
    program = torch.export.load(str(tmp_path / "m.pt2"))
    tokens = torch.randint(0, 50, (1, 12))
    with torch.no_grad():
        assert torch.allclose(program.module()(tokens), model(tokens).logits, atol=1e-5)


def test_torch_export_of_the_zoo_options(tmp_path):
    """Meta tokens, sinks through a window with a kept prefix, the output gate, partial RoPE, MLA, ReLU^2."""
    spec = load_spec({"d_model": 32, "vocab_size": 50, "meta_tokens": 3, "layers": [
        {"op": "attention", "n_heads": 2, "window": 4, "keep_prefix": 3, "sinks": True, "output_gate": "channel",
         "rope_fraction": 0.5}, {"op": "mlp", "kind": "relu2"}, {"op": "mla", "q_lora_rank": 8}]})
    model = HybridLM(spec).eval()
    assert export_program(model, 12, tmp_path / "m.pt2") == "ok"
    program = torch.export.load(str(tmp_path / "m.pt2"))
    tokens = torch.randint(0, 50, (1, 12))
    with torch.no_grad():
        assert torch.allclose(program.module()(tokens), model(tokens).logits, atol=1e-5)
