"""`composer validate SPEC` and `composer show SPEC`."""

from __future__ import annotations

import argparse
from pathlib import Path

from composer.canonical_form import arch_id, stripe, stripe_legend, stripe_symbols
from composer.cli.common import check_context, print_json
from composer.costs import ModelCost, model_cost
from composer.errors import UserError
from composer.spec_parse import load_spec
from composer.units import human


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check an architecture spec", description="Check an architecture "
                       "spec (YAML): exit 0 and print its arch_id if valid, else one error naming the field.")
    p.add_argument("spec", help="architecture YAML file")
    p.set_defaults(func=run_validate)

    p = sub.add_parser("show", help="show an architecture's layers and costs",
                       description="A table per layer (primitive, params, FLOPs/token, state bytes), totals, "
                       "arch_id and a one-line stripe view.")
    p.add_argument("spec", help="architecture YAML file")
    p.add_argument("--context", type=int, default=None, metavar="L",
                   help="context length for FLOPs and state (default: the spec's max_seq_len)")
    p.add_argument("--dtype-bytes", type=int, default=2, help="bytes per state value (default 2: bf16)")
    p.add_argument("--json", action="store_true", help="print the same facts as JSON")
    p.set_defaults(func=run_show)


def run_validate(args: argparse.Namespace) -> int:
    spec = load_spec(Path(args.spec))
    print(f"ok: {args.spec} is valid (arch_id {arch_id(spec)}): {stripe(spec)}")
    return 0


def show_facts(spec, cost: ModelCost) -> dict:
    return {
        "arch_id": arch_id(spec),
        "name": spec.name,
        "stripe": stripe(spec),
        "legend": stripe_symbols(spec),
        **cost.as_dict(),
        "layers": [
            {"path": r.path, "op": r.op, "params": r.cost.params, "active_params": r.cost.active,
             "flops_per_token": r.cost.flops_per_token, "state_bytes": r.cost.state_bytes, "shared": r.shared}
            for r in cost.layers
        ],
    }


def format_table(spec, cost: ModelCost) -> str:
    rows = [("layer", "primitive", "params", "FLOPs/token", "state bytes")]
    for r in cost.layers:
        name = "  " * r.depth + r.op + (" (shared)" if r.shared else "")
        rows.append((r.path, name, human(r.cost.params), human(r.cost.flops_per_token),
                     human(r.cost.state_bytes)))
    rows.append(("total", "", human(cost.params), human(cost.flops_per_token), human(cost.state_bytes)))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = []
    for j, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if j == 0 or j == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths))
    extra = [
        f"arch_id     {arch_id(spec)}",
        f"stripe      {stripe(spec)}",
        f"legend      {stripe_legend(spec)}",
        f"params      {cost.params:,} total, {cost.non_embedding_params:,} non-embedding, "
        f"{cost.active_params:,} active",
        f"FLOPs/token {human(cost.flops_per_token)} forward, {human(cost.train_flops_per_token)} training "
        f"(context {cost.seq_len})",
        f"state       {cost.state_bytes:,} bytes per sequence at context {cost.seq_len} "
        f"({cost.dtype_bytes} bytes/value)",
    ]
    return "\n".join(lines + [""] + extra)


def run_show(args: argparse.Namespace) -> int:
    check_context(args.context)
    if not 1 <= args.dtype_bytes <= 8:
        raise UserError(f"expected 1 to 8 bytes per value, got {args.dtype_bytes}", path="--dtype-bytes")
    spec = load_spec(Path(args.spec))
    cost = model_cost(spec, seq_len=args.context, dtype_bytes=args.dtype_bytes)
    if args.json:
        print_json(show_facts(spec, cost))
    else:
        print(format_table(spec, cost))
    return 0
