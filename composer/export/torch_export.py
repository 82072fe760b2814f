"""`torch.export` of a model for one fixed input shape (the logits of a fresh sequence).

Every registered primitive exports except `moe`: its expert dispatch sizes groups from the routing (a
data-dependent shape), which `torch.export` cannot trace (tests/test_export_torch.py tries each one).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from composer.model import HybridLM


class Logits(nn.Module):
    """The model's logits alone, under the model's own parameter names: what model.pt2 computes (a program
    returning the model's `LMOutput` NamedTuple could only be saved through torch's private API)."""

    def __init__(self, model: HybridLM):
        super().__init__()
        for name, child in model.named_children():
            self.add_module(name, child)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return HybridLM.forward(self, tokens).logits


def export_program(model: HybridLM, seq_len: int, path: Path, batch_size: int = 1) -> str:
    """Write `torch.export.save` of the model for tokens `[batch_size, seq_len]` to `path`.

    Returns "ok" (checked: the exported program's logits equal the model's) or why it failed; some
    primitives use data-dependent control flow that `torch.export` cannot trace.
    """
    model = model.eval()
    tokens = torch.randint(0, model.spec.vocab_size, (batch_size, seq_len))
    torch_logger = logging.getLogger("torch")
    level = torch_logger.level
    torch_logger.setLevel(logging.CRITICAL)  # a failed trace logs pages of graph; the reason is returned
    try:
        with torch.no_grad():
            expected = model(tokens).logits  # first: a layer caching tensors must not cache traced ones
            program = torch.export.export(Logits(model), (tokens,), strict=False)
            got = program.module()(tokens)
        if not torch.allclose(expected, got, atol=1e-5, rtol=1e-5):
            return "failed: the exported program's logits differ from the model's"
        torch.export.save(program, str(path))
    except Exception as e:  # noqa: BLE001  (torch.export raises many error types; report, do not crash)
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"failed: {type(e).__name__}: {message[:300]}"
    finally:
        torch_logger.setLevel(level)
    return "ok"
