"""`composer bench SPEC`: measured inference costs of an architecture, without training (composer/measure)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from composer.cli.common import print_json
from composer.errors import UserError

DEFAULT_CONTEXTS = (1024, 8192, 32768)
FLAGS = ("device", "threads", "batch", "dtype", "warmup", "repeats", "prefill_repeats", "decode_tokens",
         "prefill_chunk", "timeout_s")


def register(sub: argparse._SubParsersAction) -> None:
    from composer.measure import MeasureSettings

    defaults = MeasureSettings()
    p = sub.add_parser(
        "bench", help="measure prefill and decode speed, peak memory and state bytes of an architecture",
        description="Measure, without training, an architecture's own inference path (the streaming state: KV "
                    "caches and recurrent states, as generate() and the exported modeling.py run it) at each "
                    "context length: prefill tokens/s, decode ms/token after a prompt of that length, peak memory "
                    "(RSS on CPU, torch.cuda.max_memory_allocated on CUDA) and the state's bytes. Each context is "
                    "measured in its own process after warm-up; timed numbers are the median over repeats with "
                    "their spread. SPEC is a spec file, a checkpoint or bundle folder, or a search run (its best "
                    "trial).")
    p.add_argument("spec", help="spec file, checkpoint or bundle folder, or search run directory")
    p.add_argument("--context", nargs="+", default=None, metavar="L",
                   help="context lengths (8192 or 8K; default 1K 8K 32K, those within the spec's max_seq_len, "
                        "else max_seq_len itself)")
    p.add_argument("--extend", action="store_true",
                   help="measure contexts beyond the spec's max_seq_len too (the model has no length limit in its "
                        "code, but it does not claim those contexts)")
    p.add_argument("--device", default=defaults.device, help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--threads", default=defaults.threads, metavar="N",
                   help=f"torch CPU threads of the measuring process (default {defaults.threads})")
    p.add_argument("--batch", default=defaults.batch, metavar="B", help="sequences at once (default 1)")
    p.add_argument("--dtype", default=defaults.dtype, help="float32, bfloat16 or float16 (default float32)")
    p.add_argument("--warmup", default=defaults.warmup, metavar="N", help=f"warm-up runs (default {defaults.warmup})")
    p.add_argument("--repeats", default=defaults.repeats, metavar="N",
                   help=f"timed decoding runs (default {defaults.repeats})")
    p.add_argument("--prefill-repeats", default=defaults.prefill_repeats, metavar="N",
                   help=f"timed prefills (default {defaults.prefill_repeats})")
    p.add_argument("--decode-tokens", default=defaults.decode_tokens, metavar="N",
                   help=f"tokens per decoding run (default {defaults.decode_tokens})")
    p.add_argument("--prefill-chunk", default=defaults.prefill_chunk, metavar="N",
                   help=f"prompt tokens fed at once (default {defaults.prefill_chunk})")
    p.add_argument("--timeout", dest="timeout_s", default=defaults.timeout_s, metavar="S",
                   help=f"seconds one context may take (default {defaults.timeout_s:g})")
    p.add_argument("--json", action="store_true", help="print the measurements as JSON")
    p.set_defaults(func=run)


def flag(name: str) -> str:
    return "--timeout" if name == "timeout_s" else "--" + name.replace("_", "-")


def settings_of(args: argparse.Namespace) -> Any:
    """MeasureSettings from the flags, each checked as declared; an error names the flag."""
    from composer.measure import MeasureSettings, check_device
    from composer.reader import Reader

    values = {name: getattr(args, name) for name in FLAGS}     # text: the settings' reader takes numbers as text
    try:
        settings = Reader().read(MeasureSettings, values)
    except UserError as e:
        raise UserError(e.message, path=flag(e.path or "")) from None
    return check_device(settings, "--device")


def contexts_of(args: argparse.Namespace, max_seq_len: int) -> list[int]:
    from composer.measure import check_within, parse_context

    if args.context is None:
        chosen = [c for c in DEFAULT_CONTEXTS if args.extend or c <= max_seq_len]
        return chosen or [max_seq_len]
    contexts = [parse_context(text, "--context") for text in args.context]
    if not args.extend:
        for context in contexts:
            check_within(context, max_seq_len, "--context", "give --extend to measure it anyway, or a shorter "
                                                            "--context")
    return list(dict.fromkeys(contexts))


def run(args: argparse.Namespace) -> int:
    from composer.canonical_form import arch_id, stripe
    from composer.export.sources import resolve_source
    from composer.measure import measure

    settings = settings_of(args)
    spec = resolve_source(args.spec).spec
    contexts = contexts_of(args, spec.max_seq_len)
    rows = measure(spec, contexts, settings)
    if args.json:
        print_json({"arch_id": arch_id(spec), "stripe": stripe(spec), "name": spec.name,
                    "max_seq_len": spec.max_seq_len, "settings": dataclasses.asdict(settings), "measurements": rows})
    else:
        print(format_table(spec, rows, settings))
    return 0


def format_table(spec: Any, rows: list[dict[str, Any]], settings: Any) -> str:
    from composer.canonical_form import arch_id, stripe
    from composer.units import human

    first = rows[0]
    head = (f"{spec.name or 'architecture'} [{stripe(spec)}] arch_id {arch_id(spec)}\n"
            f"measured on {settings.device} ({first['device_name']}), {settings.threads} thread(s), batch "
            f"{settings.batch}, {settings.dtype}, torch {first['torch']}; timed numbers: median (min-max) of "
            f"{settings.prefill_repeats} prefills and {settings.repeats} x {settings.decode_tokens} decoded tokens")
    table = [("context", "prefill tokens/s", "decode ms/token", f"peak memory ({first['memory_kind']})",
              "state bytes")]
    for row in rows:
        rate, step = row["prefill_tokens_per_s"], row["decode_ms_per_token"]
        table.append((f"{row['context']:,}", f"{human(rate['median'])} ({human(rate['min'])}-{human(rate['max'])})",
                      f"{step['median']:.3g} ({step['min']:.3g}-{step['max']:.3g})",
                      bytes_text(row["peak_memory_bytes"]), bytes_text(row["state_bytes"])))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return head + "\n\n" + "\n".join(lines)


def bytes_text(n: float) -> str:
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{int(n):,} B"
