"""The measurement protocol: one architecture, one context length, on one device, through the model's own inference
path (the streaming state: KV caches and recurrent states, as `HybridLM.generate` and the exported `modeling.py`
run it; the exported file inlines this very model code).

For a context of L tokens, in this process (composer/measure/child.py runs it in a fresh one):

1. build the model from the spec (seed 0, `dtype`, eval mode, `torch.inference_mode`); no training, the weights do
   not change the cost;
2. warm up `warmup` times: a prompt of min(L, prefill_chunk) tokens and a few decoding steps;
3. prefill `prefill_repeats` times: a fresh state, the L-token prompt fed in chunks of `prefill_chunk` tokens (the
   model's contract: feeding a sequence in pieces equals feeding it whole), timed -> prefill tokens/s per repeat;
4. decode `repeats` times `decode_tokens` steps, one token at a time, from the last prefill's state (the steps
   continue the sequence, so the last repeat decodes at L + repeats x decode_tokens) -> ms per token per repeat;
5. the state after the prompt (bytes of every tensor it holds) and the process's peak memory: RSS on CPU
   (VmHWM: Python, torch, the weights and everything the run allocated), `torch.cuda.max_memory_allocated`
   on CUDA; `baseline_memory_bytes` is the same quantity once the model is built, before any token.

Timed numbers are reported as the median over repeats with their spread (min, max, n); memory and state as the
single values they are. Prefilling in chunks bounds the memory of a long prompt to chunk x context attention
scores instead of context^2 (a 32K prompt in one piece would need tens of GiB for the scores alone), as serving
engines' chunked prefill does.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, Literal

from composer.fields import option

DTYPES = {"float32": 4, "bfloat16": 2, "float16": 2}
WARMUP_DECODE_STEPS = 4
PROTOCOL_VERSION = 1          # enters the cache key: a changed protocol never reuses old numbers


@dataclass(frozen=True)
class MeasureSettings:
    """How a measurement is made (composer bench's flags; a search space's `measure:` section)."""

    device: str = option("cpu", "the device measured on: cpu, cuda or cuda:N")
    threads: int = option(1, "torch CPU threads of the measuring process", ge=1, le=1024)
    batch: int = option(1, "sequences decoded at once", ge=1, le=4096)
    dtype: Literal["float32", "bfloat16", "float16"] = option("float32", "the weights' and the state's type")
    warmup: int = option(1, "warm-up runs before the timed ones", ge=0, le=100)
    repeats: int = option(5, "timed decoding runs; the median is reported", ge=1, le=1000)
    prefill_repeats: int = option(3, "timed prefills of the whole prompt; the median is reported", ge=1, le=1000)
    decode_tokens: int = option(16, "tokens decoded per timed decode run", ge=1, le=100_000)
    prefill_chunk: int = option(2048, "the prompt is fed in chunks of this many tokens", ge=1, le=1 << 20)
    timeout_s: float = option(600.0, "seconds one context's measurement may take (in its own process)", gt=0,
                             le=86400)

    def cache_fields(self) -> dict[str, Any]:
        """What a measured number depends on (the cache key), beside the architecture and the context."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "timeout_s"}


def spread(values: list[float]) -> dict[str, float]:
    """{median, min, max, n} of the repeats."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def state_bytes(state: Any) -> int:
    """Bytes of every tensor in a (nested) decoding state."""
    import torch

    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(v) for v in state)
    return 0


def process_peak_bytes(device: Any) -> int:
    """The process's peak memory so far: `max_memory_allocated` on CUDA; on CPU the peak RSS of this process's
    own address space (VmHWM on Linux; `ru_maxrss` elsewhere, which on Linux would also count the parent's pages
    at the fork before this interpreter started)."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            line = next((line for line in f if line.startswith("VmHWM:")), None)
        if line is not None:
            return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024    # ru_maxrss is KiB on Linux, bytes on macOS
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)


def device_name(device: Any) -> str:
    """`NVIDIA H100 80GB HBM3` or `Intel(R) Xeon(R) ... (2 cores)`: what the numbers were measured on."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name} ({cores} cores)"


def measure_context(spec: Any, context: int, settings: MeasureSettings) -> dict[str, Any]:
    """Measure `spec` (an ArchSpec) at `context` tokens in this process (see the module docstring)."""
    from composer.training.runtime import torch_threads

    with torch_threads(settings.threads):
        return _measure_context(spec, context, settings)


def _measure_context(spec: Any, context: int, settings: MeasureSettings) -> dict[str, Any]:
    import torch

    from composer.canonical_form import arch_id
    from composer.model import HybridLM

    device = torch.device(settings.device)
    dtype = getattr(torch, settings.dtype)
    torch.manual_seed(0)
    started = time.perf_counter()
    model = HybridLM(spec).to(device=device, dtype=dtype).eval()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    baseline = process_peak_bytes(device)
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, spec.vocab_size, (settings.batch, context), generator=generator).to(device)
    steps = torch.randint(0, spec.vocab_size, (settings.batch, settings.repeats * settings.decode_tokens + 1),
                          generator=generator).to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def prefill(tokens: torch.Tensor) -> Any:
        state = model.init_state(settings.batch, device, dtype)
        for start in range(0, tokens.shape[1], settings.prefill_chunk):
            state = model(tokens[:, start:start + settings.prefill_chunk], state).state
        return state

    with torch.inference_mode():
        for _ in range(settings.warmup):
            state = prefill(prompt[:, :min(context, settings.prefill_chunk)])
            for i in range(WARMUP_DECODE_STEPS):
                state = model(steps[:, i:i + 1], state).state
            sync()
        rates = []
        for _ in range(settings.prefill_repeats):
            sync()
            tick = time.perf_counter()
            state = prefill(prompt)
            sync()
            rates.append(settings.batch * context / (time.perf_counter() - tick))
        held = state_bytes(state)
        decode = []
        for r in range(settings.repeats):
            sync()
            tick = time.perf_counter()
            for i in range(r * settings.decode_tokens, (r + 1) * settings.decode_tokens):
                state = model(steps[:, i:i + 1], state).state
            sync()
            decode.append(1000.0 * (time.perf_counter() - tick) / settings.decode_tokens)
    return {
        "arch_id": arch_id(spec), "context": context, **settings.cache_fields(),
        "device_name": device_name(device), "torch": torch.__version__, "protocol": PROTOCOL_VERSION,
        "prefill_tokens_per_s": spread(rates), "decode_ms_per_token": spread(decode),
        "peak_memory_bytes": process_peak_bytes(device), "baseline_memory_bytes": baseline, "state_bytes": held,
        "memory_kind": "max_memory_allocated" if device.type == "cuda" else "peak RSS",
        "wall_s": round(time.perf_counter() - started, 3),
    }


def value_of(measurement: dict[str, Any], metric: str) -> float | int:
    """A measured metric's value: the median of a timed one, else the number itself (bytes: an integer)."""
    value = measurement[metric]
    return float(value["median"]) if isinstance(value, dict) else value
