"""The tokenizers of the `text` task: each turns text into a 1-D LongTensor of ids below `vocab_size` and back.

- `byte` (the default): UTF-8 bytes, vocabulary 256.
- `bpe`: a byte-level BPE of exactly `bpe_vocab_size` tokens, trained on the training split with `tokenizers`
  and cached in the user's cache folder (`cache_dir()`), keyed by a hash of the text and the size.
- a pretrained tokenizer: a `tokenizer.json` file, a folder holding one (as `save_pretrained` writes it), or
  a Hugging Face hub name such as `gpt2` (downloaded once by `tokenizers`, read from the hub's cache after).

`HFTokenizer.backend` is the `tokenizers.Tokenizer` itself, for whoever saves it beside a model.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from composer.atomic import write_atomic
from composer.data.hub import offline_reason
from composer.data.text_source import HUB_NAME, one_line
from composer.errors import UserError

BYTE_VOCAB = 256


def cache_dir() -> Path:
    """Where Composer caches what it derives from data: $COMPOSER_CACHE, else $XDG_CACHE_HOME/composer, else
    ~/.cache/composer."""
    if os.environ.get("COMPOSER_CACHE"):
        return Path(os.environ["COMPOSER_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "composer"


class ByteTokenizer:
    name = "byte"
    vocab_size = BYTE_VOCAB
    backend = None

    def encode(self, text: str) -> torch.Tensor:
        if not text:      # torch.frombuffer refuses an empty buffer
            return torch.zeros(0, dtype=torch.long)
        return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long()

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class HFTokenizer:
    """A `tokenizers.Tokenizer`, used without special tokens, truncation or padding: the text is one stream."""

    def __init__(self, backend: Any, name: str):
        backend.no_truncation()
        backend.no_padding()
        self.backend, self.name = backend, name
        self.vocab_size = backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> torch.Tensor:
        ids = torch.tensor(self.backend.encode(text, add_special_tokens=False).ids, dtype=torch.long)
        if len(ids) and int(ids.max()) >= self.vocab_size:
            raise UserError(f"tokenizer {self.name!r} produced id {int(ids.max())}, outside its vocabulary of "
                            f"{self.vocab_size}", path="tokenizer")
        return ids

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=False)


def make_tokenizer(name: str, train_text: str, bpe_vocab_size: int) -> ByteTokenizer | HFTokenizer:
    """The tokenizer called `name`: byte, bpe (trained on `train_text`), or a pretrained one."""
    if name == "byte":
        return ByteTokenizer()
    if name == "bpe":
        return bpe_tokenizer(train_text, bpe_vocab_size)
    if name.lower() in ("byte", "bpe"):
        raise UserError(f"unknown tokenizer {name!r}; did you mean {name.lower()!r}?", path="tokenizer")
    return pretrained_tokenizer(name)


def bpe_tokenizer(train_text: str, vocab_size: int) -> HFTokenizer:
    """A byte-level BPE of exactly `vocab_size` tokens trained on `train_text` (cached); a text too small to
    yield that many is an error, never a smaller model than the one asked for."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size <= BYTE_VOCAB:
        raise UserError(f"expected more than {BYTE_VOCAB} (the byte alphabet), got {vocab_size}; for {BYTE_VOCAB} "
                        "use tokenizer: byte", path="bpe_vocab_size")
    key = hashlib.sha256(f"{vocab_size}\x00".encode() + train_text.encode("utf-8")).hexdigest()[:16]
    path = cache_dir() / f"bpe-{vocab_size}-{key}.json"
    tok = None
    if path.is_file():
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception:   # a damaged cache entry is rebuilt
            tok = None
    if tok is None:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        lines = train_text.splitlines(keepends=True)
        tok.train_from_iterator(("".join(lines[i:i + 1000]) for i in range(0, len(lines), 1000)), trainer)
        try:
            write_atomic(path, tok.to_str())
        except OSError as e:
            warnings.warn(f"could not cache the BPE tokenizer in {path.parent} ({e.strerror}); set COMPOSER_CACHE "
                          "to a writable folder", stacklevel=2)
    learned = tok.get_vocab_size(with_added_tokens=True)
    if learned != vocab_size:
        raise UserError(f"the training text yields only {learned} BPE tokens, fewer than bpe_vocab_size "
                        f"{vocab_size}; use bpe_vocab_size: {learned} (or less), or more text", path="bpe_vocab_size")
    return HFTokenizer(tok, "bpe")


def pretrained_tokenizer(ref: str) -> HFTokenizer:
    """A tokenizer from a tokenizer.json file, a folder holding one, or a hub name."""
    from tokenizers import Tokenizer

    path = Path(ref).expanduser()
    if path.is_dir():
        file = path / "tokenizer.json"
        if not file.is_file():
            raise UserError(f"the folder {ref} has no tokenizer.json", path="tokenizer")
    elif path.is_file():
        file = path
    elif path.suffix or not HUB_NAME.fullmatch(ref):
        raise UserError(f"no such tokenizer file or folder: {ref} (expected byte, bpe, a tokenizer.json file, a "
                        "folder holding one, or a Hugging Face hub name)", path="tokenizer")
    else:
        return HFTokenizer(hub_tokenizer(ref), ref)
    try:
        return HFTokenizer(Tokenizer.from_file(str(file)), ref)
    except Exception as e:   # tokenizers raises a bare Exception for a file it cannot parse
        raise UserError(f"{file} is not a tokenizer the `tokenizers` library can read: {one_line(e)}",
                        path="tokenizer") from e


def hub_tokenizer(name: str) -> Any:
    """The hub tokenizer `name`: from the hub's local cache when it is there, else downloaded."""
    from huggingface_hub import try_to_load_from_cache
    from tokenizers import Tokenizer

    cached = try_to_load_from_cache(name, "tokenizer.json")
    if isinstance(cached, str):
        return Tokenizer.from_file(cached)
    reason = offline_reason()
    if reason:
        raise UserError(f"tokenizer {name!r} is not a local file nor in the Hugging Face cache, and the hub cannot be "
                        f"reached ({reason}); on a machine with a network save it once with python -c \"from "
                        f"tokenizers import Tokenizer; Tokenizer.from_pretrained('{name}').save('tokenizer.json')\" "
                        "and give that file: tokenizer: path/to/tokenizer.json", path="tokenizer")
    try:
        return Tokenizer.from_pretrained(name)
    except Exception as e:   # huggingface_hub raises many kinds for a missing repo or file
        raise UserError(f"could not load tokenizer {name!r} from the Hugging Face hub: {one_line(e)}",
                        path="tokenizer") from e
