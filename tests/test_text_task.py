"""The text task's data and tokenizers: pretrained tokenizers and the vocabulary check, streamed datasets with
`max_chars`, the cache folder, the validation split, repeated-data warnings, and one UserError naming the file
for every bad data file. Offline: tokenizers are built here with `tokenizers`, data files are generated."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from composer.cli import main as cli_main
from composer.data import hub
from composer.data.text_source import load_text
from composer.data.tokenizer import cache_dir
from composer.errors import UserError
from composer.tasks import DataRepeatWarning, get_task

SHAKESPEARE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "tinyshakespeare.txt"
LINES = "".join(f"line {i}: the quick brown fox jumps over the lazy dog, {i % 7} times.\n" for i in range(400))


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No test here may reach the network, nor write a cache outside tmp_path."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("COMPOSER_CACHE", str(tmp_path / "cache"))


def small_tokenizer(path: Path, vocab_size: int = 300) -> int:
    """Train a byte-level BPE on LINES with `tokenizers` and save it as a tokenizer.json; its vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([LINES], trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.enable_truncation(16)          # a saved truncation setting must not cut the token stream
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return tok.get_vocab_size()


def text_file(tmp_path: Path, text: str = LINES, name: str = "a.txt") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# -- pretrained tokenizers ----------------------------------------------------------------------------------
def test_tokenizer_json_file(tmp_path):
    vocab = small_tokenizer(tmp_path / "tok" / "tokenizer.json")
    task = get_task("text", data=text_file(tmp_path), seq_len=16, tokenizer=str(tmp_path / "tok" / "tokenizer.json"))
    assert task.vocab_size == vocab == 300
    train_text = LINES[: int(len(LINES) * 0.95)]
    assert task.tokenizer.decode(task.train_tokens) == train_text          # the whole split, not truncated
    assert len(task.train_tokens) < len(train_text.encode()) / 2           # real merges, not bytes
    assert task.params()["tokenizer"] == str(tmp_path / "tok" / "tokenizer.json")
    folder = get_task("text", data=text_file(tmp_path), seq_len=16, tokenizer=str(tmp_path / "tok"))
    assert torch.equal(folder.train_tokens, task.train_tokens)


def test_tokenizer_saved_by_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    small_tokenizer(tmp_path / "raw" / "tokenizer.json")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "raw" / "tokenizer.json"))
    fast.save_pretrained(tmp_path / "saved")
    task = get_task("text", data=text_file(tmp_path), seq_len=16, tokenizer=str(tmp_path / "saved"))
    assert task.vocab_size == len(fast)
    assert task.train_tokens[:20].tolist() == fast(LINES[:200])["input_ids"][:20]


def test_spec_vocab_must_match_the_tokenizer(tmp_path):
    small_tokenizer(tmp_path / "tokenizer.json")
    task = get_task("text", data=text_file(tmp_path), seq_len=16, tokenizer=str(tmp_path / "tokenizer.json"))
    assert task.model_vocab_size(300) == 300
    with pytest.raises(UserError, match="vocab_size is 256 but .* has 300 tokens; set vocab_size: 300") as e:
        task.model_vocab_size(256)
    assert e.value.path == "vocab_size"
    assert get_task("mqar", vocab_size=64, seq_len=32, kv_pairs=4).model_vocab_size(256) == 64   # task sets it


def test_tokenizer_errors(tmp_path):
    data = text_file(tmp_path)
    with pytest.raises(UserError, match="no such tokenizer file or folder") as e:
        get_task("text", data=data, tokenizer=str(tmp_path / "missing.json"))
    assert e.value.path == "tokenizer"
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(UserError, match="has no tokenizer.json"):
        get_task("text", data=data, tokenizer=str(tmp_path / "empty_dir"))
    with pytest.raises(UserError, match="did you mean 'bpe'"):
        get_task("text", data=data, tokenizer="BPE")
    with pytest.raises(UserError, match="expected a file, folder, glob or dataset name"):
        get_task("text", data=["a.txt"])
    (tmp_path / "broken.json").write_text('{"model": 3}')
    with pytest.raises(UserError, match="broken.json is not a tokenizer"):
        get_task("text", data=data, tokenizer=str(tmp_path / "broken.json"))


def test_hub_tokenizer_offline_says_how_to_use_a_local_file(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(UserError, match="HF_HUB_OFFLINE is set.*tokenizer: path/to/tokenizer.json") as e:
        get_task("text", data=text_file(tmp_path), tokenizer="composer-test/no-such-tokenizer")
    assert "\n" not in str(e.value)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.setattr(hub.socket, "getaddrinfo", lambda *a: (_ for _ in ()).throw(OSError("no dns")))
    with pytest.raises(UserError, match=r"\(no network: huggingface.co cannot be resolved\); on a machine"):
        get_task("text", data=text_file(tmp_path), tokenizer="gpt2")


def test_hub_tokenizer_from_the_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    repo = tmp_path / "hf" / "models--someone--tok"
    small_tokenizer(repo / "snapshots" / "abc123" / "tokenizer.json")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    task = get_task("text", data=text_file(tmp_path), seq_len=16, tokenizer="someone/tok")
    assert task.vocab_size == 300


# -- bpe: exact size, cache folder --------------------------------------------------------------------------
def test_bpe_is_exactly_the_size_asked_for(tmp_path):
    data = text_file(tmp_path)
    assert get_task("text", data=data, seq_len=16, tokenizer="bpe", bpe_vocab_size=300).vocab_size == 300
    with pytest.raises(UserError, match=r"yields only (\d+) BPE tokens, fewer than bpe_vocab_size 4096") as e:
        get_task("text", data=data, seq_len=16, tokenizer="bpe", bpe_vocab_size=4096)
    assert e.value.path == "bpe_vocab_size"
    recorded = get_task("text", data=data, seq_len=16, tokenizer="bpe", bpe_vocab_size=300, max_chars=9000).params()
    assert (recorded["bpe_vocab_size"], recorded["max_chars"]) == (300, 9000)
    with pytest.raises(UserError, match="more than 256"):
        get_task("text", data=data, seq_len=16, tokenizer="bpe", bpe_vocab_size=256)


def test_bpe_cache_is_in_the_user_cache_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = text_file(tmp_path)
    get_task("text", data=data, seq_len=16, tokenizer="bpe", bpe_vocab_size=300)
    assert len(list((tmp_path / "cache").glob("bpe-300-*.json"))) == 1
    assert not (tmp_path / "runs").exists()
    monkeypatch.delenv("COMPOSER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "composer"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "composer"
    get_task("text", data=data, seq_len=16, tokenizer="bpe", bpe_vocab_size=300)
    assert len(list((tmp_path / "home" / ".cache" / "composer").glob("bpe-300-*.json"))) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "cache", "home"]     # nothing in the cwd


# -- datasets: streaming, max_chars, split --------------------------------------------------------------------
def test_jsonl_documents_and_max_chars(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": f"document {i}", "id": i}) + "\n" for i in range(50)))
    assert load_text(path) == "".join(f"document {i}\n" for i in range(50))
    assert load_text(path, max_chars=25) == "document 0\ndocument 1\ndoc"
    array = tmp_path / "array.json"
    array.write_text(json.dumps([{"body": "first"}, {"body": "second"}]))
    assert load_text(array, text_field="body") == "first\nsecond\n"


def test_text_files_keep_line_breaks_and_max_chars_stops_reading(tmp_path):
    (tmp_path / "a.txt").write_text("one\n\ntwo  \nthree")
    (tmp_path / "b.jsonl").write_text('{"text": "x"\n')                 # malformed, read only when reached
    assert load_text(tmp_path / "a.txt") == "one\n\ntwo  \nthree"
    assert load_text(tmp_path, max_chars=8) == "one\n\ntwo"
    with pytest.raises(UserError, match="b.jsonl could not be read as json"):
        load_text(tmp_path)


def test_folder_of_files_in_sorted_order(tmp_path):
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first")
    assert load_text(tmp_path) == "first\nsecond"
    assert load_text(str(tmp_path / "*.txt")) == "first\nsecond"


def test_hub_dataset_offline_and_split_for_local_files(tmp_path):
    with pytest.raises(UserError, match="'someone/corpus' is not a local file or folder, and the Hugging Face hub "
                                        "cannot be reached"):
        get_task("text", data="someone/corpus", max_chars=1000)
    with pytest.raises(UserError, match="local files form one split") as e:
        get_task("text", data=text_file(tmp_path), split="validation")
    assert e.value.path == "split"
    with pytest.raises(UserError) as e:
        get_task("text", data=text_file(tmp_path), max_chars=0)
    assert e.value.path == "max_chars"


def test_hub_dataset_is_streamed_from_its_split(tmp_path, monkeypatch):
    """The hub path asks `datasets` for a streamed split and stops at max_chars (a local stand-in here)."""
    import datasets

    calls = []
    real = datasets.load_dataset
    local = tmp_path / "hub.jsonl"
    local.write_text("".join(json.dumps({"text": "x" * 10}) + "\n" for _ in range(10_000)))

    def fake(name, config=None, **kwargs):
        calls.append((name, config, kwargs))
        return real("json", data_files=[str(local)], split="train", streaming=True)

    monkeypatch.setattr(datasets, "load_dataset", fake)
    monkeypatch.setattr("composer.data.text_source.offline_reason", lambda: None)
    text = load_text("someone/corpus", dataset_config="small", split="validation", max_chars=1000)
    assert text == ("x" * 10 + "\n") * 90 + "x" * 10
    assert calls == [("someone/corpus", "small", {"split": "validation", "streaming": True})]


# -- the validation split -----------------------------------------------------------------------------------
@pytest.mark.parametrize("n, cut", [(1000, 900), (1005, 904), (1111, 999)])
def test_validation_is_the_last_tenth(tmp_path, n, cut):
    text = "".join(chr(ord("a") + i % 26) if i % 50 else "\n" for i in range(n))
    task = get_task("text", data=text_file(tmp_path, text), seq_len=16, val_fraction=0.1)
    assert cut == int(n * 0.9)                                            # nanoGPT: data[:int(n * 0.9)] trains
    assert task.tokenizer.decode(task.train_tokens) == text[:cut]
    assert task.tokenizer.decode(task.val_tokens) == text[cut:]


@pytest.mark.skipif(not SHAKESPEARE.is_file(), reason="../shared/data/tinyshakespeare.txt not present")
def test_tiny_shakespeare_split_as_nanogpt():
    task = get_task("text", data=str(SHAKESPEARE), seq_len=64, val_fraction=0.1)
    assert (len(task.train_tokens), len(task.val_tokens)) == (1_003_854, 111_540)     # nanoGPT's numbers
    assert task.tokenizer.decode(task.train_tokens[:14]) == "First Citizen:"


# -- repeated data ------------------------------------------------------------------------------------------
def test_warns_when_training_repeats_the_data(tmp_path):
    task = get_task("text", data=text_file(tmp_path), seq_len=16)
    per_pass = len(task.train_tokens)
    assert task.tokens_per_pass() == per_pass
    with pytest.warns(DataRepeatWarning, match=rf"3\.0 passes over the {per_pass:,}-token training split"):
        assert task.warn_if_repeated(3 * per_pass) == 3.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert task.warn_if_repeated(per_pass) == 1.0                      # one pass is not a repeat
        assert get_task("mqar", vocab_size=64, seq_len=32, kv_pairs=4).warn_if_repeated(10**12) is None


# -- bad data files: one UserError naming the file ----------------------------------------------------------
BAD_FILES = {
    "empty.txt": (b"", "empty.txt is empty"),
    "blank.jsonl": (b'{"text": ""}\n', "blank.jsonl holds no text in column 'text'"),
    "binary.txt": (bytes(range(256)) * 4, "binary.txt looks binary"),
    "nul.txt": (b"hello\x00world\n", "nul.txt looks binary"),
    "utf16.txt": ("hello world\n".encode("utf-16"), r"utf16.txt looks binary.*UTF-16\? convert it"),
    "latin1.txt": ("caf\u00e9 au lait\n".encode("latin-1"),
                   r"latin1.txt is not UTF-8 text \(byte 0xe9 at offset 3\).*iconv -f latin1 -t utf-8"),
    "bad.jsonl": (b'{"text": "a"}\n{"text": "b"\n', "bad.jsonl could not be read as json"),
    "bad.json": (b"[1, 2", "bad.json could not be read as json"),
    "nocol.jsonl": (b'{"body": "a"}\n', r"nocol.jsonl has no column 'text' \(columns: body\)"),
    "ints.jsonl": (b'{"text": 3}\n', "column 'text' of .*ints.jsonl holds int values"),
    "notes.csv": (b"a,b\n", "notes.csv: not a data file"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_data_file_is_one_error_naming_it(tmp_path, name):
    content, message = BAD_FILES[name]
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError, match=message) as e:
        get_task("text", data=str(tmp_path / name), seq_len=8)
    assert str(tmp_path / name) in str(e.value) and "\n" not in str(e.value)


def test_latin1_far_into_a_file_gives_the_exact_offset(tmp_path):
    path = tmp_path / "long.txt"
    path.write_bytes(("\u00e9" * 700_000).encode() + b"x\xe9y")        # past the first 1 MiB read
    with pytest.raises(UserError, match=r"byte 0xe9 at offset 1400001"):
        load_text(path)


def test_missing_and_folder_errors(tmp_path):
    with pytest.raises(UserError, match="no such file or folder: .*missing.txt$"):
        load_text(tmp_path / "missing.txt")
    with pytest.raises(UserError, match=r"no such file or folder: gone/x.txt \(a relative path is read from the "
                                        r"working directory, /"):
        load_text("gone/x.txt")
    with pytest.raises(UserError, match="no such file or folder"):
        load_text(tmp_path / "no" / "dir")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="the folder .*empty holds no data files"):
        load_text(tmp_path / "empty")
    with pytest.raises(UserError, match="no files match"):
        load_text(str(tmp_path / "*.txt"))
    with pytest.raises(UserError, match="/dev/null is not a regular file or folder"):
        load_text("/dev/null")


def test_cli_bad_data_file_is_one_error_line(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("d_model: 16\nlayers: [mlp]\n")
    for name in ("latin1.txt", "binary.txt", "bad.jsonl", "empty.txt"):
        (tmp_path / name).write_bytes(BAD_FILES[name][0])
        code = cli_main(["train", str(spec), "--task", "text", "--data", str(tmp_path / name), "--steps", "1"])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: data: ") and err.count("\n") == 1, err
        assert str(tmp_path / name) in err


# -- the trainer's use of both ------------------------------------------------------------------------------
def test_trainer_checks_the_vocabulary_and_warns_on_repeats(tmp_path):
    from composer.trainer import fit_spec, train

    task = get_task("text", data=text_file(tmp_path), seq_len=16, tokenizer="bpe", bpe_vocab_size=300)
    spec = {"d_model": 16, "layers": ["mlp"]}
    with pytest.raises(UserError, match="the spec's vocab_size is 256 but the text task's tokenizer 'bpe' has 300"):
        fit_spec(spec, task)
    assert fit_spec({**spec, "vocab_size": 300}, task).vocab_size == 300
    passes = 40 * 32 * 16 / len(task.train_tokens)
    with pytest.warns(DataRepeatWarning, match=f"makes {passes:.1f} passes"):
        result = train({**spec, "vocab_size": 300}, task, 40, batch_size=32, threads=1, eval_every=40)
    assert result.status == "completed"
    assert fit_spec(spec, get_task("mqar", vocab_size=64, seq_len=32, kv_pairs=4)).vocab_size == 64


def test_recorded_params_rebuild_the_task():
    task = get_task("text", seq_len=32, val_fraction=0.1, max_chars=50_000)
    given = {k: v for k, v in task.params().items() if k not in ("vocab_size", "train_tokens", "val_tokens")}
    assert given["data"] == "sample"
    assert torch.equal(get_task("text", **given).train_tokens, task.train_tokens)
