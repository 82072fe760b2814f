"""`composer export SOURCE --out DIR`: a bundle with spec, weights, tokenizer, model card and standalone modeling.py."""

from __future__ import annotations

import argparse

from composer.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export an architecture (spec, checkpoint or search run) as a PyTorch bundle",
        description="Write DIR with spec.yaml, config.json, model.safetensors (when there are weights), "
                    "tokenizer.json + tokenizer_config.json, README.md (model card), modeling.py (standalone: "
                    "needs only torch) and the Hugging Face wrapper files. SOURCE is a spec file, a trained "
                    "checkpoint directory, or a search run directory (runs/<name>: its best trial unless --trial "
                    "or --consensus).")
    parser.add_argument("source", help="spec file, checkpoint directory, or search run directory")
    parser.add_argument("--out", required=True, help="bundle directory to write")
    parser.add_argument("--trial", help="a search run's trial number or name to export (default: the best)")
    parser.add_argument("--consensus", action="store_true", help="export a search run's consensus architecture")
    parser.add_argument("--init-weights", action="store_true",
                        help="for a source without weights, write freshly initialised (untrained) weights")
    parser.add_argument("--seed", type=int, default=0, help="seed for --init-weights (default 0)")
    parser.add_argument("--torch-export", action="store_true",
                        help="also write model.pt2 (torch.export for a fixed input shape; not possible with moe)")
    parser.add_argument("--seq-len", type=int, default=16, help="sequence length for --torch-export")
    parser.add_argument("--tokenizer", default=None, metavar="TOK",
                        help="the bundle's tokenizer: byte, ids, or a tokenizer.json (or a folder holding one); "
                             "default: the one the source was trained with")
    parser.add_argument("--measure", nargs="+", default=None, metavar="L",
                        help="measure the architecture's inference cost at these context lengths (8192 or 8K; "
                             "composer bench) and state it on the model card, beside what the source's search run "
                             "measured")
    parser.add_argument("--measure-device", default="cpu", help="the device --measure measures on (default cpu)")
    parser.add_argument("--measure-threads", default=1, metavar="N",
                        help="torch CPU threads --measure measures with (default 1)")
    parser.add_argument("--force", action="store_true",
                        help="replace DIR when it is an existing bundle (never another folder)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from composer.export import export

    if args.consensus and args.trial is not None:
        raise UserError("give either --trial or --consensus, not both")
    if args.seq_len < 1:
        raise UserError(f"--seq-len must be >= 1, got {args.seq_len}")
    pick = "consensus" if args.consensus else "best"
    result = export(args.source, args.out, trial=args.trial, pick=pick, init_weights=args.init_weights,
                    seed=args.seed, torch_export=args.torch_export, export_seq_len=args.seq_len, overwrite=args.force,
                    tokenizer=args.tokenizer, measurements=measured(args, pick) if args.measure else None)
    if not result.has_weights:
        print("note: no weights in this source; the bundle holds the architecture only "
              "(--init-weights writes untrained weights)")
    return 0 if result.torch_export in (None, "ok") else 1


def measured(args: argparse.Namespace, pick: str) -> list[dict]:
    """`--measure`: the source's run measurements and these, each context in its own process (composer/measure)."""
    from pathlib import Path

    from composer.export.bundle import check_target, run_measurements
    from composer.export.sources import resolve_source
    from composer.measure import MeasureSettings, check_device, check_within, measure, parse_context
    from composer.reader import Reader

    check_target(Path(args.out), args.force, Path(args.source))        # before minutes of measuring
    contexts = list(dict.fromkeys(parse_context(text, "--measure") for text in args.measure))
    try:
        settings = Reader().read(MeasureSettings, {"device": args.measure_device, "threads": args.measure_threads})
    except UserError as e:
        raise UserError(e.message, path=f"--measure-{e.path}") from None
    settings = check_device(settings, "--measure-device")
    resolved = resolve_source(args.source, args.trial, pick)
    for context in contexts:
        check_within(context, resolved.spec.max_seq_len, "--measure", "measure at a shorter context")
    print(f"measuring at {', '.join(f'{c:,}' for c in contexts)} tokens on {settings.device}")
    return run_measurements(resolved) + measure(resolved.spec, contexts, settings)
