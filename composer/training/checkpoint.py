"""A training run's folder: checkpoints (model weights as safetensors, optimizer and loop state via torch.save,
loaded weights_only) and the learning curve `metrics.jsonl`.

A checkpoint is a directory `<out_dir>/checkpoint/` with `model.safetensors`, `trainer.pt` and `run.json` (the
run's fingerprint: architecture, task and training settings, compared before a resume); it is written to a
temporary directory first and renamed, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from composer.atomic import file_mode, write_atomic
from composer.errors import UserError

CHECKPOINT = "checkpoint"


FINGERPRINT = "run.json"


def save_checkpoint(out_dir: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    loop_state: dict[str, Any], fingerprint: dict[str, Any] | None = None) -> Path:
    final = Path(out_dir) / CHECKPOINT
    tmp = Path(out_dir) / f".{CHECKPOINT}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    (tmp / "model.safetensors").chmod(file_mode())        # safetensors writes 0600; the run's files are 0644
    if fingerprint is not None:
        (tmp / FINGERPRINT).write_text(json.dumps(fingerprint, indent=2) + "\n", encoding="utf-8")
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
    """Whether `out_dir` holds a checkpoint (after finishing a save that a kill cut between its two renames)."""
    if out_dir is None:
        return False
    final, old = Path(out_dir) / CHECKPOINT, Path(out_dir) / f".{CHECKPOINT}.old"
    if not final.exists() and (old / "trainer.pt").is_file():
        old.rename(final)
    return (final / "trainer.pt").is_file()


def read_fingerprint(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The fingerprint saved with the checkpoint in `out_dir` (None for a checkpoint written without one)."""
    path = Path(out_dir) / CHECKPOINT / FINGERPRINT
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is unreadable ({e}); use another output folder, or --no-resume to start over "
                        "in this one", path="out") from None
    return data if isinstance(data, dict) else None


def load_checkpoint(out_dir: str | os.PathLike, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model, optimizer and RNG states; return the loop state saved with them. A checkpoint that does
    not fit the model (or is damaged) is a UserError."""
    path = Path(out_dir) / CHECKPOINT
    try:
        load_model(model, str(path / "model.safetensors"), device=str(next(model.parameters()).device))
        state = torch.load(path / "trainer.pt", weights_only=True, map_location="cpu")
        optimizer.load_state_dict(state["optimizer"])
        loop = state["loop"]
        rng = state["cpu_rng"]
    except (OSError, RuntimeError, ValueError, KeyError, TypeError, pickle.UnpicklingError) as e:
        message = " ".join(str(e).split())[:300]
        raise UserError(f"{path} does not fit this run or is damaged ({type(e).__name__}: {message}); use another "
                        "output folder, or --no-resume to start over in this one", path="out") from None
    torch.set_rng_state(rng)
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return loop


def read_loop_state(out_dir: str | os.PathLike) -> dict[str, Any]:
    """The loop state (step, train_time, history) saved with the checkpoint in `out_dir`, without loading the
    weights into a model; a damaged checkpoint is a UserError."""
    path = Path(out_dir) / CHECKPOINT / "trainer.pt"
    try:
        loop = torch.load(path, weights_only=True, map_location="cpu")["loop"]
        return {"step": int(loop["step"]), "train_time": float(loop["train_time"]), "history": list(loop["history"])}
    except (OSError, RuntimeError, ValueError, KeyError, TypeError, pickle.UnpicklingError) as e:
        message = " ".join(str(e).split())[:300]
        raise UserError(f"{path} is damaged ({type(e).__name__}: {message}); use another output folder, or "
                        "--no-resume to start over in this one", path="out") from None


METRICS_FILE = "metrics.jsonl"


def append_metrics(out_dir: str | os.PathLike, metrics: dict[str, Any]) -> None:
    """One evaluation appended to `<out_dir>/metrics.jsonl` (the learning curve)."""
    with open(Path(out_dir) / METRICS_FILE, "a") as f:
        f.write(json.dumps(metrics) + "\n")


def write_metrics(out_dir: str | os.PathLike, history: list[dict[str, Any]]) -> None:
    """metrics.jsonl holds exactly `history`: the evaluations up to the checkpoint a run continues from."""
    write_atomic(Path(out_dir) / METRICS_FILE, "".join(json.dumps(m) + "\n" for m in history))


class PeriodicCheckpoints:
    """When a run with an output folder checkpoints between its start and end: every `every` steps, and once
    `seconds` have passed since the last checkpoint (or the start); 0 turns either off."""

    def __init__(self, every: int, seconds: float):
        self.every, self.seconds = every, seconds
        self.last = time.monotonic()

    def due(self, step: int) -> bool:
        by_steps = self.every > 0 and step % self.every == 0
        return by_steps or (self.seconds > 0 and time.monotonic() - self.last >= self.seconds)

    def saved(self) -> None:
        self.last = time.monotonic()
