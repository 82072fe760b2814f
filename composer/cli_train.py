"""`composer train SPEC --task mqar [--steps N | --tokens N | --seconds S] ...`: train one candidate."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

import yaml

from composer.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train an architecture on a task within a budget",
                       description="Train SPEC on a task (mqar, text, mad, mad:<task>) within a budget of steps, "
                       "tokens or seconds; print progress and a summary of quality and cost.")
    p.add_argument("spec", help="architecture YAML file")
    p.add_argument("--task", default="mqar", help="task name (default mqar): mqar, text, mad, mad:<task>")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="training steps (default 1000)")
    budget.add_argument("--tokens", type=int, help="training tokens")
    budget.add_argument("--seconds", type=float, help="training wall-clock seconds")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--lrs", type=float, nargs="+", metavar="LR", help="sweep these learning rates, keep the best")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per step (default 32)")
    p.add_argument("--schedule", default="cosine", choices=["cosine", "wsd", "constant"])
    p.add_argument("--eval-every", type=int, default=None, metavar="N", help="evaluate every N steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, metavar="DIR", help="write metrics.jsonl and checkpoints here "
                   "(resumes from a checkpoint found there)")
    p.add_argument("--data", default=None, metavar="PATH", help="text task: a file, directory, glob or hub name")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="task setting, e.g. --set seq_len=128 --set kv_pairs=8 (repeatable)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def parse_settings(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"expected KEY=VALUE, got {item!r}", path="--set")
        out[key.strip()] = yaml.safe_load(value)
    return out


def run(args: argparse.Namespace) -> int:
    from composer.cli import print_json
    from composer.spec_parse import load_spec
    from composer.tasks import get_task
    from composer.train import Budget, train

    spec = load_spec(args.spec)
    params = parse_settings(args.settings)
    if args.data is not None:
        if args.task != "text":
            raise UserError("--data applies to the text task only", path="--data")
        params["data"] = args.data
    task = get_task(args.task, **params)
    if args.seconds is not None:
        budget = Budget(seconds=args.seconds)
    elif args.tokens is not None:
        budget = Budget(tokens=args.tokens)
    else:
        budget = Budget(steps=args.steps if args.steps is not None else 1000)
    show = not args.json
    result = train(spec, task, budget, lr=args.lr, lrs=args.lrs, seed=args.seed, batch_size=args.batch_size,
                   schedule=args.schedule, eval_every=args.eval_every, out_dir=args.out, threads=args.threads,
                   device=args.device, compile=args.compile, on_step=progress_line if show else None)
    if show:
        if sys.stderr.isatty():
            sys.stderr.write("\n")
        print(summary(result))
    else:
        print_json(result.to_dict())
    return 0 if result.status != "diverged" else 1


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
                "flops_per_token", "state_bytes", "lr", "diverged_step")


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
