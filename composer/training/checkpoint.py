"""A training run's folder: checkpoints (model weights as safetensors, optimizer and loop state via torch.save,
loaded weights_only) and the learning curve `metrics.jsonl`.

A checkpoint is a directory `<out_dir>/checkpoint/` with `model.safetensors` and `trainer.pt`; it is written
to a temporary directory first and renamed, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

CHECKPOINT = "checkpoint"


def save_checkpoint(out_dir: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    loop_state: dict[str, Any]) -> Path:
    final = Path(out_dir) / CHECKPOINT
    tmp = Path(out_dir) / f".{CHECKPOINT}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    state = {"optimizer": optimizer.state_dict(), "loop": loop_state, "cpu_rng": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    torch.save(state, tmp / "trainer.pt")
    old = Path(out_dir) / f".{CHECKPOINT}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def has_checkpoint(out_dir: str | os.PathLike | None) -> bool:
    return out_dir is not None and (Path(out_dir) / CHECKPOINT / "trainer.pt").exists()


def load_checkpoint(out_dir: str | os.PathLike, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model, optimizer and RNG states; return the loop state saved with them."""
    path = Path(out_dir) / CHECKPOINT
    load_model(model, str(path / "model.safetensors"), device=str(next(model.parameters()).device))
    state = torch.load(path / "trainer.pt", weights_only=True, map_location="cpu")
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["cpu_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["loop"]


METRICS_FILE = "metrics.jsonl"


def append_metrics(out_dir: str | os.PathLike, metrics: dict[str, Any]) -> None:
    """One evaluation appended to `<out_dir>/metrics.jsonl` (the learning curve)."""
    with open(Path(out_dir) / METRICS_FILE, "a") as f:
        f.write(json.dumps(metrics) + "\n")


def write_metrics(out_dir: str | os.PathLike, history: list[dict[str, Any]]) -> None:
    """metrics.jsonl holds exactly `history`: the evaluations up to the checkpoint a run continues from."""
    (Path(out_dir) / METRICS_FILE).write_text("".join(json.dumps(m) + "\n" for m in history))
