"""The bundle's tokenizer, in the files Hugging Face reads: `tokenizer.json` (the `tokenizers` library's own
format), `tokenizer_config.json` and, when the tokenizer has special tokens, `special_tokens_map.json`, so
that `AutoTokenizer.from_pretrained(bundle)` and `pipeline("text-generation", model=bundle, ...)` work.

Which tokenizer a bundle gets (the first that applies):

1. the one given: `export(..., tokenizer=...)` / `--tokenizer`: a task's tokenizer object, a
   `tokenizers.Tokenizer`, a transformers tokenizer, `"byte"`, `"ids"`, or a path to a `tokenizer.json`
   (or to a folder holding one);
2. the source's own: a `tokenizer.json` beside the checkpoint or in the run folder, else the tokenizer of
   the task the run trained on (as its `space.yaml` names it);
3. by vocabulary: 256 tokens is Composer's default text tokenizer (bytes), anything else token ids.

The kinds Composer builds itself:

* `byte`: byte i <-> id i, exactly as the text task's `ByteTokenizer` encodes (UTF-8; decoding replaces invalid
  sequences). It is a BPE without merges over the ByteLevel alphabet: the pre-tokenizer turns each byte into
  one character of that alphabet, and the vocabulary gives that character the byte's value as its id.
* `ids`: the synthetic tasks' tokens (MQAR, MAD) are symbols, not text: the text "3 17 5" <-> [3, 17, 5].

Every bundle tokenizer Composer builds has an end-of-text token, which Hugging Face tools need (lm-eval's
`--model hf` starts each document with it and stops generating at it; `generate` stops at the
`generation_config.json`'s eos). The vocabulary is the model's and has no spare id, so an id the data never holds
doubles as it: in a byte-level tokenizer (`byte`, and a byte-level BPE such as the text task's `bpe`) the NUL
byte's id, written `<|endoftext|>` (text holds no NUL: the byte still encodes to it, a normalizer turning it into
the token, and it decodes as `<|endoftext|>`, or to nothing when special tokens are skipped); in `ids`, id 0
(the word `0`, special). None of Composer's models is trained with a beginning-of-text token (documents are
joined with newlines), so none is declared. A tokenizer given or saved without an end-of-text token is written
as it is, with a note.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from composer.errors import UserError

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
BYTE_VOCAB = 256
# Spellings of an end-of-text token, for tokenizers that carry special tokens without naming their roles.
EOS_SPELLINGS = ("<|endoftext|>", "</s>", "<eos>", "<|eos|>", "[EOS]")
END_OF_TEXT = "<|endoftext|>"     # the end-of-text token of Composer's byte-level tokenizers (the NUL byte's id)
ID_END_OF_TEXT = "0"              # and of its `ids` tokenizer
SYNTHETIC_TASKS = ("mqar", "mad")


@dataclass
class BundleTokenizer:
    """A tokenizer to write into a bundle: a `tokenizers.Tokenizer`, or a transformers tokenizer (`hf`) that
    writes its own files."""

    kind: str               # byte, ids, bpe, wordpiece, ..., or pretrained (a transformers tokenizer)
    origin: str             # where it came from, for the model card
    tokenizer: Any = None   # tokenizers.Tokenizer
    hf: Any = None          # a transformers tokenizer (has save_pretrained)
    eos: str | None = None  # the end-of-text token (`with_end_of_text`)

    @property
    def eos_id(self) -> int | None:
        """The end-of-text token's id, None without one."""
        if self.hf is not None:
            return self.hf.eos_token_id
        return None if self.eos is None else self.tokenizer.token_to_id(self.eos)

    @property
    def vocab_size(self) -> int:
        return len(self.hf) if self.hf is not None else self.tokenizer.get_vocab_size(with_added_tokens=True)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "vocab_size": self.vocab_size, "origin": self.origin}


def byte_to_char() -> dict[int, str]:
    """The ByteLevel alphabet: printable bytes stand for themselves, the other 68 for chr(256 + k) in order."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    out, shifted = {}, 0
    for byte in range(BYTE_VOCAB):
        if byte in printable:
            out[byte] = chr(byte)
        else:
            out[byte] = chr(BYTE_VOCAB + shifted)
            shifted += 1
    return out


def byte_level() -> Any:
    """The byte tokenizer as a `tokenizers.Tokenizer`: id i is byte i, the NUL byte's id 0 written
    `<|endoftext|>` (see the module docstring)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE(vocab={char: byte for byte, char in byte_to_char().items()}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return nul_as_end_of_text(tok)


def id_tokenizer(vocab_size: int) -> Any:
    """Token ids written as decimal numbers separated by spaces; `0` is the end-of-text token (a whole word)."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel(vocab={str(i): i for i in range(vocab_size)}, unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken(ID_END_OF_TEXT, special=True, single_word=True, normalized=False)])
    return tok


def nul_as_end_of_text(tok: Any) -> Any | None:
    """A byte-level BPE with its NUL byte's token renamed `<|endoftext|>` and made special (a normalizer turns a
    NUL in the input into it, so the ids do not change); None when `tok` is not a byte-level BPE, or a merge uses
    the NUL byte (then it is text to this tokenizer)."""
    from tokenizers import AddedToken, Tokenizer, normalizers

    data = json.loads(tok.to_str())
    model, nul = data.get("model") or {}, byte_to_char()[0]
    vocab = model.get("vocab")
    if model.get("type") != "BPE" or not isinstance(vocab, dict) or nul not in vocab or END_OF_TEXT in vocab:
        return None
    if '"ByteLevel"' not in json.dumps(data.get("pre_tokenizer")) or data.get("normalizer") is not None:
        return None
    if any(nul in (merge if isinstance(merge, str) else "".join(merge)) for merge in model.get("merges") or []):
        return None
    vocab[END_OF_TEXT] = vocab.pop(nul)
    out = Tokenizer.from_str(json.dumps(data))
    out.normalizer = normalizers.Replace("\x00", END_OF_TEXT)
    out.add_special_tokens([AddedToken(END_OF_TEXT, special=True, normalized=True)])
    return out


def with_end_of_text(chosen: BundleTokenizer) -> tuple[BundleTokenizer, str | None]:
    """`chosen` with its end-of-text token named (`eos`), given one when it is a kind Composer builds (see the
    module docstring); the note to show when it has none."""
    if chosen.hf is not None:
        return chosen, None if chosen.hf.eos_token_id is not None else (
            "the tokenizer has no end-of-text token: lm-eval's --model hf and generate's stopping need one")
    tok = chosen.tokenizer
    eos = special_tokens(tok).get("eos_token")
    if eos is None and chosen.kind == "ids" and _is_special(tok, ID_END_OF_TEXT):
        eos = ID_END_OF_TEXT
    if eos is None and chosen.kind in ("byte", "bpe"):
        aliased = nul_as_end_of_text(tok)
        if aliased is not None:
            tok, eos = aliased, END_OF_TEXT
    chosen = BundleTokenizer(chosen.kind, chosen.origin, tok, eos=eos)
    note = None if eos is not None else ("the tokenizer has no end-of-text token: lm-eval's --model hf and "
                                         "generate's stopping need one")
    return chosen, note


def _is_special(tok: Any, content: str) -> bool:
    return any(t.content == content and t.special for t in tok.get_added_tokens_decoder().values())


def from_object(obj: Any, origin: str) -> BundleTokenizer:
    """A tokenizer object as Composer's tasks, `tokenizers` or transformers make them."""
    from tokenizers import Tokenizer

    if isinstance(obj, BundleTokenizer):
        return obj
    if type(obj).__name__ == "ByteTokenizer" and getattr(obj, "vocab_size", None) == BYTE_VOCAB:
        return BundleTokenizer("byte", origin, byte_level())   # the text task's bytes
    if hasattr(obj, "save_pretrained") and hasattr(obj, "backend_tokenizer"):
        return BundleTokenizer("pretrained", origin, hf=obj)
    if isinstance(obj, Tokenizer):
        return BundleTokenizer(_kind(obj), origin, obj)
    for attr in ("backend", "tok", "tokenizer", "backend_tokenizer", "hf"):   # wrappers such as the text task's
        inner = getattr(obj, attr, None)
        if inner is not None and inner is not obj:
            return from_object(inner, origin)
    raise UserError(f"cannot write a tokenizer of type {type(obj).__name__}: give a tokenizers.Tokenizer, a "
                    "transformers tokenizer, 'byte', 'ids' or a tokenizer.json", path="tokenizer")


def _kind(tok: Any) -> str:
    if tok.get_vocab_size(with_added_tokens=True) == BYTE_VOCAB and tok.to_str() == byte_level().to_str():
        return "byte"
    return type(tok.model).__name__.lower()


def from_file(path: str | Path) -> BundleTokenizer:
    """A tokenizer.json (or a folder holding one; a folder with a tokenizer_config.json is read by transformers,
    so that its special tokens come along)."""
    from tokenizers import Tokenizer

    path = Path(path)
    folder = path if path.is_dir() else None
    file = path / TOKENIZER_FILE if folder else path
    if not file.is_file():
        raise UserError(f"{file}: no such tokenizer file", path="tokenizer")
    if folder is not None and (folder / CONFIG_FILE).is_file() and not _written_by_composer(folder / CONFIG_FILE):
        try:
            from transformers import AutoTokenizer
        except ImportError:
            pass
        else:
            hf = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)   # a bundle's config names code
            return BundleTokenizer("pretrained", str(folder), hf=hf)
    try:
        tok = Tokenizer.from_file(str(file))
    except Exception as e:  # noqa: BLE001  (tokenizers raises a bare Exception)
        raise UserError(f"{file}: not a tokenizers file ({e})", path="tokenizer") from None
    return BundleTokenizer(_kind(tok), str(file), tok)


def _written_by_composer(config_file: Path) -> bool:
    try:
        return "composer_tokenizer" in json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def named(name: str, vocab_size: int) -> BundleTokenizer:
    if name == "byte":
        return BundleTokenizer("byte", "Composer's byte-level tokenizer", byte_level())
    if name == "ids":
        return BundleTokenizer("ids", "Composer's id tokenizer", id_tokenizer(vocab_size))
    return from_file(name)


def task_tokenizer(task: dict[str, Any], vocab_size: int) -> BundleTokenizer | None:
    """The tokenizer of a task definition ({name, params}); None when the task is not known to Composer."""
    name = str(task.get("name", ""))
    params = task.get("params") or {}
    if name.split(":")[0] in SYNTHETIC_TASKS:
        return BundleTokenizer("ids", f"task {name} (token ids)", id_tokenizer(vocab_size))
    if name != "text":
        return None
    choice = params.get("tokenizer", "byte")
    if choice == "byte":
        return BundleTokenizer("byte", "task text (bytes)", byte_level())
    from composer.tasks import get_task

    try:
        if choice == "bpe":   # trained on the run's text: rebuilt from it (or the cache)
            tokenizer = get_task("text", **params).tokenizer
        else:                 # a pretrained one: a tokenizer.json, a folder or a hub name
            from composer.data.tokenizer import pretrained_tokenizer

            tokenizer = pretrained_tokenizer(str(choice))
    except UserError as e:
        raise UserError(f"cannot rebuild the run's text tokenizer ({choice}): {e}; pass --tokenizer "
                        "(a tokenizer.json)", path="tokenizer") from None
    return from_object(tokenizer, f"task text (tokenizer {choice})")


def choose(given: Any, found: BundleTokenizer | None, vocab_size: int) -> tuple[BundleTokenizer, str | None]:
    """The bundle's tokenizer and a note when it was not recorded by the source (see the module docstring)."""
    note = None
    if given is not None:
        chosen = named(str(given), vocab_size) if isinstance(given, (str, Path)) else from_object(given, "given")
    elif found is not None:
        chosen = found
    elif vocab_size == BYTE_VOCAB:
        chosen = named("byte", vocab_size)
        note = "no tokenizer recorded by the source: the 256-token vocabulary is taken as bytes"
    else:
        chosen = named("ids", vocab_size)
        note = (f"no tokenizer recorded by the source: token ids (vocabulary {vocab_size}); "
                "pass --tokenizer for a text model")
    if chosen.vocab_size > vocab_size:
        raise UserError(f"the tokenizer has {chosen.vocab_size} tokens, more than the model's vocabulary of "
                        f"{vocab_size}", path="tokenizer")
    chosen, missing = with_end_of_text(chosen)
    notes = [n for n in (note, missing) if n]
    return chosen, "; ".join(notes) if notes else None


def write(bundle_tokenizer: BundleTokenizer, folder: Path, model_max_length: int) -> None:
    """Write the tokenizer files into `folder`."""
    if bundle_tokenizer.hf is not None:
        bundle_tokenizer.hf.save_pretrained(str(folder))
        return
    tok = bundle_tokenizer.tokenizer
    (folder / TOKENIZER_FILE).write_text(tok.to_str(pretty=True), encoding="utf-8")
    special = special_tokens(tok, bundle_tokenizer.eos)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model_max_length,
              "clean_up_tokenization_spaces": False, "composer_tokenizer": bundle_tokenizer.kind, **special}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    if special:
        (folder / SPECIAL_TOKENS_FILE).write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")


def special_tokens(tok: Any, eos: str | None = None) -> dict[str, Any]:
    """The special tokens of a `tokenizers.Tokenizer` as transformers names them (`eos`, else an end-of-text
    spelling, is the eos token; the others are additional special tokens). transformers takes each token's
    matching rules (a whole word only, ...) from tokenizer.json."""
    names = [t.content for _, t in sorted(tok.get_added_tokens_decoder().items()) if t.special]
    out: dict[str, Any] = {}
    eos = eos if eos in names else next((n for n in names if n in EOS_SPELLINGS), None)
    if eos is not None:
        out["eos_token"] = eos
    others = [n for n in names if n != eos]
    if others:
        out["additional_special_tokens"] = others
    return out
