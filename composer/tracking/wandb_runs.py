"""The `wandb` backend (`pip install -e .[wandb]`): a W&B run in `offline` mode unless WANDB_MODE says
otherwise (project WANDB_PROJECT, default `composer`); in a search, Ray's W&B logger (the space's name as the
project)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from composer.tracking.base import Backend, Tracker, flat_params, numbers, register_backend


class WandbTracker(Tracker):
    def __init__(self, folder: Path, name: str | None):
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "composer"), name=name, dir=str(folder),
                              mode=os.environ.get("WANDB_MODE", "offline"))

    def log_params(self, params: dict[str, Any]) -> None:
        self.run.config.update(flat_params(params), allow_val_change=True)

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        self.run.log(numbers(metrics), step=step)

    def close(self) -> None:
        self.run.finish()


def ray_callback(run_root: Path, project: str) -> Any:
    from ray.air.integrations.wandb import WandbLoggerCallback

    return WandbLoggerCallback(project=project, mode=os.environ.get("WANDB_MODE", "offline"), dir=str(run_root))


register_backend(Backend("wandb", tracker=WandbTracker, ray_callback=ray_callback, package="wandb",
                         install="pip install -e .[wandb]"))
