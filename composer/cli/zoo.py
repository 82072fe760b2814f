"""`composer zoo`: the published hybrids shipped as exact specs (search_spaces/zoo/), with their counts and sources."""

from __future__ import annotations

import argparse

from composer.cli.common import print_json
from composer.costs import model_cost
from composer.zoo import ZooMember, counted, zoo_members


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("zoo", help="list the published hybrids shipped as exact specs",
                       description="Every zoo member: its parameters as Composer counts them beside the vendor's "
                       "published figure (in the vendor's counting convention), its source, and what Composer cannot "
                       "express of it. Use a member as `zoo:NAME` wherever a spec is taken (`composer show "
                       "zoo:jamba`, `composer confirm RUN --baseline zoo:samba`).")
    p.add_argument("--json", action="store_true", help="print the same facts as JSON")
    p.set_defaults(func=run_zoo)


def member_facts(member: ZooMember) -> dict:
    facts = {"name": member.name, "ref": f"zoo:{member.name}", "title": member.entry.title,
             "source": member.entry.source, "expressible": member.entry.expressible,
             "missing": list(member.entry.missing), "note": member.entry.note}
    if not member.entry.expressible:
        return {**facts, "problems": []}
    cost = model_cost(member.spec, seq_len=min(member.spec.max_seq_len, 4096))
    facts.update(file=str(member.file), problems=member.check(cost))
    for key, figure, counting, active in (("params", member.params, member.entry.counting, False),
                                          ("active_params", member.active_params, member.entry.active_counting,
                                           True)):
        if figure is None and active and cost.active_params == cost.params:
            continue
        got = counted(member.spec, cost, counting, active)
        facts[key] = {"counted": got, "counting": counting, "published": None if figure is None else figure.text,
                      "error": None if figure is None else figure.error(got)}
    return facts


def run_zoo(args: argparse.Namespace) -> int:
    facts = [member_facts(m) for m in zoo_members()]
    if args.json:
        print_json(facts)
        return 0
    rows = [("member", "model", "params (counted / published)", "active (counted / published)")]
    for f in facts:
        if not f["expressible"]:
            rows.append((f["ref"], f["title"], "not expressible", ""))
            continue
        rows.append((f["ref"], f["title"], _pair(f.get("params")), _pair(f.get("active_params"))))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for j, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if j == 0:
            print("  ".join("-" * w for w in widths))
    print()
    for f in facts:
        print(f"{f['ref']}: {f['source']}")
        for gap in f["missing"]:
            print(f"    not expressible: {gap}")
        if f["note"]:
            print(f"    note: {f['note']}")
        for problem in f["problems"]:
            print(f"    does not hold: {problem}")
    return 0


def _pair(fact: dict | None) -> str:
    if fact is None:
        return "-"
    published = fact["published"] or "not published"
    error = "" if fact["error"] is None else f" ({fact['error']:+.2%})"
    convention = "" if fact["counting"] == "all" else f" [{fact['counting'].replace('_', ' ')}]"
    return f"{billions(fact['counted'])} / {published}{error}{convention}"


def billions(count: int) -> str:
    """A count the way vendors state them: 51.57B, 354.5M."""
    return f"{count / 1e9:.2f}B" if count >= 1e9 else f"{count / 1e6:.1f}M"
