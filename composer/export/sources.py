"""What `composer export` can read: a spec file, a trained checkpoint directory, or a search run.

A resolved source is the spec, the weights when there are any, the metrics it was selected on, and what is
known of its tokenizer (a `tokenizer.json` beside it, or the task it was trained on).

Layouts read (the trainer and the run directory write them):

* spec file:   any YAML that `load_spec` reads (no weights).
* checkpoint:  a directory with `spec.yaml` and the weights: `model.safetensors`, the trainer's
               `checkpoint/model.safetensors`, or a single `*.safetensors`; metrics from `metrics.json` or
               the last line of the trainer's `metrics.jsonl`.
* search run:  a directory with `best.yaml`, `consensus.yaml`, `leaderboard.csv` and `trials/<id>/`;
               `--trial ID` picks `trials/<id>/` (itself a checkpoint, or a spec with metrics), `best`
               (default) the best trial, `consensus` the aggregated architecture (spec only). A trial id
               is a name (one path component, a safe character set), never a path: the folder it names
               must lie inside the run's `trials/`. The task comes from the run's `space.yaml`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from composer.errors import UserError
from composer.export.tokenizer import TOKENIZER_FILE
from composer.spec import ArchSpec
from composer.spec_parse import load_spec
from composer.yaml_source import load_yaml

SPEC_NAMES = ("spec.yaml", "arch.yaml", "architecture.yaml")
TRIAL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


@dataclass
class Resolved:
    spec: ArchSpec
    weights: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    origin: str = ""
    tokenizer_file: Path | None = None      # a tokenizer.json saved with the source
    task: dict[str, Any] | None = None      # {name, params} of the task it was trained on, when known
    source: Path | None = None              # the folder or file it was read from


def resolve_source(path: str | Path, trial: str | None = None, pick: str = "best") -> Resolved:
    """The spec, weights and metrics behind `path` (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file or directory")
    if path.is_file():
        if trial is not None:
            raise UserError("--trial applies to a search run directory, not a spec file")
        return Resolved(load_spec(path), origin=f"spec file {path}", source=path)
    if (path / "trials").is_dir() or (path / "best.yaml").exists() or (path / "leaderboard.csv").exists():
        return _from_run(path, trial, pick)
    if trial is not None:
        raise UserError(f"{path}: --trial applies to a search run directory (with trials/)")
    return _from_checkpoint(path)


def _from_checkpoint(path: Path, origin: str | None = None) -> Resolved:
    spec_file = next((path / n for n in SPEC_NAMES if (path / n).exists()), None)
    if spec_file is None:
        raise UserError(f"{path}: not a checkpoint (no {' or '.join(SPEC_NAMES)}) and not a search run")
    weights = next((w for w in (path / "model.safetensors", path / "checkpoint" / "model.safetensors")
                    if w.exists()), None)
    if weights is None:
        found = sorted(path.glob("*.safetensors"))
        if len(found) > 1:
            raise UserError(f"{path}: several .safetensors files; name the weights model.safetensors")
        weights = found[0] if found else None
    metrics = _read_metrics(path)
    run = path.parent.parent if path.parent.name == "trials" else None
    task = run_task(run) if run is not None else None
    if task is None and isinstance(metrics.get("task"), str):
        task = {"name": metrics["task"], "params": {}}
    tokenizer = next((f for f in (path / TOKENIZER_FILE, run / TOKENIZER_FILE if run else None)
                      if f is not None and f.is_file()), None)
    return Resolved(load_spec(spec_file), weights, metrics, origin or f"checkpoint {path}", tokenizer, task, path)


def run_task(run: Path) -> dict[str, Any] | None:
    """The task a search run trained on ({name, params}, from its space.yaml); None when it has none."""
    from composer.tasks import TaskRef

    file = run / "space.yaml"
    if not file.is_file():
        return None
    try:
        task = (load_yaml(file.read_text(encoding="utf-8"))[0] or {}).get("task")
    except (yaml.YAMLError, UnicodeDecodeError, AttributeError) as e:
        raise UserError(f"{file}: cannot read the run's task ({e})") from None
    if not isinstance(task, dict) or not isinstance(task.get("name"), str):
        return None
    return TaskRef.of(task).as_dict()


def _read_metrics(path: Path) -> dict[str, Any]:
    file = path / "metrics.json"
    if not file.exists():
        file = path / "metrics.jsonl"
        if not file.exists():
            return {}
    try:
        lines = [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
        data = json.loads(lines[-1] if file.suffix == ".jsonl" and lines else "\n".join(lines) or "{}")
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise UserError(f"{file}: not valid JSON ({e})") from None
    metrics = data.get("metrics", data) if isinstance(data, dict) else {}
    if not isinstance(metrics, dict):
        return {}
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}


def _from_run(path: Path, trial: str | None, pick: str) -> Resolved:
    if trial is not None:
        trial = check_trial_name(trial)
    if trial is None and pick == "best":
        trial = best_trial_id(path)
        if trial is None:
            if (path / "best.yaml").exists():
                return _run_spec(path, path / "best.yaml", f"run {path} (best.yaml)")
            raise UserError(f"{path}: no best trial yet (empty leaderboard and no best.yaml)")
    if trial is None:
        file = path / f"{pick}.yaml"
        if not file.exists():
            raise UserError(f"{path}: no {pick}.yaml in this run")
        return _run_spec(path, file, f"run {path} ({pick})")
    trial_dir = trial_folder(path, trial)
    if not trial_dir.is_dir():
        known = sorted(p.name for p in (path / "trials").glob("*") if p.is_dir())[:10]
        raise UserError(f"{path}: no trial {trial!r} (trials: {', '.join(known) or 'none'})")
    resolved = _from_checkpoint(trial_dir, origin=f"run {path}, trial {trial}")
    resolved.metrics = {**leaderboard_row(path, str(trial)), **resolved.metrics}
    return resolved


def _run_spec(run: Path, file: Path, origin: str) -> Resolved:
    tokenizer = run / TOKENIZER_FILE
    return Resolved(load_spec(file), origin=origin, tokenizer_file=tokenizer if tokenizer.is_file() else None,
                    task=run_task(run), source=run)


def check_trial_name(trial: str | int, field: str = "--trial") -> str:
    """A trial id is a name (a trial number, or a name inside the run), never a path."""
    text = str(trial)
    if not TRIAL_NAME.fullmatch(text) or text in (".", ".."):
        raise UserError(f"{field} must be a trial number or name (letters, digits, '_', '-', '.'; not a path), "
                        f"got {text!r}", path=field)
    return text


def trial_folder(run: Path, trial: str) -> Path:
    """run/trials/<trial>, refusing one that resolves outside run/trials (a symbolic link out of the run)."""
    trials = (run / "trials").resolve()
    folder = trials / trial
    if folder.exists() and not folder.resolve().is_relative_to(trials):
        raise UserError(f"{run}: trial {trial!r} points outside the run's trials/ folder", path="--trial")
    return folder


def read_leaderboard(path: Path) -> list[dict[str, Any]]:
    """The run's leaderboard rows, numbers parsed (the search's own reader)."""
    from composer.runs import RunDir

    return RunDir(path).read_leaderboard()


def _trial_key(row: dict[str, Any]) -> str:
    """The row's trial id as its folder name under trials/ (trial 0 included)."""
    for key in ("trial_id", "trial", "id", "number"):
        if row.get(key) not in (None, ""):
            return str(row[key])
    return ""


def best_trial_id(path: Path) -> str | None:
    """The run's best trial (named by its summary.json), when its trial directory exists."""
    from composer.runs import RunDir

    best = RunDir(path).best_trial()
    if best is None:
        return None
    best = check_trial_name(best, field="summary.json best.trial")
    return best if (path / "trials" / best).is_dir() else None


def leaderboard_row(path: Path, trial: str) -> dict[str, Any]:
    for row in read_leaderboard(path):
        if _trial_key(row) == trial:
            return {k: v for k, v in row.items() if k and v not in (None, "")}
    return {}
