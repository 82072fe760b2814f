"""Language modelling on text loaded through Hugging Face `datasets`.

`data` is a local file, folder or glob, or a hub dataset name (streamed from its `split`; needs a network),
read up to `max_chars` characters (composer/data/text_source.py); by default the shipped sample
`composer/data/sample.txt`. The split is by characters and deterministic, in three parts: the last
`test_fraction` of the text is the test split, the `val_fraction` before it the validation split, the rest
trains. Validation chooses (the search's objective, a learning rate); test judges (composer confirm's verdict),
scored only when asked for (`evaluate_split(model, "test")`; the trainer's `final_splits`). The `holdout` split
is validation and test together: with the defaults (5% and 5%) the last 10% of the text, which is nanoGPT's
validation split of Tiny Shakespeare (`text[:int(n * 0.9)]` trains), so its loss is comparable with nanoGPT's;
`val_fraction: 0.1, test_fraction: 0` is the same split with validation alone. The tokenizer
(composer/data/tokenizer.py) is `byte` (vocab 256), `bpe` (trained on the training split, exactly
`bpe_vocab_size` tokens) or a pretrained one (a tokenizer.json, a folder, or a hub name such as `gpt2`).

The tokenizer's vocabulary is the model's: a spec trained on this task that states a `vocab_size` must state
the same (`Task.model_vocab_size`, the rule of every task), so the model's size never changes behind the user's
back. Training batches are random
windows of the packed token stream; validation is consecutive windows.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from composer.data.text_source import SAMPLE, load_text
from composer.data.tokenizer import ByteTokenizer, HFTokenizer, cache_dir, make_tokenizer
from composer.tasks.base import Task, evaluate_labelled, generator, positive_int, require
from composer.tasks.registry import register_task

__all__ = ["SAMPLE", "ByteTokenizer", "HFTokenizer", "TextLM", "cache_dir", "load_text", "split_text"]


SPLITS = ("test", "holdout")          # besides validation: what `evaluate_split` scores


def split_text(text: str, val_fraction: float, test_fraction: float = 0.0) -> tuple[str, str, str]:
    """(training, validation, test) text: the test split is the last `test_fraction` of the characters, the
    validation split the `val_fraction` before it."""
    n = len(text)
    cut = int(n * (1 - (val_fraction + test_fraction)))
    test_cut = int(n * (1 - test_fraction)) if test_fraction else n
    return text[:cut], text[cut:test_cut], text[test_cut:]


class TextLM(Task):
    name = "text"
    primary_metric = "loss"
    metrics = ("loss", "accuracy", "bits_per_byte")

    def __init__(self, data: str | os.PathLike | None = None, seq_len: int = 256, tokenizer: str = "byte",
                 bpe_vocab_size: int = 4096, val_fraction: float = 0.05, test_fraction: float = 0.05,
                 max_val_windows: int = 256,
                 text_field: str = "text", dataset_config: str | None = None, split: str = "train",
                 max_chars: int | None = None, seed: int = 0):
        params = dict(seq_len=seq_len, bpe_vocab_size=bpe_vocab_size, max_val_windows=max_val_windows)
        for field in params:
            positive_int(params, field)
        if max_chars is not None:
            positive_int({"max_chars": max_chars}, "max_chars")
        require(data is None or isinstance(data, (str, os.PathLike)), "data",
                f"expected a file, folder, glob or dataset name, got {data!r}")
        require(dataset_config is None or isinstance(dataset_config, str), "dataset_config",
                f"expected a string, got {dataset_config!r}")
        for field, value in (("tokenizer", tokenizer), ("text_field", text_field), ("split", split)):
            require(isinstance(value, str) and value != "", field, f"expected a non-empty string, got {value!r}")
        require(isinstance(val_fraction, (int, float)) and not isinstance(val_fraction, bool)
                and 0 < val_fraction < 1, "val_fraction", f"expected 0 < val_fraction < 1, got {val_fraction!r}")
        require(isinstance(test_fraction, (int, float)) and not isinstance(test_fraction, bool)
                and 0 <= test_fraction < 1, "test_fraction", f"expected 0 <= test_fraction < 1, got {test_fraction!r}")
        require(val_fraction + test_fraction < 1, "test_fraction", f"val_fraction + test_fraction must be below 1 "
                f"(the rest trains), got {val_fraction} + {test_fraction}")
        self.data, self.seq_len, self.tokenizer_name, self.seed = data, seq_len, tokenizer, seed
        self.bpe_vocab_size, self.val_fraction, self.max_val_windows = bpe_vocab_size, val_fraction, max_val_windows
        self.test_fraction = test_fraction
        self.text_field, self.dataset_config, self.split, self.max_chars = text_field, dataset_config, split, max_chars
        text = load_text(data, text_field, dataset_config, split, max_chars)
        train_text, val_text, test_text = split_text(text, val_fraction, test_fraction)
        self.tokenizer = make_tokenizer(tokenizer, train_text, bpe_vocab_size)
        self.vocab_size = self.tokenizer.vocab_size
        self.train_tokens = self.tokenizer.encode(train_text)
        self.val_tokens = self.tokenizer.encode(val_text)
        self.val_bytes = len(val_text.encode("utf-8"))
        held = {"test": test_text, "holdout": val_text + test_text}
        self.split_tokens = {name: self.tokenizer.encode(part) for name, part in held.items() if part}
        self.split_bytes = {name: len(part.encode("utf-8")) for name, part in held.items() if part}
        self.splits = tuple(name for name in SPLITS if name in self.split_tokens)
        for name, tokens in (("training", self.train_tokens), ("validation", self.val_tokens),
                             *self.split_tokens.items()):
            require(len(tokens) > seq_len + 1, "seq_len", f"the {name} split has {len(tokens)} tokens, fewer than "
                    f"seq_len + 2 = {seq_len + 2}; use more text, a shorter seq_len or another val_fraction / "
                    "test_fraction")
        self._test: tuple[torch.Tensor, torch.Tensor] | None = None
        self._held: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def params(self) -> dict[str, Any]:
        out = dict(data=str(self.data) if self.data is not None else "sample", seq_len=self.seq_len,
                   tokenizer=self.tokenizer_name, vocab_size=self.vocab_size, val_fraction=self.val_fraction,
                   test_fraction=self.test_fraction, train_tokens=len(self.train_tokens),
                   val_tokens=len(self.val_tokens), test_tokens=len(self.split_tokens.get("test", ())), seed=self.seed)
        optional = dict(bpe_vocab_size=self.bpe_vocab_size if self.tokenizer_name == "bpe" else None,
                        text_field=None if self.text_field == "text" else self.text_field,
                        dataset_config=self.dataset_config, split=None if self.split == "train" else self.split,
                        max_chars=self.max_chars)
        return {**out, **{k: v for k, v in optional.items() if v is not None}}

    def vocabulary(self) -> str:
        return f"the text task's tokenizer {self.tokenizer_name!r} has {self.vocab_size} tokens"

    def vocabulary_fix(self, spec_vocab_size: int) -> str:
        return f"set vocab_size: {self.vocab_size} in the spec (or leave it out), or use another tokenizer"

    def tokens_per_pass(self) -> int:
        return len(self.train_tokens)

    def train_batch(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.train_rows(step, batch_size, 0, batch_size)

    def train_rows(self, step: int, batch_size: int, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = generator(self.seed, "text", step)
        starts = torch.randint(len(self.train_tokens) - self.seq_len - 1, (batch_size, 1), generator=gen)[start:stop]
        index = starts + torch.arange(self.seq_len + 1)
        window = self.train_tokens[index]
        return window[:, :-1].contiguous(), window[:, 1:].contiguous()

    def windows(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Consecutive windows from the start of a split, at most `max_val_windows`: (inputs, targets)."""
        T = self.seq_len
        count = min((len(tokens) - 1) // T, self.max_val_windows)
        window = tokens[: count * T + 1]
        return window[:-1].view(count, T), window[1:].view(count, T)

    def test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The validation windows (what `evaluate` scores)."""
        if self._test is None:
            self._test = self.windows(self.val_tokens)
        return self._test

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, batch_size: int = 64) -> dict[str, float]:
        return self._scored(model, self.test_set(), self.val_bytes / len(self.val_tokens), batch_size)

    @torch.no_grad()
    def evaluate_split(self, model: torch.nn.Module, split: str, batch_size: int = 64) -> dict[str, float]:
        self.check_split(split)
        if split not in self._held:
            self._held[split] = self.windows(self.split_tokens[split])
        bytes_per_token = self.split_bytes[split] / len(self.split_tokens[split])
        return self._scored(model, self._held[split], bytes_per_token, batch_size)

    def _scored(self, model: torch.nn.Module, data: tuple[torch.Tensor, torch.Tensor], bytes_per_token: float,
                batch_size: int) -> dict[str, float]:
        metrics = evaluate_labelled(model, *data, batch_size)
        metrics["bits_per_byte"] = metrics["loss"] / math.log(2) / bytes_per_token
        return metrics

    def unigram_entropy(self) -> float:
        """Entropy (nats) of the training split's token frequencies: the loss of the best context-free model."""
        counts = torch.bincount(self.train_tokens, minlength=self.vocab_size).double()
        p = counts[counts > 0] / counts.sum()
        return float(-(p * p.log()).sum())


register_task("text", TextLM)
