"""The bundle's model card (README.md): Hugging Face's YAML front matter (library, tags, datasets, metrics),
then the architecture, its costs, the metrics it was selected on as a readable table, and how to use it."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from composer.canonical_form import arch_id, stripe
from composer.costs import model_cost
from composer.export.tokenizer import BundleTokenizer
from composer.spec import ArchSpec, iter_layers

QUALITY_WORDS = ("loss", "accuracy", "perplexity", "bits_per_byte")
TRAINING_KEYS = ("step", "tokens", "evaluations", "budget_fraction", "train_time_s", "tokens_per_s", "lr", "seed",
                 "batch_size", "seq_len")
# Shown elsewhere on the card (costs, architecture) or bookkeeping of the search, not results.
SKIPPED_KEYS = {"trial", "trial_id", "status", "reason", "arch_id", "stripe", "params_json", "reused",
                "reused_from", "evaluation", "final", "task", "params", "non_embedding_params", "active_params",
                "flops_per_token", "train_flops_per_token", "state_bytes"}
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
TOKENIZER_WORDS = {"byte": "byte-level (id i is byte i, UTF-8)", "ids": "token ids written as numbers ('3 17 5')",
                   "bpe": "byte-level BPE", "pretrained": "a pretrained tokenizer"}


@dataclass
class CardInputs:
    spec: ArchSpec
    origin: str
    metrics: dict[str, Any]
    task: dict[str, Any] | None
    has_weights: bool
    tokenizer: BundleTokenizer
    tokenizer_note: str | None
    torch_export: str | None
    provenance: dict[str, Any]
    measurements: list[dict[str, Any]] = field(default_factory=list)    # composer/measure, on their devices


def model_card(card: CardInputs) -> str:
    spec = card.spec
    cost = model_cost(spec, spec.max_seq_len, dtype_bytes=4)
    title = (spec.name or "Composer architecture").replace("\n", " ")
    lines = ["---", front_matter(card).rstrip(), "---", "", f"# {title}", ""]
    if spec.description:
        lines += [spec.description.replace("\n", " "), ""]
    lines += [
        f"Exported by Composer from {card.origin}.", "",
        f"- architecture: `{stripe(spec)}`",
        f"- arch_id: `{arch_id(spec)}`",
        f"- d_model {spec.d_model}, vocabulary {spec.vocab_size}, max_seq_len {spec.max_seq_len}",
        f"- weights: {'model.safetensors' if card.has_weights else 'none (architecture only; untrained)'}",
        f"- tokenizer: {_tokenizer_words(card.tokenizer)}" + (f" ({card.tokenizer_note})" if card.tokenizer_note
                                                             else ""),
    ]
    if card.task:
        lines.append(f"- trained on: {_task_words(card.task)}")
    lines += [
        "", "## Costs", "", "| quantity | value |", "| --- | --- |",
        f"| parameters | {cost.params:,} |",
        f"| non-embedding parameters | {cost.non_embedding_params:,} |",
        f"| active parameters per token | {cost.active_params:,} |",
        f"| forward FLOPs per token (at {spec.max_seq_len}) | {cost.flops_per_token:,.0f} |",
        f"| decoding state per sequence (fp32, at {spec.max_seq_len}) | {cost.state_bytes:,} bytes |", "",
    ]
    lines += measured_lines(card.measurements)
    rows = results_rows(card.metrics)
    if rows:
        lines += ["## Metrics it was selected on", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in rows]
        lines.append("")
    lines += _usage(card.has_weights)
    if card.torch_export is not None:
        lines += ["## torch.export", "", f"model.pt2: {card.torch_export}", ""]
    p = card.provenance
    lines += ["## Provenance", "", f"Composer {p.get('composer')}"
              + (f" (git {str(p['git_commit'])[:12]}{', modified' if p.get('git_dirty') else ''})"
                 if p.get("git_commit") else "")
              + f", torch {p.get('torch')}, Python {p.get('python')}; details in config.json.", ""]
    return "\n".join(lines)


def measured_lines(measurements: list[dict[str, Any]]) -> list[str]:
    """`## Measured inference cost`: a table per device and setting, the device named (the measured metrics
    leave "Metrics it was selected on" for this section, where their device is said)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for m in measurements:
        groups.setdefault(tuple(m.get(k) for k in ("device", "device_name", "threads", "batch", "dtype", "torch")),
                          []).append(m)
    if not groups:
        return []
    lines = ["## Measured inference cost", ""]
    for (device, name, threads, batch, dtype, version), rows in groups.items():
        first = rows[0]
        lines += [f"Measured by Composer (composer/measure) on **{_cell(str(device))}** ({_cell(str(name))}), "
                  f"{threads} thread(s), batch {batch}, {dtype}, torch {version}, through the streaming state "
                  f"(KV cache and recurrent states, as `generate` runs it); timed numbers are the median (min-max) of "
                  f"{first['decode_ms_per_token'].get('n')} decoding runs of {first.get('decode_tokens')} tokens and "
                  f"{first['prefill_tokens_per_s'].get('n')} prefills. Peak memory is the measuring process's "
                  f"{_cell(str(first.get('memory_kind')))}.", "",
                  "| context | prefill tokens/s | decode ms/token | peak memory | decoding state |",
                  "| --- | --- | --- | --- | --- |"]
        for m in sorted(rows, key=lambda m: m["context"]):
            rate, step = m["prefill_tokens_per_s"], m["decode_ms_per_token"]
            lines.append(f"| {m['context']:,} | {rate['median']:,.0f} ({rate['min']:,.0f}-{rate['max']:,.0f}) | "
                         f"{step['median']:.3g} ({step['min']:.3g}-{step['max']:.3g}) | "
                         f"{m['peak_memory_bytes']:,} bytes | {m['state_bytes']:,} bytes |")
        lines.append("")
    return lines


def front_matter(card: CardInputs) -> str:
    """Hugging Face's model card metadata (YAML)."""
    ops = sorted({layer.op for layer in iter_layers(card.spec.layers)})
    tags = ["composer", "hybrid-architecture", "custom_code", *ops]
    task_name = (card.task or {}).get("name")
    if task_name:
        tags.append(str(task_name))
    data: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": "text-generation", "tags": tags}
    datasets = known_datasets(card.task)
    if datasets:
        data["datasets"] = datasets
    metrics = [k for k, _ in results_rows(card.metrics) if _is_quality(k)]
    if metrics:
        data["metrics"] = metrics
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def known_datasets(task: dict[str, Any] | None) -> list[str]:
    """The Hugging Face hub dataset a text task read, when it was one (a local file is not listed)."""
    if not task or task.get("name") != "text":
        return []
    data = (task.get("params") or {}).get("data")
    if not isinstance(data, str) or os.path.exists(data) or not HUB_NAME.fullmatch(data) or os.path.splitext(data)[1]:
        return []
    return [data]


def results_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, formatted value): quality metrics first, then training figures, then the rest."""
    kept = {k: v for k, v in metrics.items() if k not in SKIPPED_KEYS and not k.startswith("objective_")
            and "@" not in k and isinstance(v, (int, float, str)) and not isinstance(v, bool)}
    quality = [k for k in kept if _is_quality(k)]
    training = [k for k in TRAINING_KEYS if k in kept]
    rest = [k for k in kept if k not in quality and k not in training]
    return [(k, _fmt(kept[k])) for k in (*quality, *training, *rest)]


def _is_quality(name: str) -> bool:
    return any(word in name for word in QUALITY_WORDS)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isfinite(value) and abs(value) >= 1e4:
            return f"{value:,.0f}"
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 1e4 else str(value)
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _tokenizer_words(tokenizer: BundleTokenizer) -> str:
    words = TOKENIZER_WORDS.get(tokenizer.kind, tokenizer.kind)
    return f"tokenizer.json, {words}, {tokenizer.vocab_size} tokens, from {tokenizer.origin}"


def _task_words(task: dict[str, Any]) -> str:
    params = task.get("params") or {}
    shown = ", ".join(f"{k}={v}" for k, v in params.items() if isinstance(v, (int, float, str)))
    return f"`{task.get('name')}`" + (f" ({_cell(shown)})" if shown else "")


def _usage(has_weights: bool) -> list[str]:
    return [
        "## Use", "", "Standalone (only PyTorch needed):", "", "```python",
        "from modeling import load_model, build_model", "import torch",
        "model = load_model('.')" if has_weights else "model = build_model()  # no weights in this bundle",
        "tokens = torch.tensor([[1, 2, 3]])", "logits = model(tokens).logits",
        "print(model.generate(tokens, 10, temperature=0))", "```", "",
        "With Composer: `composer.export.load(DIR)`; `composer eval DIR --tasks ...` runs lm-evaluation-harness "
        "tasks. With Hugging Face transformers:", "", "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline",
        "model = AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)",
        "tokenizer = AutoTokenizer.from_pretrained(DIR)",
        "generate = pipeline('text-generation', model=DIR, trust_remote_code=True)", "```", "",
    ]
