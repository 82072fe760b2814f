"""What is measured, and at which context: the measured metrics' names, the `metric@context` key a search reports
each under, and the context lengths (`8192`, `8K`), bounded and held to the model's `max_seq_len`.

    prefill_tokens_per_s   tokens a second while the prompt is read (higher is better)
    decode_ms_per_token    milliseconds per generated token after a prompt of `context` tokens
    peak_memory_bytes      the measuring process's peak (RSS on CPU, `torch.cuda.max_memory_allocated` on CUDA)
    state_bytes            the decoding state (KV cache, recurrent states) held after the prompt, in bytes

A context above the spec's `max_seq_len` (the longest context it declares) is refused with a way out: `composer
bench --extend`, or a larger `base.max_seq_len` in a search space. The model code itself has no length limit (RoPE
positions are computed, recurrent states do not grow), so measuring past `max_seq_len` is possible, but it
measures a context the architecture does not claim; it is asked for, never assumed.
"""

from __future__ import annotations

import re
from typing import Any

from composer.errors import UserError
from composer.names import unknown_name_message

# name -> (the better direction, what it is)
METRICS: dict[str, tuple[str, str]] = {
    "prefill_tokens_per_s": ("max", "tokens per second while reading the prompt"),
    "decode_ms_per_token": ("min", "milliseconds per generated token after the prompt"),
    "peak_memory_bytes": ("min", "peak memory of the measuring process (RSS on CPU; allocated on CUDA)"),
    "state_bytes": ("min", "the decoding state (KV cache, recurrent state) after the prompt"),
}
TIMED = ("prefill_tokens_per_s", "decode_ms_per_token")     # medians over repeats, with their spread
# the longest context measured: a 1M-token prompt is past any model here and would run for hours on a CPU
MAX_MEASURED_CONTEXT = 1 << 20
SEPARATOR = "@"
CONTEXT_TEXT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*")


def key(metric: str, context: int) -> str:
    """The name a search reports a measured metric under: `decode_ms_per_token@8192`."""
    return f"{metric}{SEPARATOR}{context}"


def split_key(name: str) -> tuple[str, int] | None:
    """(metric, context) of a measured key, None for any other name."""
    metric, sep, context = name.partition(SEPARATOR)
    if not sep or metric not in METRICS or not context.isdigit():
        return None
    return metric, int(context)


def is_measured(name: str) -> bool:
    return split_key(name) is not None


def check_metric(name: Any, path: str) -> str:
    """A measured metric's name, else a UserError with did-you-mean."""
    if name not in METRICS:
        raise UserError(unknown_name_message("measured metric", str(name), list(METRICS)), path=path)
    return name


def parse_context(value: Any, path: str = "--context") -> int:
    """A context length from a number or a text like `8K` (K = 1024, M = 1024^2): an integer in
    [1, MAX_MEASURED_CONTEXT]."""
    number: float | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, (int, float)):
        number = value
    elif isinstance(value, str) and (match := CONTEXT_TEXT.fullmatch(value)):
        number = float(match.group(1)) * {"": 1, "k": 1024, "m": 1024 ** 2}[match.group(2).lower()]
    if number is None or number != number or not float(number).is_integer():
        raise UserError(f"expected a context length (an integer such as 8192, or 8K), got {value!r}", path=path)
    if not 1 <= number <= MAX_MEASURED_CONTEXT:
        raise UserError(f"expected a context length in [1, {MAX_MEASURED_CONTEXT:,}] (limit MAX_MEASURED_CONTEXT), "
                        f"got {int(number):,}", path=path)
    return int(number)


def read_context(reader: Any, value: Any, path: str) -> int:
    """`parse_context` as a field's `parse` (composer/fields.py), the error with the document's line."""
    try:
        return parse_context(value, path)
    except UserError as e:
        raise reader.fail(e.message, path) from None


def check_within(context: int, max_seq_len: int, path: str, remedy: str) -> None:
    """Refuse a context past the spec's `max_seq_len` (see the module docstring); `remedy` says the way out."""
    if context > max_seq_len:
        raise UserError(f"context {context:,} is beyond the model's max_seq_len {max_seq_len:,} (the longest context "
                        f"it declares); {remedy}", path=path)
