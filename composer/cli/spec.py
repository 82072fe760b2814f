"""`composer validate SPEC` and `composer show SPEC`."""

from __future__ import annotations

import argparse

from composer.canonical_form import arch_id, stripe, stripe_legend, stripe_symbols
from composer.cli.common import check_context, print_json
from composer.costs import ModelCost, model_cost
from composer.errors import UserError
from composer.units import human
from composer.zoo import COUNTINGS, counted, is_zoo_ref, resolve_spec, zoo_member


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check an architecture spec", description="Check an architecture "
                       "spec (YAML): exit 0 and print its arch_id if valid, else one error naming the field.")
    p.add_argument("spec", help="architecture YAML file, or zoo:NAME (see `composer zoo`)")
    p.set_defaults(func=run_validate)

    p = sub.add_parser("show", help="show an architecture's layers and costs",
                       description="A table per layer (primitive, params, FLOPs/token, state bytes), totals, "
                       "arch_id and a one-line stripe view.")
    p.add_argument("spec", help="architecture YAML file, or zoo:NAME (see `composer zoo`)")
    p.add_argument("--count", choices=COUNTINGS, default=None,
                   help="also count the parameters by this convention: all, no_input_embedding (an untied model's "
                   "input embedding left out) or non_embedding (embedding and untied LM head left out); a zoo member "
                   "defaults to its vendor's convention and is set beside the published figures")
    p.add_argument("--context", type=int, default=None, metavar="L",
                   help="context length for FLOPs and state (default: the spec's max_seq_len)")
    p.add_argument("--dtype-bytes", type=int, default=2, help="bytes per state value (default 2: bf16)")
    p.add_argument("--json", action="store_true", help="print the same facts as JSON")
    p.set_defaults(func=run_show)


def run_validate(args: argparse.Namespace) -> int:
    spec = resolve_spec(args.spec)
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
    spec = resolve_spec(args.spec)
    cost = model_cost(spec, seq_len=args.context, dtype_bytes=args.dtype_bytes)
    counts = counted_facts(args.spec, spec, cost, args.count)
    if args.json:
        print_json({**show_facts(spec, cost), **counts})
    else:
        print(format_table(spec, cost))
        if counts:
            print(format_counts(counts))
    return 0


def counted_facts(ref: str, spec, cost: ModelCost, counting: str | None) -> dict:
    """The counts by the chosen convention(s) and, for a zoo member, the published figures beside them."""
    member = zoo_member(ref) if is_zoo_ref(ref) else None
    if member is None and counting is None:
        return {}
    facts: dict = {"counted": {}}
    wanted = [(counting or member.entry.counting, False), (counting or member.entry.active_counting, True)] \
        if member is not None else [(counting, False), (counting, True)]
    for convention, active in wanted:
        key = "active_params" if active else "params"
        facts["counted"][key] = {"counting": convention, "value": counted(spec, cost, convention, active)}
    if member is not None:
        facts["published"] = {"title": member.entry.title, "source": member.entry.source,
                              "params": member.entry.params, "counting": member.entry.counting,
                              "active_params": member.entry.active_params,
                              "active_counting": member.entry.active_counting, "missing": list(member.entry.missing),
                              "problems": member.check(cost)}
    return facts


def format_counts(facts: dict) -> str:
    if not facts:
        return ""
    lines = []
    published = facts.get("published")
    for key, label in (("params", "params"), ("active_params", "active")):
        fact = facts["counted"][key]
        line = f"{label + ' (' + fact['counting'] + ')':<28}{fact['value']:,}"
        stated = published and published[key]
        if stated:
            line += f"  (published: {stated}, {published['counting' if key == 'params' else 'active_counting']})"
        lines.append(line)
    if published:
        lines.append(f"source      {published['source']}")
        lines += [f"not expressible: {gap}" for gap in published["missing"]]
        lines += [f"does not hold: {problem}" for problem in published["problems"]]
    return "\n".join(lines)
