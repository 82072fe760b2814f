"""Every bundle carries its tokenizer (tokenizer.json + tokenizer_config.json), so Hugging Face's AutoTokenizer
and text-generation pipeline work on it; the model card has Hugging Face's metadata and a readable table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from test_export_bundle import SPEC, fake_run

from composer import HybridLM, UserError, load_spec
from composer.export import export
from composer.export.tokenizer import byte_level, byte_to_char, id_tokenizer

QUIET = {"progress": lambda *_: None}
SHAKESPEARE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "tinyshakespeare.txt"
SAMPLES = ["Hello, world!", "tab\tnewline\n\x00\x7f", "wörld café naïve", "☃ 雪 𝄞 🙂", "".join(map(chr, range(128, 2048)))]
BYTE_SPEC = {"name": "bytes", "d_model": 32, "vocab_size": 256, "max_seq_len": 64,
             "layers": ["attention", "mlp", "gated_deltanet", "mlp"]}


def byte_task_tokenizer():
    from composer.tasks import get_task

    data = SHAKESPEARE if SHAKESPEARE.is_file() else None
    return get_task("text", data=str(data) if data else None, seq_len=32).tokenizer


def texts() -> list[str]:
    out = list(SAMPLES)
    if SHAKESPEARE.is_file():
        out.append(SHAKESPEARE.read_text(encoding="utf-8")[:20_000])
    return out


def test_byte_level_tokenizer_is_the_text_tasks_bytes():
    from tokenizers import pre_tokenizers

    task_tokenizer = byte_task_tokenizer()
    tok = byte_level()
    assert set(byte_to_char().values()) == set(pre_tokenizers.ByteLevel.alphabet())
    alphabet = list(byte_to_char().values())
    assert tok.get_vocab_size(with_added_tokens=True) == 256
    assert [tok.id_to_token(i) for i in range(256)] == ["<|endoftext|>", *alphabet[1:]]   # NUL: end of text
    for text in texts():
        ids = tok.encode(text).ids
        assert ids == task_tokenizer.encode(text).tolist() == list(text.encode("utf-8"))
        assert tok.decode(ids, skip_special_tokens=False) == text.replace("\x00", "<|endoftext|>")
        assert tok.decode(ids) == text.replace("\x00", "")
    assert tok.encode("a<|endoftext|>b").ids == [97, 0, 98]
    broken = [0xFF, 0x41, 0xE2, 0x98, 0xC3, 0xA9]   # invalid UTF-8 decodes as the task decodes it
    assert tok.decode(broken) == task_tokenizer.decode(broken)


def test_id_tokenizer_writes_ids_as_numbers():
    tok = id_tokenizer(40)
    assert tok.encode("3 17  5\n39").ids == [3, 17, 5, 39]
    assert tok.decode([3, 17, 5]) == "3 17 5"
    assert tok.get_vocab_size(with_added_tokens=True) == 40 and tok.encode("10 0 30 0").ids == [10, 0, 30, 0]
    assert tok.decode([10, 0, 30], skip_special_tokens=False) == "10 0 30"     # 0: the end-of-text token


def test_every_bundle_tokenizer_composer_builds_has_an_end_of_text_token(tmp_path):
    """lm-eval's --model hf and generate need one; the vocabulary has no spare id, so one the data never holds
    doubles as it; generation_config.json names it."""
    for name, spec, eos, eos_id in (("byte", BYTE_SPEC, "<|endoftext|>", 0), ("ids", SPEC, "0", 0)):
        result = export(HybridLM(load_spec(spec)), tmp_path / name, tokenizer=name, **QUIET)
        assert result.tokenizer == name
        assert json.loads((tmp_path / name / "tokenizer_config.json").read_text())["eos_token"] == eos
        assert json.loads((tmp_path / name / "special_tokens_map.json").read_text()) == {"eos_token": eos}
        assert json.loads((tmp_path / name / "generation_config.json").read_text()) == {"eos_token_id": eos_id,
                                                                                        "pad_token_id": eos_id}
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert (config["eos_token_id"], config["pad_token_id"], config["bos_token_id"]) == (eos_id, eos_id, None)
    bare = tmp_path / "bare.json"       # a tokenizer of the user's without one: written as it is, with a note
    bare.write_text(json.dumps({**json.loads(id_tokenizer(40).to_str()), "added_tokens": []}))
    notes = []
    export(HybridLM(load_spec(SPEC)), tmp_path / "foreign", tokenizer=str(bare), progress=notes.append)
    assert any("the tokenizer has no end-of-text token" in n for n in notes)
    assert json.loads((tmp_path / "foreign" / "generation_config.json").read_text()) == {}


def test_a_byte_level_bpe_gets_its_nul_byte_as_end_of_text(tmp_path, monkeypatch):
    from tokenizers import Tokenizer

    from composer.tasks import get_task

    monkeypatch.setenv("COMPOSER_CACHE", str(tmp_path / "cache"))
    (tmp_path / "corpus.txt").write_text(" ".join(f"word{i % 97} token{i % 31}" for i in range(6000)))
    task = get_task("text", data=str(tmp_path / "corpus.txt"), seq_len=16, tokenizer="bpe", bpe_vocab_size=300)
    export(HybridLM(load_spec({**BYTE_SPEC, "vocab_size": 300})), tmp_path / "b", tokenizer=task.tokenizer, **QUIET)
    saved = Tokenizer.from_file(str(tmp_path / "b" / "tokenizer.json"))
    nul = task.tokenizer.encode("\x00").tolist()
    assert saved.token_to_id("<|endoftext|>") == nul[0] and saved.get_vocab_size(with_added_tokens=True) == 300
    sample = "word3 token7 word96\x00word1"
    assert saved.encode(sample).ids == task.tokenizer.encode(sample).tolist()


def files(folder):
    return {p.name for p in folder.iterdir()}


def test_every_bundle_carries_a_tokenizer(tmp_path):
    spec_file = tmp_path / "arch.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    result = export(spec_file, tmp_path / "ids", **QUIET)          # vocabulary 40: token ids
    assert result.tokenizer == "ids" and {"tokenizer.json", "tokenizer_config.json"} <= files(tmp_path / "ids")
    config = json.loads((tmp_path / "ids" / "config.json").read_text())
    assert config["tokenizer"]["kind"] == "ids" and config["tokenizer"]["vocab_size"] == 40
    assert "pass --tokenizer for a text model" in (tmp_path / "ids" / "README.md").read_text()
    byte_spec = tmp_path / "bytes.yaml"
    byte_spec.write_text(yaml.safe_dump(BYTE_SPEC))
    assert export(byte_spec, tmp_path / "bytes", **QUIET).tokenizer == "byte"
    with pytest.raises(UserError, match="the tokenizer has 256 tokens, more than the model's vocabulary of 40"):
        export(spec_file, tmp_path / "bad", tokenizer="byte", **QUIET)
    assert not (tmp_path / "bad").exists()


def test_run_bundles_take_the_runs_tokenizer(tmp_path):
    run = fake_run(tmp_path)
    (run / "space.yaml").write_text(yaml.safe_dump({"task": {"name": "mqar", "params": {"vocab_size": 40}}}))
    export(run, tmp_path / "mqar", **QUIET)
    config = json.loads((tmp_path / "mqar" / "config.json").read_text())
    assert config["tokenizer"]["kind"] == "ids" and config["task"]["name"] == "mqar"
    assert "not recorded" not in (tmp_path / "mqar" / "README.md").read_text()
    saved = id_tokenizer(30)   # a tokenizer.json saved in the run wins over the task
    saved.save(str(run / "tokenizer.json"))
    export(run, tmp_path / "saved", **QUIET)
    assert json.loads((tmp_path / "saved" / "tokenizer.json").read_text()) == json.loads(saved.to_str())


def test_a_tasks_bpe_tokenizer_travels_with_the_bundle(tmp_path, monkeypatch):
    from composer.tasks import get_task

    monkeypatch.setenv("COMPOSER_CACHE", str(tmp_path / "cache"))
    text = (SHAKESPEARE.read_text(encoding="utf-8")[:30_000] if SHAKESPEARE.is_file()
            else " ".join(f"word{i % 97} token{i % 31}" for i in range(6000)))
    (tmp_path / "corpus.txt").write_text(text)
    task = get_task("text", data=str(tmp_path / "corpus.txt"), seq_len=16, tokenizer="bpe", bpe_vocab_size=300)
    spec = load_spec({**BYTE_SPEC, "vocab_size": task.vocab_size})
    export(HybridLM(spec), tmp_path / "b", tokenizer=task.tokenizer, **QUIET)
    from tokenizers import Tokenizer

    saved = Tokenizer.from_file(str(tmp_path / "b" / "tokenizer.json"))
    sample = text[-2000:]
    assert saved.encode(sample).ids == task.tokenizer.encode(sample).tolist()
    assert json.loads((tmp_path / "b" / "config.json").read_text())["tokenizer"]["kind"] == "bpe"


def test_model_card_front_matter_and_metrics_table(tmp_path):
    run = fake_run(tmp_path)
    (run / "space.yaml").write_text(yaml.safe_dump({"task": {"name": "text", "params": {
        "data": "roneneldan/TinyStories", "tokenizer": "byte", "seq_len": 64}}}))
    (run / "leaderboard.csv").write_text("trial,status,arch_id,params_json,val_loss,accuracy,tokens,train_time_s,"
                                         "params\n7,completed,abc,\"{\"\"a\"\": 1}\",1.25,0.5,1234567,12.5,1000\n")
    with pytest.raises(UserError, match="the tokenizer has 256 tokens"):   # the run's spec says 40 tokens
        export(run, tmp_path / "b", **QUIET)
    export(run, tmp_path / "b", tokenizer="ids", **QUIET)
    card = (tmp_path / "b" / "README.md").read_text()
    assert card.startswith("---\n")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert {"composer", "custom_code", "attention", "mlp", "text"} <= set(meta["tags"])
    assert meta["datasets"] == ["roneneldan/TinyStories"]
    assert meta["metrics"] == ["val_loss", "accuracy"]
    table = card.split("## Metrics it was selected on")[1].split("##")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split(" | ")[0][2:] for r in rows] == ["val_loss", "accuracy", "tokens", "train_time_s"]
    assert "| tokens | 1,234,567 |" in table and "params_json" not in card and "| status" not in card
    assert "trained on: `text` (data=roneneldan/TinyStories, seq_len=64, tokenizer=byte)" in card


# -- with transformers: AutoTokenizer and the text-generation pipeline -------------------------------------

@pytest.mark.slow  # imports transformers and loads remote code
def test_auto_tokenizer_and_pipeline(tmp_path):
    transformers = pytest.importorskip("transformers")
    task_tokenizer = byte_task_tokenizer()
    torch.manual_seed(4)
    model = HybridLM(load_spec(BYTE_SPEC)).eval()
    export(model, tmp_path / "b", tokenizer=task_tokenizer, **QUIET)
    bundle = str(tmp_path / "b")
    for kwargs in ({}, {"trust_remote_code": True}):
        tok = transformers.AutoTokenizer.from_pretrained(bundle, **kwargs)
        for text in SAMPLES:
            ids = tok(text)["input_ids"]
            assert ids == task_tokenizer.encode(text).tolist()
            assert tok.decode(ids) == text.replace("\x00", "<|endoftext|>")     # NUL is the end-of-text token
        assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == 0 and tok.bos_token is None
    generate = transformers.pipeline("text-generation", model=bundle, trust_remote_code=True)
    prompt = "To be, or not to be"
    out = generate(prompt, max_new_tokens=12, do_sample=False)[0]["generated_text"]
    expected = model.generate(task_tokenizer.encode(prompt)[None], 12, temperature=0)[0]
    assert out == task_tokenizer.decode(expected) and len(out) > len(prompt)


def test_special_tokens_are_written_for_transformers(tmp_path):
    from tokenizers import AddedToken

    tok = id_tokenizer(40)
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True), AddedToken("<pad>", special=True)])
    spec = load_spec({**SPEC, "vocab_size": 42})
    export(HybridLM(spec), tmp_path / "b", tokenizer=tok, **QUIET)
    config = json.loads((tmp_path / "b" / "tokenizer_config.json").read_text())
    special = json.loads((tmp_path / "b" / "special_tokens_map.json").read_text())
    assert special == {"eos_token": "<|endoftext|>", "additional_special_tokens": ["0", "<pad>"]}
    assert config["eos_token"] == "<|endoftext|>" and config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert config["model_max_length"] == spec.max_seq_len


@pytest.mark.slow  # imports transformers
def test_a_transformers_tokenizer_folder_keeps_its_special_tokens(tmp_path):
    transformers = pytest.importorskip("transformers")
    from tokenizers import AddedToken

    tok = id_tokenizer(40)
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True)])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    fast.save_pretrained(str(tmp_path / "hf_tok"))
    result = export(HybridLM(load_spec({**SPEC, "vocab_size": 41})), tmp_path / "b", tokenizer=tmp_path / "hf_tok",
                    **QUIET)
    assert result.tokenizer == "pretrained"
    loaded = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "b"), trust_remote_code=True)
    assert loaded.eos_token == "<|endoftext|>" and loaded.eos_token_id == 40
    assert loaded("3 17 5")["input_ids"] == [3, 17, 5]
