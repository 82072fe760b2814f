"""Every training setting, once: `TrainConfig`, in sections (optimizer, lr_schedule, budget, evaluation,
checkpoint, runtime, parallel) whose fields carry their help text.

    config = TrainConfig.from_dict({"lr": 3e-3, "warmup_steps": 20, "steps": 500})           # flat keys
    config = TrainConfig.from_dict({"optimizer": {"lr": 3e-3}, "budget": {"steps": 500}})    # or sections
    config.optimizer.lr, config.to_dict(), config.flat(), config.with_settings(batch_size=16)

A setting's flat key is its field name (each is unique), so the flat form of YAML `train:` blocks, of
`composer.train(..., lr=...)` keyword arguments and of the CLI flags (`--warmup-steps`) all derive from these
dataclasses (see composer/training/settings.py). A new setting is one field here plus the code that reads it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from composer.errors import UserError
from composer.fields import option
from composer.training.schedule import SCHEDULES, Budget
from composer.training.settings import flatten, settings_of
from composer.yaml_source import read_source


@dataclass(frozen=True)
class OptimizerConfig:
    """AdamW, with weight decay on matrices only."""

    lr: float = option(1e-3, "peak learning rate", gt=0, lt=1e30)
    lrs: tuple[float, ...] | None = option(None, "sweep these learning rates (one run each) and keep the best",
                                           gt=0)
    weight_decay: float = option(0.1, "AdamW weight decay on matrices (not norms, biases or embeddings)",
                                 ge=0)
    weight_decays: tuple[float, ...] | None = option(None, "sweep these weight decays (one run per learning rate "
                                                     "x weight decay) and keep the best", ge=0)
    betas: tuple[float, float] = option((0.9, 0.95), "AdamW betas (beta1 beta2)", ge=0, lt=1)
    grad_clip: float = option(1.0, "clip the gradient norm to this value", gt=0)


@dataclass(frozen=True)
class ScheduleConfig:
    """Linear warmup, then a decay over the rest of the budget."""

    schedule: str = option("cosine", "decay after warmup: cosine, wsd (warmup-stable-decay) or constant",
                           names=SCHEDULES)
    warmup_steps: int = option(50, "linear warmup steps (at most a tenth of a known step budget)", ge=0)
    warmup_fraction: float | None = option(None, "warmup over this fraction of the budget (steps, tokens or "
                                           "seconds) instead of warmup_steps, e.g. 0.05", ge=0)
    min_lr_ratio: float = option(0.1, "final learning rate as a fraction of the peak", ge=0)


@dataclass(frozen=True)
class EvalConfig:
    eval_every: int | None = option(None, "evaluate every N steps (default: a tenth of a known step budget, "
                                    "else 200)", gt=0)
    eval_batch_size: int = option(128, "sequences per evaluation batch", gt=0)
    final_splits: tuple[str, ...] | None = option(None, "at the end, also score the final model on these held-out "
                                                  "splits of the task (text: test, holdout), as <split>_loss, ...")


@dataclass(frozen=True)
class CheckpointConfig:
    """With an output folder, a run checkpoints every `checkpoint_every` steps, when `checkpoint_seconds` have
    passed since its last checkpoint, on SIGINT/SIGTERM (from the CLI) and at its end."""

    checkpoint_every: int = option(500, "with an output folder, checkpoint every N steps (0: not by steps)",
                                   ge=0)
    checkpoint_seconds: float = option(600.0, "with an output folder, also checkpoint once this many seconds have "
                                       "passed since the last checkpoint (0: not by time)", ge=0)
    resume: bool = option(True, "resume from a checkpoint found in the output folder (it must be of the same "
                          "architecture, task and training settings)")


@dataclass(frozen=True)
class RuntimeConfig:
    seed: int = option(0, "torch random seed: the model's initialisation and dropout (the task seeds its data)",
                       ge=0, lt=2**63)
    batch_size: int = option(32, "sequences per training step", gt=0)
    threads: int | None = option(None, "torch CPU threads for this run (restored afterwards)", gt=0)
    compile: bool = option(False, "torch.compile the model")
    device: str | None = option(None, "cpu, cuda or cuda:N (default: cuda when available)")
    log_every: int = option(10, "report progress every N steps", gt=0)
    memory_check: bool = option(True, "refuse to start when the estimated memory (composer/training/memory.py) "
                                "exceeds what the device has available")
    memory_share: float = option(1.0, "the fraction of a GPU's memory this run may take (a search trial on a "
                                 "shared GPU: its gpus_per_trial)", gt=0, le=1)


@dataclass(frozen=True)
class ParallelConfig:
    """Data-parallel training of one model on Ray Train (composer/training/data_parallel.py): `workers` processes,
    each holding `threads` CPUs (or one GPU on CUDA) and taking `batch_size / workers` sequences of every batch."""

    workers: int = option(1, "data-parallel workers training this one model on Ray Train (1: this process); each "
                          "takes batch_size / workers sequences of every batch", ge=1, le=4096)
    fsdp: bool = option(False, "with workers > 1: shard parameters, gradients and optimizer state over the workers "
                        "(FSDP2) instead of keeping a copy in each (DDP)")
    worker_restarts: int = option(2, "with workers > 1: restart the workers from the last checkpoint this many times "
                                  "after one of them dies, then fail with its error", ge=0, le=1000)
    storage: str | None = option(None, "with workers > 1: where Ray Train keeps the run's checkpoints, a folder every "
                                 "node reaches or a URI such as s3://bucket/path (default: OUT/ray_train)")


@dataclass(frozen=True)
class TrainConfig:
    """How one candidate trains. The budget defaults to 1000 steps; a budget given replaces it whole."""

    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    lr_schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    budget: Budget = field(default_factory=lambda: Budget(steps=1000))
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: str = "train",
                  reserved: dict[str, str] | None = None) -> TrainConfig:
        """From flat keys, sections, or both (missing ones keep their defaults); errors name `path.key`."""
        return cls().with_values(parse_settings(data, path, reserved))

    @classmethod
    def load(cls, obj: Any) -> TrainConfig:
        """From a YAML file, YAML text or a dict; errors name the key and, from YAML, its line."""
        source = read_source(obj)
        try:
            return cls.from_dict(source.data or {}, path="")
        except UserError as e:
            raise source.error(e.message, e.path) from None

    def with_settings(self, **settings: Any) -> TrainConfig:
        """A copy with these flat settings changed, checked like `from_dict`."""
        return self.with_values(parse_settings(settings, "train"))

    def with_values(self, values: dict[str, Any]) -> TrainConfig:
        """A copy with these already checked flat values; budget keys replace the budget whole."""
        sections: dict[str, dict[str, Any]] = {}
        for key, value in values.items():
            sections.setdefault(SETTINGS[key].section, {})[key] = value
        changes = {name: Budget(**given) if name == "budget" else dataclasses.replace(getattr(self, name), **given)
                   for name, given in sections.items()}
        return dataclasses.replace(self, **changes)

    def flat(self) -> dict[str, Any]:
        """Every setting by its flat key."""
        return {key: getattr(getattr(self, s.section), key) for key, s in SETTINGS.items()}

    def changed(self) -> dict[str, Any]:
        """The flat settings that differ from the defaults (`TrainConfig().with_values(c.changed()) == c`)."""
        default = TrainConfig().flat()
        return {key: value for key, value in self.flat().items() if value != default[key]}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The nested form as plain data, ready for YAML (`from_dict(c.to_dict()) == c`)."""
        out: dict[str, dict[str, Any]] = {}
        for key, value in self.flat().items():
            out.setdefault(SETTINGS[key].section, {})[key] = list(value) if isinstance(value, tuple) else value
        return out


SETTINGS = settings_of(TrainConfig)     # flat key -> Setting: the accepted keys, types, defaults, help text


def parse_settings(data: Any, path: str = "train", reserved: dict[str, str] | None = None) -> dict[str, Any]:
    """Checked flat values from user data written flat and/or by section (only the keys given)."""
    return {key: SETTINGS[key].check(value, where)
            for key, (value, where) in flatten(data, SETTINGS, path, reserved).items()}


def train_config(config: TrainConfig | dict[str, Any] | None = None, budget: Budget | int | dict | None = None,
                 **settings: Any) -> TrainConfig:
    """The settings of one `train` call: `config` (a TrainConfig or a dict), then the flat keyword
    `settings`, then `budget` when given."""
    if config is None:
        config = TrainConfig()
    elif isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    elif not isinstance(config, TrainConfig):
        raise UserError(f"expected a TrainConfig or a mapping, got {type(config).__name__}", path="config")
    if settings:
        config = config.with_settings(**settings)
    if budget is not None:
        config = dataclasses.replace(config, budget=Budget.of(budget))
    return config


def eval_interval(eval_every: int | None, total_steps: int | None) -> int:
    """Steps between evaluations (the rule `eval_every`'s help states): `eval_every` when given, else a tenth of
    a known step budget, else 200."""
    return eval_every or (max(1, total_steps // 10) if total_steps else 200)
