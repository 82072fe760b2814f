"""Write an export bundle: everything needed to use a discovered architecture without Composer.

    DIR/spec.yaml                 the architecture (Composer reads it back with `load_spec`)
    DIR/config.json               the architecture as JSON, its costs and id, and Hugging Face `auto_map`
    DIR/model.safetensors         the weights (when the source has them, or with `init_weights=True`)
    DIR/modeling.py               standalone PyTorch source (torch + stdlib only): `load_model(DIR)`
    DIR/configuration_composer.py, DIR/modeling_composer.py   the Hugging Face wrapper (trust_remote_code)
    DIR/README.md                 the model card: stripe, costs, the metrics it was selected on
    DIR/model.pt2                 with `torch_export=True`: `torch.export` program for a fixed shape

A spec with no weights exports without `model.safetensors` unless `init_weights=True` asks for freshly
initialised ones (seeded): a bundle never pretends untrained weights are trained ones. The bundle is
written to a temporary folder next to DIR and renamed into place, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from composer import dump_spec
from composer.costs import model_cost
from composer.errors import UserError
from composer.export import hf
from composer.export.sources import Resolved, read_weights_file, resolve_source
from composer.export.standalone import generate_modeling_source
from composer.export.torch_export import export_program
from composer.export.weights import load_weights, unique_state_dict, write_safetensors
from composer.graph import arch_id, stripe
from composer.model import HybridLM
from composer.spec import ArchSpec

FORMAT_VERSION = 1


@dataclass
class ExportResult:
    out: Path
    files: list[str]
    has_weights: bool
    torch_export: str | None  # None when not asked; "ok" or the reason it failed


def export(source: str | Path | ArchSpec | HybridLM, out: str | Path, *, trial: str | None = None,
           pick: str = "best", init_weights: bool = False, seed: int = 0, torch_export: bool = False,
           export_seq_len: int = 16, overwrite: bool = False, metrics: dict[str, Any] | None = None,
           progress=print) -> ExportResult:
    """Export `source` (a spec, a HybridLM, a spec file, a checkpoint or a run directory) to `out`."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: exists and is not empty (pass --force to replace it)")
    model, resolved = _model_and_source(source, trial, pick, init_weights, seed)
    if metrics:
        resolved.metrics = {**resolved.metrics, **metrics}
    spec = resolved.spec
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        progress(f"exporting {spec.name or 'architecture'} [{stripe(spec)}] from {resolved.origin}")
        (staging / "spec.yaml").write_text(dump_spec(spec))
        has_weights = model is not None
        if has_weights:
            write_safetensors(str(staging / "model.safetensors"), unique_state_dict(model),
                              {"format": "pt", "arch_id": arch_id(spec)})
        progress("writing modeling.py (standalone source)")
        (staging / "modeling.py").write_text(generate_modeling_source(spec))
        for name, text in hf.hf_files().items():
            (staging / name).write_text(text)
        status = None
        if torch_export:
            progress(f"torch.export for input shape [1, {export_seq_len}]")
            status = export_program(model or HybridLM(spec), export_seq_len, staging / "model.pt2")
            progress(f"torch.export: {status}")
        (staging / "config.json").write_text(json.dumps(config_json(spec, resolved.metrics), indent=2) + "\n")
        (staging / "README.md").write_text(model_card(spec, resolved, has_weights, status))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = sorted(p.name for p in out.iterdir())
    progress(f"wrote {out}: {', '.join(files)}")
    return ExportResult(out, files, has_weights, status)


def _model_and_source(source: Any, trial: str | None, pick: str, init_weights: bool,
                      seed: int) -> tuple[HybridLM | None, Resolved]:
    if isinstance(source, HybridLM):
        return source, Resolved(source.spec, origin="a model in memory")
    resolved = Resolved(source, origin="a spec in memory") if isinstance(source, ArchSpec) else resolve_source(
        source, trial, pick)
    if resolved.weights is not None:
        model = HybridLM(resolved.spec)
        try:
            load_weights(model, read_weights_file(resolved.weights))
        except (ValueError, RuntimeError) as e:
            raise UserError(f"{resolved.weights}: weights do not fit the architecture ({e})") from None
        return model, resolved
    if init_weights:
        torch.manual_seed(seed)
        return HybridLM(resolved.spec), resolved
    return None, resolved


def config_json(spec: ArchSpec, metrics: dict[str, Any]) -> dict[str, Any]:
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
        "tie_word_embeddings": spec.tie_embeddings,
        "torch_dtype": "float32",
        "costs": {"params": cost.params, "non_embedding_params": cost.non_embedding_params,
                  "active_params": cost.active_params, "flops_per_token": cost.flops_per_token,
                  "state_bytes_fp32": cost.state_bytes, "at_seq_len": spec.max_seq_len},
        "metrics": metrics,
    }


def model_card(spec: ArchSpec, resolved: Resolved, has_weights: bool, torch_export: str | None) -> str:
    cost = model_cost(spec, spec.max_seq_len, dtype_bytes=4)
    title = (spec.name or "Composer architecture").replace("\n", " ")
    lines = [f"# {title}", ""]
    if spec.description:
        lines += [spec.description, ""]
    lines += [
        f"Exported by Composer from {resolved.origin}.", "",
        f"- architecture: `{stripe(spec)}`",
        f"- arch_id: `{arch_id(spec)}`",
        f"- d_model {spec.d_model}, vocabulary {spec.vocab_size}, max_seq_len {spec.max_seq_len}",
        f"- weights: {'model.safetensors' if has_weights else 'none (architecture only; untrained)'}",
        "", "## Costs", "", "| quantity | value |", "| --- | --- |",
        f"| parameters | {cost.params:,} |",
        f"| non-embedding parameters | {cost.non_embedding_params:,} |",
        f"| active parameters per token | {cost.active_params:,} |",
        f"| forward FLOPs per token (at {spec.max_seq_len}) | {cost.flops_per_token:,.0f} |",
        f"| decoding state per sequence (fp32, at {spec.max_seq_len}) | {cost.state_bytes:,} bytes |", "",
    ]
    if resolved.metrics:
        lines += ["## Metrics it was selected on", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in resolved.metrics.items()]
        lines.append("")
    lines += [
        "## Use", "", "Standalone (only PyTorch needed):", "", "```python",
        "from modeling import load_model, build_model", "import torch",
        "model = load_model('.')" if has_weights else "model = build_model()  # no weights in this bundle",
        "tokens = torch.tensor([[1, 2, 3]])", "logits = model(tokens)",
        "print(model.generate(tokens, 10, temperature=0))", "```", "",
        "With Composer: `composer.export.load(DIR)`. With Hugging Face transformers:", "", "```python",
        "from transformers import AutoModelForCausalLM",
        "model = AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)", "```", "",
    ]
    if torch_export is not None:
        lines += ["## torch.export", "", f"model.pt2: {torch_export}", ""]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")
