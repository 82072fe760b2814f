"""The `tensorboard` backend: event files in `<folder>/tensorboard/` through torch.utils.tensorboard's
SummaryWriter (the `tensorboard` package); in a search, Ray Tune's TensorBoard logger (it needs `tensorboardX`),
on by default where that is installed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from composer.tracking.base import Backend, Tracker, flat_params, numbers, register_backend


class TensorBoardTracker(Tracker):
    def __init__(self, folder: Path, name: str | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder / "tensorboard"))

    def log_params(self, params: dict[str, Any]) -> None:
        self.writer.add_text("params", "\n".join(f"    {k}: {v}" for k, v in flat_params(params).items()))

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        for key, value in numbers(metrics).items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


def ray_callback(run_root: Path, project: str) -> Any:
    from ray.tune.logger import TBXLoggerCallback

    return TBXLoggerCallback()


register_backend(Backend("tensorboard", tracker=TensorBoardTracker, ray_callback=ray_callback,
                         package="tensorboard", install="pip install -e .[tensorboard]",
                         search_package="tensorboardX", search_default=True))
