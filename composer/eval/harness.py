"""Run lm-evaluation-harness tasks on a bundle through its Python API (`lm_eval.simple_evaluate`).

Tasks are lm-eval names (`hellaswag`, a group or a tag), YAML task files, or names defined in the folders
given as `include` (lm-eval's `include_path`). lm-eval's full index of built-in tasks takes seconds to build,
so it is read only when a name is not found among the included folders and files.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from composer.errors import UserError

INSTALL_HINT = "pip install 'hybrid-composer[eval]' (in a checkout: pip install -e '.[eval]')"


def require_lm_eval() -> None:
    """UserError naming the extra to install when lm-evaluation-harness is missing."""
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise UserError(f"composer eval needs lm-evaluation-harness: {INSTALL_HINT}") from None


def evaluate_bundle(bundle: str | Path, tasks: list[str], *, include: list[str | Path] | None = None,
                    num_fewshot: int | None = None, limit: float | None = None, batch_size: int = 16,
                    device: str = "cpu", seed: int = 0, bootstrap_iters: int = 1000) -> dict[str, Any]:
    """lm-eval's results dict (`results`, `versions`, `n-shot`, `config`, ...) for `tasks` on the bundle."""
    require_lm_eval()
    import lm_eval

    from composer.eval.lm import ComposerLM

    if not tasks:
        raise UserError("give at least one task", path="--tasks")
    if limit is not None and limit <= 0:
        raise UserError(f"--limit must be > 0, got {limit}", path="--limit")
    if num_fewshot is not None and num_fewshot < 0:
        raise UserError(f"--num-fewshot must be >= 0, got {num_fewshot}", path="--num-fewshot")
    manager = task_manager(tasks, [Path(p) for p in include or []])
    model = ComposerLM(bundle, device=device, batch_size=batch_size)
    return lm_eval.simple_evaluate(model=model, tasks=list(tasks), task_manager=manager, num_fewshot=num_fewshot,
                                   limit=limit, bootstrap_iters=bootstrap_iters, log_samples=False,
                                   random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                                   fewshot_random_seed=seed)


def task_manager(tasks: list[str], include: list[Path]) -> Any:
    """An lm-eval TaskManager that knows every task asked for; unknown names are a UserError."""
    from lm_eval.tasks import TaskManager

    for folder in include:
        if not folder.is_dir():
            raise UserError(f"{folder}: no such folder of task definitions", path="--include")
    names = [t for t in tasks if not (t.endswith((".yaml", ".yml")) and Path(t).is_file())]
    manager = TaskManager(include_path=[str(p) for p in include] or None, include_defaults=False)
    if all(name in manager.all_tasks for name in names):
        return manager
    manager = TaskManager(include_path=[str(p) for p in include] or None)
    unknown = [name for name in names if name not in manager.all_tasks]
    if unknown:
        hints = [f"{name!r}" + (f" (did you mean {close[0]!r}?)"
                                if (close := difflib.get_close_matches(name, manager.all_tasks, n=1)) else "")
                 for name in unknown]
        raise UserError(f"unknown lm-eval task {', '.join(hints)}; list them with `lm-eval ls tasks`, or give a "
                        "task YAML file or --include DIR", path="--tasks")
    return manager
