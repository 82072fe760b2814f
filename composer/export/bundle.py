"""Write an export bundle: everything needed to use a discovered architecture without Composer.

    DIR/spec.yaml                 the architecture (Composer reads it back with `load_spec`)
    DIR/config.json               the architecture as JSON, its costs and id, the tokenizer, provenance
                                  (versions, git commit, device, host) and Hugging Face `auto_map`
    DIR/model.safetensors         the weights (when the source has them, or with `init_weights=True`)
    DIR/tokenizer.json, DIR/tokenizer_config.json (+ special_tokens_map.json)   the tokenizer (tokenizer.py), with
                                  an end-of-text token
    DIR/generation_config.json    what `generate` (and lm-eval's `--model hf`) stop and pad with: the eos id
    DIR/modeling.py               standalone PyTorch source (torch + stdlib only): `load_model(DIR)`
    DIR/configuration_composer.py, DIR/modeling_composer.py   the Hugging Face wrapper (trust_remote_code)
    DIR/README.md                 the model card (card.py): Hugging Face metadata, stripe, costs, the measured
                                  inference costs with their device (composer/measure), metrics
    DIR/model.pt2                 with `torch_export=True`: `torch.export` program for a fixed shape

A spec with no weights exports without `model.safetensors` unless `init_weights=True` asks for freshly
initialised ones (seeded): a bundle never pretends untrained weights are trained ones.

Where it is written: the bundle is built in a temporary folder next to DIR and renamed into place, so a
failure leaves nothing half-written. Its files get the modes `open()` gives under the umask (0644 and a 0755
folder under the usual 022), `model.safetensors` (which the safetensors library writes 0600) and the folder
(made 0700 by mkdtemp) included: a bundle is for others to read. An existing, non-empty DIR is replaced only with
`overwrite` (--force) and only when it is itself a bundle: never the working directory or a folder above it, a
search run, or the source being exported. The old bundle is renamed aside before the new one is renamed in, and restored
if that fails.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from composer.atomic import file_mode, folder_mode
from composer.canonical_form import arch_id, stripe
from composer.costs import model_cost
from composer.errors import UserError
from composer.export import hf
from composer.export import tokenizer as tokenizers
from composer.export.card import CardInputs, model_card
from composer.export.sources import Resolved, resolve_source
from composer.export.standalone import generate_modeling_source
from composer.export.torch_export import export_program
from composer.export.weights_io import load_weights_file, save_weights
from composer.model import HybridLM
from composer.provenance import provenance
from composer.spec import ArchSpec
from composer.spec_parse import dump_spec

FORMAT_VERSION = 1
RUN_MARKERS = ("space.yaml", "study.db", "trials", "leaderboard.csv", "summary.json")


@dataclass
class ExportResult:
    out: Path
    files: list[str]
    has_weights: bool
    torch_export: str | None  # None when not asked; "ok" or the reason it failed
    tokenizer: str = ""       # the kind of tokenizer written (byte, ids, bpe, pretrained, ...)


def export(source: str | Path | ArchSpec | HybridLM, out: str | Path, *, trial: str | None = None,
           pick: str = "best", init_weights: bool = False, seed: int = 0, torch_export: bool = False,
           export_seq_len: int = 16, overwrite: bool = False, metrics: dict[str, Any] | None = None,
           tokenizer: Any = None, measurements: list[dict[str, Any]] | None = None,
           progress=print) -> ExportResult:
    """Export `source` (a spec, a HybridLM, a spec file, a checkpoint or a run directory) to `out`.

    `measurements` (composer.measure) go on the model card with their device; by default those the source's search
    run measured for this architecture (`<run>/measure/`), if any.

    `tokenizer`: a task's tokenizer object, a `tokenizers.Tokenizer`, a transformers tokenizer, "byte", "ids"
    or a tokenizer.json path; by default the source's own (see composer/export/tokenizer.py)."""
    out = Path(out)
    source_path = Path(source) if isinstance(source, (str, os.PathLike)) else None
    check_target(out, overwrite, source_path)
    model, resolved = _model_and_source(source, trial, pick, init_weights, seed)
    if metrics:
        resolved.metrics = {**resolved.metrics, **metrics}
    spec = resolved.spec
    if measurements is None:
        measurements = run_measurements(resolved)
    found = None
    if tokenizer is None:
        found = (tokenizers.from_file(resolved.tokenizer_file) if resolved.tokenizer_file is not None else
                 tokenizers.task_tokenizer(resolved.task, spec.vocab_size) if resolved.task else None)
    chosen, note = tokenizers.choose(tokenizer, found, spec.vocab_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        progress(f"exporting {spec.name or 'architecture'} [{stripe(spec)}] from {resolved.origin}")
        (staging / "spec.yaml").write_text(dump_spec(spec), encoding="utf-8")
        has_weights = model is not None
        if has_weights:
            save_weights(staging / "model.safetensors", model, {"format": "pt", "arch_id": arch_id(spec)})
        progress(f"tokenizer: {chosen.kind} ({chosen.vocab_size} tokens)" + (f"; note: {note}" if note else ""))
        tokenizers.write(chosen, staging, spec.max_seq_len)
        special_ids = {"bos_token_id": None, "eos_token_id": chosen.eos_id, "pad_token_id": chosen.eos_id}
        (staging / GENERATION_CONFIG).write_text(json.dumps(generation_config(special_ids), indent=2) + "\n",
                                                 encoding="utf-8")
        progress("writing modeling.py (standalone source)")
        (staging / "modeling.py").write_text(generate_modeling_source(spec), encoding="utf-8")
        for name, text in hf.hf_files().items():
            (staging / name).write_text(text, encoding="utf-8")
        status = None
        if torch_export:
            progress(f"torch.export for input shape [1, {export_seq_len}]")
            status = export_program(model or HybridLM(spec), export_seq_len, staging / "model.pt2")
            progress(f"torch.export: {status}")
        made_by = provenance()
        config = {**config_json(spec, resolved.metrics, tokenizer=chosen.describe(), task=resolved.task,
                                made_by=made_by), **special_ids}
        if measurements:
            config["measured"] = measurements
        (staging / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n", encoding="utf-8")
        card = CardInputs(spec, resolved.origin, resolved.metrics, resolved.task, has_weights, chosen, note, status,
                          made_by, measurements)
        (staging / "README.md").write_text(model_card(card), encoding="utf-8")
        readable(staging)
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = sorted(p.name for p in out.iterdir())
    progress(f"wrote {out}: {', '.join(files)}")
    return ExportResult(out, files, has_weights, status, chosen.kind)


GENERATION_CONFIG = "generation_config.json"


def generation_config(special_ids: dict[str, int | None]) -> dict[str, Any]:
    """generation_config.json: the special token ids `generate` uses (greedy by default, as transformers)."""
    return {key: value for key, value in special_ids.items() if value is not None}


def readable(folder: Path) -> None:
    """Give `folder` and the files in it the modes a new folder and file get under the umask."""
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(file_mode())
    folder.chmod(folder_mode())


def run_measurements(resolved: Resolved) -> list[dict[str, Any]]:
    """What the search run behind `resolved` (the run itself, or one of its trials) measured of its architecture."""
    from composer.measure import MeasureCache
    from composer.measure.cache import FOLDER

    source = resolved.source
    if source is None or not source.is_dir():
        return []
    run = source if (source / FOLDER).is_dir() else source.parent.parent if source.parent.name == "trials" else None
    return MeasureCache(run / FOLDER).of_arch(arch_id(resolved.spec)) if run is not None else []


def check_target(out: Path, overwrite: bool, source: Path | None = None) -> None:
    """Refuse a DIR that must not be written or replaced (see the module docstring), before any work."""
    if any(not part.strip() for part in out.parts):
        raise UserError(f"{str(out)!r}: a folder name of blank characters only; give a real name", path="--out")
    if out.is_symlink():
        raise UserError(f"{out}: is a symbolic link; give the folder itself", path="--out")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder", path="--out")
    target = out.resolve()
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise UserError(f"{out}: is the working directory or a folder above it; a bundle goes in a folder of its own",
                        path="--out")
    if source is not None:
        origin = source.resolve()
        if target == origin or target in origin.parents:
            raise UserError(f"{out}: holds the source being exported; write the bundle elsewhere", path="--out")
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise UserError(f"{out}: exists and is not empty (pass --force to replace a bundle)", path="--out")
    if any((target / marker).exists() for marker in RUN_MARKERS):
        raise UserError(f"{out}: is a search run folder; --force replaces only a bundle", path="--out")
    if not is_bundle(target):
        raise UserError(f"{out}: is not a Composer bundle (no config.json with composer_format); --force replaces "
                        "only a bundle", path="--out")


def is_bundle(folder: Path) -> bool:
    """A folder Composer exported: spec.yaml, and a config.json naming the bundle format."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "composer_format" in config and (folder / "spec.yaml").is_file()


def _move_into_place(staging: Path, out: Path) -> None:
    """Rename `staging` to `out`; an existing `out` is renamed aside first and restored on failure."""
    if not out.exists() or not any(out.iterdir()):
        os.replace(staging, out)   # onto nothing, or onto an empty folder
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    os.replace(out, aside)
    try:
        os.replace(staging, out)
    except BaseException:
        os.replace(aside, out)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _model_and_source(source: Any, trial: str | None, pick: str, init_weights: bool,
                      seed: int) -> tuple[HybridLM | None, Resolved]:
    if isinstance(source, HybridLM):
        return source, Resolved(source.spec, origin="a model in memory")
    resolved = Resolved(source, origin="a spec in memory") if isinstance(source, ArchSpec) else resolve_source(
        source, trial, pick)
    if resolved.weights is not None:
        model = HybridLM(resolved.spec)
        load_weights_file(model, resolved.weights)
        return model, resolved
    if init_weights:
        torch.manual_seed(seed)
        return HybridLM(resolved.spec), resolved
    return None, resolved


def config_json(spec: ArchSpec, metrics: dict[str, Any], tokenizer: dict[str, Any] | None = None,
                task: dict[str, Any] | None = None, made_by: dict[str, Any] | None = None) -> dict[str, Any]:
    cost = model_cost(spec, spec.max_seq_len, dtype_bytes=4)
    return {
        "model_type": "composer",
        "architectures": ["ComposerForCausalLM"],
        "auto_map": hf.auto_map(),
        "composer_format": FORMAT_VERSION,
        "arch_id": arch_id(spec),
        "stripe": stripe(spec),
        "architecture": spec.to_dict(),
        "vocab_size": spec.vocab_size,
        "hidden_size": spec.d_model,
        "max_position_embeddings": spec.max_seq_len,
        "tie_word_embeddings": spec.tie_embeddings,
        "torch_dtype": "float32",
        "costs": {"params": cost.params, "non_embedding_params": cost.non_embedding_params,
                  "active_params": cost.active_params, "flops_per_token": cost.flops_per_token,
                  "state_bytes_fp32": cost.state_bytes, "at_seq_len": spec.max_seq_len},
        "metrics": metrics,
        "tokenizer": tokenizer,
        "task": task,
        "provenance": made_by if made_by is not None else provenance(),
    }
