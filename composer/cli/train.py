"""`composer train SPEC --task mqar [--steps N | --tokens N | --seconds S] ...`: train one candidate.

The training flags are generated from TrainConfig (composer/training/config.py): one per setting, named after
its flat key (`warmup_steps` -> `--warmup-steps`), with its type, choices, help text and default.

With `--out DIR`, Ctrl-C or SIGTERM ends the run after its current step with a checkpoint in DIR, and the command
exits 130 (SIGINT) or 143 (SIGTERM) naming it; the same command run again resumes from it (a finished run says
it is complete and changes nothing; a larger budget continues it). Each run that trains writes `DIR/result.json`:
its outcome and the provenance block a search, a confirmation and a bundle record (versions, git commit,
device, host). `--workers N` trains the one model on N data-parallel workers on Ray Train (here, or on the
cluster at `--address`), with the same output.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from composer.cli.common import add_setting_flags, flag, print_json
from composer.errors import UserError

if TYPE_CHECKING:
    from composer.training.config import TrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train an architecture on a task within a budget",
                       description="Train SPEC on a task (mqar, text, mad, mad:<task>) within a budget of steps, "
                       "tokens or seconds; print progress and a summary of quality and cost. Every training "
                       "setting has a flag (composer/training/config.py).")
    p.add_argument("spec", help="architecture YAML file")
    p.add_argument("--task", default="mqar", help="task name (default mqar): mqar, text, mad, mad:<task>")
    p.add_argument("--out", default=None, metavar="DIR", help="write spec.yaml, metrics.jsonl, result.json (with "
                   "versions, git commit, device and host) and checkpoints here "
                   "(every --checkpoint-every steps and --checkpoint-seconds, on Ctrl-C or SIGTERM, and at the end); "
                   "the same command run again resumes from the checkpoint")
    p.add_argument("--data", default=None, metavar="PATH", help="text task: a file, directory, glob or hub name")
    p.add_argument("--set", dest="task_settings", action="extend", nargs="+", default=[], metavar="PATH=VALUE",
                   help="override by dotted path, values as YAML: --set train.warmup_steps=5 task.params.seq_len=64 "
                   "(train.*: any training setting; a bare KEY=VALUE is a task parameter: --set seq_len=64); "
                   "applied after --config, before the setting flags")
    p.add_argument("--config", default=None, metavar="YAML", help="training settings from a YAML file (flat keys "
                   "or sections); flags override it")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--address", default=None, metavar="HOST:PORT", help="with --workers N: the Ray cluster the "
                   "workers run on ('auto' or host:port; default RAY_ADDRESS, else a cluster started here)")
    p.add_argument("--log", nargs="+", default=[], metavar="LOGGER", help="with --out: also log to tensorboard "
                   "(DIR/tensorboard), csv (DIR/metrics.csv), wandb (offline) and/or mlflow (DIR/mlflow.db, or "
                   "MLFLOW_TRACKING_URI)")
    add_setting_flags(p)
    p.set_defaults(func=run)


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of a command line: the --config file, then the flags given."""
    from composer.overrides import train_overrides
    from composer.training.config import SETTINGS, TrainConfig, parse_settings

    config = TrainConfig.load(args.config) if args.config else TrainConfig()
    config = config.with_values(parse_settings(train_overrides(getattr(args, "task_settings", [])), "train"))
    given = {key: getattr(args, key) for key in SETTINGS if getattr(args, key, None) is not None}
    try:
        values = parse_settings(given, path="")
    except UserError as e:
        raise UserError(e.message, path=flag(e.path) if e.path in SETTINGS else e.path) from None
    return config.with_values(values)


def run(args: argparse.Namespace) -> int:
    from composer.interrupt import interrupt_signal, signal_name, stop_on_signals
    from composer.overrides import check_train_command, task_overrides
    from composer.spec_parse import load_spec
    from composer.tasks import TaskSuite, get_task
    from composer.trainer import completed_run, fit_spec, saved_loop, train
    from composer.training.checkpoint import CHECKPOINT

    config = train_config_from_args(args)
    if args.address is not None:
        if config.parallel.workers == 1:
            raise UserError("--address names the Ray cluster of data-parallel workers: give --workers N too",
                            path="--address")
        os.environ["RAY_ADDRESS"] = args.address       # where composer/training/ray_train.py starts the workers
    spec = load_spec(Path(args.spec))
    check_train_command(args.task_settings, args.task)
    params = task_overrides(args.task, args.task_settings)
    if args.data is not None:
        if args.task != "text":
            raise UserError("--data applies to the text task only", path="--data")
        params["data"] = args.data
    task = get_task(args.task, **params)
    if not isinstance(task, TaskSuite):     # the task's vocabulary when the file states none; a mismatch is refused
        spec = fit_spec(Path(args.spec), task)
    show = not args.json
    finished = completed_run(spec, task, config, args.out)
    if finished is not None:
        print(f"{args.out}: this run is complete (step {finished.step}; budget {budget_text(config)}); nothing was "
              "changed: give a larger budget to continue it, or --no-resume to start it over", file=sys.stderr)
        print(summary(finished)) if show else print_json(finished.to_dict())
        return 0
    saved = saved_loop(spec, task, config, args.out)
    if saved is not None:
        print(f"resuming {args.out} from its checkpoint at step {saved['step']} (budget {budget_text(config)})",
              file=sys.stderr)
    tracker = open_tracking(args, spec, task, config, params)
    on_step, on_eval = tracked(tracker, progress_line if show else None, eval_line if show else None)
    try:
        with stop_on_signals():
            result = train(spec, task, config=config, out_dir=args.out, on_step=on_step, callback=on_eval)
            signum = interrupt_signal()
    except UserError as e:
        raise UserError(e.message, path=_flag_path(e.path), line=e.line, source=e.source) from None
    finally:
        if tracker is not None:
            tracker.close()
    if args.out:
        write_result(Path(args.out), result, config)
    if show:
        if sys.stderr.isatty():
            sys.stderr.write("\n")
        print(summary(result))
    else:
        print_json(result.to_dict())
    if result.status == "interrupted" and signum is not None:
        where = (f"checkpoint saved in {Path(result.out_dir) / CHECKPOINT}; run the same command again to resume "
                 "from it" if result.out_dir else "nothing saved (no --out)")
        print(f"interrupted by {signal_name(signum)} after step {result.step}: {where}", file=sys.stderr)
        return 128 + signum
    return 0 if result.status != "diverged" else 1


RESULT_FILE = "result.json"


def write_result(out: Path, result: Any, config: TrainConfig) -> None:
    """`DIR/result.json`: the run's outcome (status, step, final metrics, sweep rows, suite members) and where it
    came from (composer/provenance.py: versions, git commit, device, host), as a search trial's result.json."""
    from composer.atomic import write_json
    from composer.provenance import provenance

    record = {k: v for k, v in result.to_dict().items() if k != "history"}
    write_json(out / RESULT_FILE, {**record, "budget": config.budget.as_dict(),
                                   "provenance": provenance(config.runtime.device)})


def budget_text(config: TrainConfig) -> str:
    """`steps=300`, `seconds=120`: the budget a command line gave."""
    return ", ".join(f"{k}={v:g}" for k, v in config.budget.as_dict().items())


def open_tracking(args: argparse.Namespace, spec: Any, task: Any, config: TrainConfig,
                  params: dict[str, Any]) -> Any:
    """The `--log` trackers (composer/tracking/), writing in --out, with the run's settings logged once as
    parameters: the task, the training settings, the spec and the costs of the model the task trains."""
    if not args.log:
        return None
    from composer.costs import model_cost
    from composer.tasks import TaskSuite
    from composer.tracking import check_backends, open_trackers
    from composer.trainer import fit_spec

    check_backends(args.log)
    if not args.out:
        raise UserError("--log writes into the run folder: give --out DIR", path="--log")
    settings: dict[str, Any] = {"task": {"name": args.task, **params}, **config.to_dict(), "spec": spec.to_dict()}
    if not isinstance(task, TaskSuite):
        settings["costs"] = model_cost(fit_spec(spec, task), seq_len=task.seq_len).as_dict()
    return open_trackers(args.log, args.out, settings, name=Path(args.out).name)


def tracked(tracker: Any, on_step: Callable | None, on_eval: Callable | None) -> tuple[Callable | None, Callable]:
    """The trainer's `on_step` and evaluation `callback`, also logging to `tracker` when there is one: `train/loss`,
    `train/lr`, `train/tokens_per_s` at logged steps, `eval/<metric>` at evaluations (without the run's
    settings and costs, which are its parameters)."""
    from composer.tracking import evaluation_metrics
    def step(p: dict[str, Any]) -> None:
        if tracker is not None:
            tracker.log_metrics({f"train/{k}": v for k, v in p.items() if k in ("loss", "lr", "tokens_per_s")},
                                p["step"])
        if on_step is not None:
            on_step(p)

    def evaluation(m: dict[str, Any]) -> None:
        if tracker is not None and isinstance(m.get("step"), int):
            tracker.log_metrics(evaluation_metrics(m), m["step"])
        if on_eval is not None:
            on_eval(m)

    return (step if tracker is not None or on_step is not None else None), evaluation


def eval_line(m: dict[str, Any]) -> None:
    """One line per evaluation, as it happens."""
    if "step" not in m:
        return
    shown = [f"{k} {_fmt(m[k])}" for k in ("val_loss", "accuracy", "bits_per_byte") if k in m]
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    sys.stderr.write(f"eval at step {m['step']}: " + "  ".join(shown) + "\n")
    sys.stderr.flush()


def _flag_path(path: str | None) -> str | None:
    """An error's field as the flag that sets it (`out` -> `--out`, `warmup_steps` -> `--warmup-steps`)."""
    from composer.training.config import SETTINGS

    return flag(path) if path in SETTINGS or path == "out" else path


def progress_line(p: dict[str, Any]) -> None:
    eta = f"ETA {p['eta_s']:,.0f}s" if math.isfinite(p["eta_s"]) else ""
    text = (f"step {p['step']:>6}  loss {p['loss']:.4f}  lr {p['lr']:.2e}  {p['tokens_per_s']:,.0f} tok/s  "
            f"{100 * p['fraction']:5.1f}%  {eta}")
    if sys.stderr.isatty():
        sys.stderr.write("\r" + text)
    else:
        sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


SUMMARY_KEYS = ("status", "task", "val_loss", "accuracy", "bits_per_byte", "train_loss", "step", "tokens",
                "tokens_per_s", "peak_memory_bytes", "params", "non_embedding_params", "active_params",
                "flops_per_token", "state_bytes", "lr", "diverged_step", "interrupted_step")


def summary(result: Any) -> str:
    m = result.metrics
    rows = [(k, _fmt(m[k])) for k in SUMMARY_KEYS if k in m]
    rows += [(k, _fmt(v)) for k, v in m.items() if k.startswith("accuracy/")]
    if result.sweep:
        rows += [(f"lr {r['lr']:g}", f"{r['status']}, val_loss {_fmt(r['val_loss'])}, accuracy "
                  f"{_fmt(r['accuracy'])}") for r in result.sweep]
    if result.out_dir:
        rows.append(("out", result.out_dir))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
