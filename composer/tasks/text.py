"""Language modelling on text loaded through Hugging Face `datasets`.

`data` is a local file, directory or glob (`.txt`/`.md` read with the `text` builder and
`keep_linebreaks=True`; `.json`/`.jsonl` with `json`; `.parquet` with `parquet`), or a hub dataset name
(which needs a network). By default the shipped sample `composer/data/sample.txt` is used. The text is split
deterministically: the last `val_fraction` of the characters is the validation split. Tokens are bytes
(vocab 256) unless `tokenizer="bpe"`, which trains a byte-level BPE of `bpe_vocab_size` on the training
split with `tokenizers` and caches it under `runs/cache/` (keyed by a hash of the text and the size).
Training batches are random windows of the packed token stream; validation is consecutive windows.
"""

from __future__ import annotations

import glob
import hashlib
import math
import os
from pathlib import Path
from typing import Any

import torch

from composer.errors import UserError
from composer.tasks.base import Task, evaluate_labelled, generator, positive_int, require

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample.txt"
BUILDERS = {".txt": "text", ".text": "text", ".md": "text", ".json": "json", ".jsonl": "json",
            ".parquet": "parquet"}


def cache_dir() -> Path:
    return Path(os.environ.get("COMPOSER_CACHE", "runs/cache"))


def load_text(data: str | os.PathLike | None, text_field: str = "text", dataset_config: str | None = None) -> str:
    """All text of `data` as one string (documents joined by newlines; text files keep their line breaks)."""
    path = str(data) if data is not None else str(SAMPLE)
    files = sorted(glob.glob(os.path.join(path, "*"))) if os.path.isdir(path) else sorted(glob.glob(path))
    files = [f for f in files if os.path.isfile(f)]
    if files:
        kinds = {BUILDERS.get(Path(f).suffix.lower()) for f in files}
        require(None not in kinds and len(kinds) == 1, "data", f"expected files of one kind ({', '.join(BUILDERS)}) "
                f"in {path!r}, got {', '.join(sorted({Path(f).suffix or '(none)' for f in files}))}")
        builder = kinds.pop()
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        import datasets

        datasets.disable_progress_bars()
        extra = {"keep_linebreaks": True} if builder == "text" else {}
        ds = datasets.load_dataset(builder, data_files=files, split="train", **extra)
    elif any(sep in path for sep in ("/", "\\")) and not _looks_like_hub_name(path):
        raise UserError(f"no such file: {path!r}", path="data")
    else:
        import datasets

        try:
            ds = datasets.load_dataset(path, dataset_config, split="train")
        except Exception as e:  # datasets raises many kinds for a missing or unreachable dataset
            raise UserError(f"could not load dataset {path!r}: {e}", path="data") from e
    require(text_field in ds.column_names, "text_field",
            f"column {text_field!r} not in the dataset (columns: {', '.join(ds.column_names)})")
    texts = ds[text_field]
    joiner = "" if files and builder == "text" else "\n"
    return joiner.join(t for t in texts if t)


def _looks_like_hub_name(path: str) -> bool:
    return path.count("/") == 1 and not path.startswith((".", "/")) and not os.path.splitext(path)[1]


class ByteTokenizer:
    vocab_size = 256

    def encode(self, text: str) -> torch.Tensor:
        return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long()

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class BPETokenizer:
    """A byte-level BPE trained on the training text, cached by a hash of the text and vocabulary size."""

    def __init__(self, train_text: str, vocab_size: int):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        key = hashlib.sha256(f"{vocab_size}\x00".encode() + train_text.encode("utf-8")).hexdigest()[:16]
        path = cache_dir() / f"bpe-{vocab_size}-{key}.json"
        if path.exists():
            self.tok = Tokenizer.from_file(str(path))
        else:
            tok = Tokenizer(models.BPE())
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tok.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
            lines = train_text.splitlines(keepends=True)
            tok.train_from_iterator((("".join(lines[i:i + 1000])) for i in range(0, len(lines), 1000)), trainer)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tok.save(str(tmp))
            os.replace(tmp, path)
            self.tok = tok
        self.vocab_size = self.tok.get_vocab_size()

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor(self.tok.encode(text).ids, dtype=torch.long)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        return self.tok.decode([int(i) for i in ids])


class TextLM(Task):
    name = "text"
    primary_metric = "loss"

    def __init__(self, data: str | None = None, seq_len: int = 256, tokenizer: str = "byte",
                 bpe_vocab_size: int = 4096, val_fraction: float = 0.05, max_val_windows: int = 256,
                 text_field: str = "text", dataset_config: str | None = None, seed: int = 0):
        params = dict(seq_len=seq_len, bpe_vocab_size=bpe_vocab_size, max_val_windows=max_val_windows)
        for field in params:
            positive_int(params, field)
        require(tokenizer in ("byte", "bpe"), "tokenizer", f"expected 'byte' or 'bpe', got {tokenizer!r}")
        require(0 < val_fraction < 1, "val_fraction", f"expected 0 < val_fraction < 1, got {val_fraction}")
        self.data, self.seq_len, self.tokenizer_name, self.seed = data, seq_len, tokenizer, seed
        self.bpe_vocab_size, self.val_fraction, self.max_val_windows = bpe_vocab_size, val_fraction, max_val_windows
        text = load_text(data, text_field, dataset_config)
        cut = int(len(text) * (1 - val_fraction))
        train_text, val_text = text[:cut], text[cut:]
        self.tokenizer = ByteTokenizer() if tokenizer == "byte" else BPETokenizer(train_text, bpe_vocab_size)
        self.vocab_size = self.tokenizer.vocab_size
        self.train_tokens = self.tokenizer.encode(train_text)
        self.val_tokens = self.tokenizer.encode(val_text)
        self.val_bytes = len(val_text.encode("utf-8"))
        for split, tokens in (("training", self.train_tokens), ("validation", self.val_tokens)):
            require(len(tokens) > seq_len + 1, "seq_len", f"the {split} split has {len(tokens)} tokens, fewer than "
                    f"seq_len + 2 = {seq_len + 2}; use more text, a shorter seq_len or another val_fraction")
        self._test: tuple[torch.Tensor, torch.Tensor] | None = None

    def params(self) -> dict[str, Any]:
        return dict(data=str(self.data) if self.data is not None else "sample", seq_len=self.seq_len,
                    tokenizer=self.tokenizer_name, vocab_size=self.vocab_size, val_fraction=self.val_fraction,
                    train_tokens=len(self.train_tokens), val_tokens=len(self.val_tokens), seed=self.seed)

    def train_batch(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = generator(self.seed, "text", step)
        starts = torch.randint(len(self.train_tokens) - self.seq_len - 1, (batch_size, 1), generator=gen)
        index = starts + torch.arange(self.seq_len + 1)
        window = self.train_tokens[index]
        return window[:, :-1].contiguous(), window[:, 1:].contiguous()

    def test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._test is None:
            T = self.seq_len
            count = min((len(self.val_tokens) - 1) // T, self.max_val_windows)
            window = self.val_tokens[: count * T + 1]
            self._test = window[:-1].view(count, T), window[1:].view(count, T)
        return self._test

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, batch_size: int = 64) -> dict[str, float]:
        inputs, targets = self.test_set()
        metrics = evaluate_labelled(model, inputs, targets, batch_size)
        bytes_per_token = self.val_bytes / len(self.val_tokens)
        metrics["bits_per_byte"] = metrics["loss"] / math.log(2) / bytes_per_token
        return metrics

    def unigram_entropy(self) -> float:
        """Entropy (nats) of the training split's token frequencies: the loss of the best context-free model."""
        counts = torch.bincount(self.train_tokens, minlength=self.vocab_size).double()
        p = counts[counts > 0] / counts.sum()
        return float(-(p * p.log()).sum())
