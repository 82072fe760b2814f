"""The text of the `text` task, read through Hugging Face `datasets` in streaming mode (nothing is converted or
cached on disk, and reading stops after `max_chars` characters).

`data` is a local file, a folder (every file in it) or a glob, read one file at a time in sorted order with
the builder of its kind: `text` for .txt/.text/.md (lines with their line breaks kept, so the text is the
file's own), `json` for .json/.jsonl and `parquet` for .parquet (one document per record, from the
`text_field` column, each ending with a line break). Anything else that looks like `name` or `owner/name`
is a hub dataset, streamed from its named `split`; local files form one split.

Every failure is one UserError naming the file: missing, a folder without files, an unknown kind, empty,
binary, not UTF-8 (with the command that converts it), malformed JSON, no `text_field` column, or a hub
dataset while the hub cannot be reached.
"""

from __future__ import annotations

import codecs
import contextlib
import glob
import logging
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from composer.data.hub import offline_reason
from composer.errors import UserError

SAMPLE = Path(__file__).resolve().parent / "sample.txt"
BUILDERS = {".txt": "text", ".text": "text", ".md": "text", ".json": "json", ".jsonl": "json",
            ".parquet": "parquet"}
BATCH_ROWS = 1000
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def load_text(data: str | os.PathLike | None = None, text_field: str = "text", dataset_config: str | None = None,
              split: str = "train", max_chars: int | None = None) -> str:
    """The text of `data` (default, or "sample": the shipped sample), at most `max_chars` characters; see the module
    docstring."""
    path = str(SAMPLE) if data is None or data == "sample" else str(data)
    files = local_files(path)
    if files is None:
        pieces: Iterable[str] = hub_pieces(path, dataset_config, split, text_field)
    else:
        if split != "train":
            raise UserError(f"local files form one split, so `split` does not apply (got {split!r}); the "
                            "validation text is the last `val_fraction` of the text", path="split")
        pieces = files_pieces(files, text_field)
    text = take_chars(pieces, max_chars)
    if not text.strip():
        raise UserError(f"no text in {path!r}", path="data")
    return text


def take_chars(pieces: Iterable[str], max_chars: int | None) -> str:
    """The pieces joined, cut at `max_chars`; stops reading as soon as there are enough."""
    out, count = [], 0
    for piece in pieces:
        out.append(piece)
        count += len(piece)
        if max_chars is not None and count >= max_chars:
            break
    text = "".join(out)
    return text if max_chars is None else text[:max_chars]


# -- local files -------------------------------------------------------------------------------------------
def local_files(path: str) -> list[str] | None:
    """The data files `path` names (sorted), or None when it is a hub dataset name."""
    p = Path(path).expanduser()
    if p.is_dir():
        files = sorted(str(f) for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
        if not files:
            raise UserError(f"the folder {path} holds no data files", path="data")
    elif p.is_file():
        files = [str(p)]
    elif p.exists():
        raise UserError(f"{path} is not a regular file or folder", path="data")
    elif any(c in path for c in "*?["):
        files = sorted(f for f in glob.glob(str(p)) if os.path.isfile(f))
        if not files:
            raise UserError(f"no files match {path!r}", path="data")
    elif HUB_NAME.fullmatch(path) and Path(path).suffix.lower() not in BUILDERS:
        return None
    else:
        where = "" if p.is_absolute() else f" (a relative path is read from the working directory, {os.getcwd()})"
        raise UserError(f"no such file or folder: {path}{where}", path="data")
    for f in files:
        if Path(f).suffix.lower() not in BUILDERS:
            raise UserError(f"{f}: not a data file; expected a name ending in {', '.join(BUILDERS)}", path="data")
        if not os.access(f, os.R_OK):
            raise UserError(f"{f}: permission denied", path="data")
    return files


def files_pieces(files: list[str], text_field: str) -> Iterator[str]:
    """The text of each file in turn, with a line break between files when one does not end with one."""
    previous = ""
    for f in files:
        if previous and not previous.endswith("\n"):
            yield "\n"
        for previous in file_pieces(f, text_field):
            yield previous


def file_pieces(file: str, text_field: str) -> Iterator[str]:
    """The text of one file in pieces (lines, or documents ending with a line break)."""
    builder = BUILDERS[Path(file).suffix.lower()]
    if os.path.getsize(file) == 0:
        raise UserError(f"{file} is empty", path="data")
    options = {"keep_linebreaks": True} if builder == "text" else {}
    chars = 0
    with quiet_datasets():
        import datasets

        try:
            dataset = datasets.load_dataset(builder, data_files=[file], split="train", streaming=True, **options)
            for batch in dataset.iter(batch_size=BATCH_ROWS):
                for text in column(batch, text_field, file):
                    if "\x00" in text:
                        raise undecodable(file)
                    chars += len(text)
                    yield text if builder == "text" else document(text)
        except UserError:
            raise
        except UnicodeDecodeError as e:
            raise undecodable(file) from e
        except Exception as e:   # pyarrow and datasets raise many kinds for a malformed file
            raise UserError(f"{file} could not be read as {builder}: {one_line(e)}", path="data") from e
    if chars == 0:
        raise UserError(f"{file} holds no text" + ("" if builder == "text" else f" in column {text_field!r}"),
                        path="data")


def undecodable(file: str) -> UserError:
    """The error for a file that is not UTF-8 text: binary (NUL bytes) or in another encoding."""
    with open(file, "rb") as f:
        head = f.read(8192)
    offset, byte = first_bad_byte(file) or (0, 0)
    if byte == 0 or b"\x00" in head:
        utf16 = "; UTF-16? convert it: iconv -f utf-16 -t utf-8" if head[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        return UserError(f"{file} looks binary (NUL bytes), not UTF-8 text{utf16}", path="data")
    fixed = Path(file).with_name(f"{Path(file).stem}.utf8{Path(file).suffix}")
    return UserError(f"{file} is not UTF-8 text (byte 0x{byte:02x} at offset {offset}); text data must be UTF-8: "
                     f"convert it first, e.g. from Latin-1: iconv -f latin1 -t utf-8 {file} > {fixed}", path="data")


def first_bad_byte(file: str) -> tuple[int, int] | None:
    """(offset, value) of the first byte of `file` that is a NUL or not valid UTF-8; None when there is none."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(file, "rb") as f:
        while chunk := f.read(1 << 20):
            pending = len(decoder.getstate()[0])
            nul = chunk.find(b"\x00")
            try:
                decoder.decode(chunk if nul < 0 else chunk[:nul])
            except UnicodeDecodeError as e:      # e.object is the pending bytes + this chunk
                return offset - pending + e.start, e.object[e.start]
            if nul >= 0:
                return offset + nul, 0
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as e:
        return offset - len(e.object) + e.start, e.object[e.start]
    return None


def column(batch: dict[str, list[Any]], text_field: str, source: str) -> Iterator[str]:
    """The non-empty strings of a batch's `text_field` column."""
    if text_field not in batch:
        raise UserError(f"{source} has no column {text_field!r} (columns: {', '.join(batch) or 'none'}); set "
                        "text_field", path="text_field")
    for value in batch[text_field]:
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise UserError(f"column {text_field!r} of {source} holds {type(value).__name__} values, not text",
                            path="text_field")
        yield value


def document(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


# -- hub datasets ------------------------------------------------------------------------------------------
def hub_pieces(name: str, dataset_config: str | None, split: str, text_field: str) -> Iterator[str]:
    """The documents of a hub dataset's `split`, streamed."""
    reason = offline_reason()
    if reason:
        raise UserError(f"{name!r} is not a local file or folder, and the Hugging Face hub cannot be reached "
                        f"({reason}); give a local file or folder ({', '.join(BUILDERS)})", path="data")
    with quiet_datasets():
        import datasets

        try:
            dataset = datasets.load_dataset(name, dataset_config, split=split, streaming=True)
            for batch in dataset.iter(batch_size=BATCH_ROWS):
                for text in column(batch, text_field, name):
                    yield document(text)
        except UserError:
            raise
        except Exception as e:   # datasets raises many kinds for a missing dataset, config or split
            raise UserError(f"could not stream dataset {name!r} (split {split!r}): {one_line(e)}",
                            path="data") from e


@contextlib.contextmanager
def quiet_datasets() -> Iterator[None]:
    """No progress bars or error logs from `datasets` (its failures become one UserError here)."""
    import datasets  # first: its first import sets the level of its logger

    logger = logging.getLogger("datasets")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        datasets.disable_progress_bars()
        yield
    finally:
        logger.setLevel(level)


def one_line(error: BaseException, limit: int = 300) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= limit else text[:limit] + "..."
