"""Malformed weights files: the standalone modeling.py's hand-written safetensors reader checks the header and
fails with one ValueError naming the file and the problem; Composer (safetensors package) and the Hugging Face
path refuse missing, extra or misshapen tensors and never read pytorch_model.bin."""

from __future__ import annotations

import importlib.util
import json
import struct
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from composer import HybridLM, UserError, load_spec
from composer.cli import main
from composer.export import export, load
from composer.export.weights import read_safetensors, unique_state_dict

SPEC = {"d_model": 32, "vocab_size": 40, "max_seq_len": 32, "layers": ["attention", "mlp"]}
QUIET = {"progress": lambda *_: None}


def raw_file(path, header, data=b"", header_len=None):
    """A safetensors-shaped file with any header (a dict is JSON-encoded, bytes are used as they are)."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text) if header_len is None else header_len) + text + data)
    return path


def valid_file(path):
    save_file({"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(4, dtype=torch.int64)},
              str(path))
    return path


def reader_error(path) -> str:
    """The message of the reader's error, checking it is a plain ValueError (not a subclass such as
    UnicodeDecodeError or JSONDecodeError, nor a TypeError / KeyError)."""
    with pytest.raises(Exception) as info:
        read_safetensors(str(path))
    assert type(info.value) is ValueError, f"{type(info.value).__name__}: {info.value}"
    message = str(info.value)
    assert message.startswith(f"{path}: not a valid safetensors file: ")
    return message


def test_reader_reads_what_the_safetensors_package_writes(tmp_path):
    tensors, metadata = read_safetensors(str(valid_file(tmp_path / "ok.safetensors")))
    assert torch.equal(tensors["a"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
    assert torch.equal(tensors["b"], torch.ones(4, dtype=torch.int64)) and metadata == {}


ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
MALFORMED = {
    "header past the end": ({"a": ENTRY}, 10_000, bytes(8), "runs past the end of the file"),
    "header over the limit": ({"a": ENTRY}, 2**62, bytes(8), "over the limit"),
    "bad JSON": (b"{not json", None, b"", "not valid JSON"),
    "deeply nested JSON": (b"[" * 100_000 + b"]" * 100_000, None, b"", "not valid JSON"),
    "non-UTF-8 header": (b'{"\xff\xfe": 1}', None, b"", "not UTF-8"),
    "header not an object": ([1, 2], None, b"", "expected an object"),
    "entry not an object": ({"a": [1]}, None, b"", "expected the keys dtype, shape, data_offsets, got list"),
    "entry missing a key": ({"a": {"dtype": "F32", "shape": [2]}}, None, bytes(8), "expected the keys"),
    "unknown dtype": ({"a": {**ENTRY, "dtype": "F8_E9"}}, None, bytes(8), "unknown dtype 'F8_E9'"),
    "dtype not a string": ({"a": {**ENTRY, "dtype": 4}}, None, bytes(8), "unknown dtype 4"),
    "negative shape": ({"a": {**ENTRY, "shape": [-2]}}, None, bytes(8), "not a list of non-negative integers"),
    "shape of floats": ({"a": {**ENTRY, "shape": [2.0]}}, None, bytes(8), "not a list of non-negative integers"),
    "offsets out of range": ({"a": {**ENTRY, "data_offsets": [0, 10**9]}}, None, bytes(8), "out of range"),
    "offsets reversed": ({"a": {**ENTRY, "data_offsets": [8, 0]}}, None, bytes(8), "out of range"),
    "offsets not a pair": ({"a": {**ENTRY, "data_offsets": [0]}}, None, bytes(8), "not a pair"),
    "shape and length disagree": ({"a": {**ENTRY, "shape": [3, 3]}}, None, bytes(8), "needs 36 bytes"),
    "overlapping tensors": ({"a": ENTRY, "b": {**ENTRY, "data_offsets": [4, 12]}}, None, bytes(12), "overlap"),
    "bad metadata": ({"__metadata__": {"k": 1}, "a": ENTRY}, None, bytes(8), "__metadata__"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_header_is_one_clear_value_error(tmp_path, case):
    header, header_len, data, expected = MALFORMED[case]
    path = raw_file(tmp_path / "w.safetensors", header, data, header_len)
    assert expected in reader_error(path)


def test_truncated_file(tmp_path):
    blob = valid_file(tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(blob[:-5])
    assert "out of range" in reader_error(tmp_path / "cut.safetensors")
    (tmp_path / "cut2.safetensors").write_bytes(blob[:20])
    assert "runs past the end of the file" in reader_error(tmp_path / "cut2.safetensors")
    (tmp_path / "cut3.safetensors").write_bytes(blob[:3])
    assert "3 bytes long, shorter than the 8-byte header length" in reader_error(tmp_path / "cut3.safetensors")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6),
       cut=st.one_of(st.none(), st.integers(0, 10_000)))
def test_mutated_files_load_or_raise_value_error(tmp_path, edits, cut):
    """Any byte edits and truncations: the reader returns tensors or raises exactly ValueError."""
    blob = bytearray(valid_file(tmp_path / "ok.safetensors").read_bytes())
    for position, value in edits:
        blob[position % len(blob)] = value
    if cut is not None:
        blob = blob[:cut % (len(blob) + 1)]
    path = tmp_path / "mutated.safetensors"
    path.write_bytes(bytes(blob))
    try:
        read_safetensors(str(path))
    except Exception as e:  # noqa: BLE001
        assert type(e) is ValueError and str(e).startswith(f"{path}: "), f"{type(e).__name__}: {e}"


# -- the standalone modeling.py: its inlined reader and the names the model expects -----------------------

def standalone(bundle):
    spec = importlib.util.spec_from_file_location(f"modeling_{bundle.name}", bundle / "modeling.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def bundle(tmp_path):
    torch.manual_seed(0)
    model = HybridLM(load_spec(SPEC)).eval()
    export(model, tmp_path / "b", **QUIET)
    return tmp_path / "b", model


def test_standalone_load_model_names_the_file_and_problem(bundle):
    folder, model = bundle
    modeling = standalone(folder)
    tokens = torch.randint(0, 40, (1, 9))
    assert torch.equal(modeling.load_model(str(folder))(tokens).logits, model(tokens).logits)
    weights = folder / "model.safetensors"
    tensors = {name: t.clone() for name, t in unique_state_dict(model).items()}

    cases = {
        "missing tensor": ({k: v for k, v in tensors.items() if k != "final_norm.weight"},
                           "tensors missing (the model needs them): final_norm.weight"),
        "extra tensor": ({**tensors, "bogus.weight": torch.zeros(2)}, "tensors the model does not have: bogus.weight"),
        "wrong shape": ({**tensors, "final_norm.weight": torch.ones(5)}, "has shape [5], the model expects [32]"),
    }
    for name, (content, expected) in cases.items():
        save_file(content, str(weights))
        with pytest.raises(Exception) as info:
            modeling.load_model(str(folder))
        assert type(info.value) is ValueError, name
        assert str(info.value).startswith(f"{weights}: ") and expected in str(info.value), name
    raw_file(weights, b"\xff\xfe\xfd", b"")
    with pytest.raises(Exception) as info:
        modeling.load_model(str(folder))
    assert type(info.value) is ValueError and f"{weights}: not a valid safetensors file: " in str(info.value)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="no weights in this bundle"):
        modeling.load_model(str(folder))


def test_composer_refuses_unfitting_or_unreadable_weights(bundle, capsys):
    folder, model = bundle
    weights = folder / "model.safetensors"
    save_file({**unique_state_dict(model), "bogus.weight": torch.zeros(2)}, str(weights))
    with pytest.raises(UserError, match="weights do not fit the architecture .*bogus.weight"):
        load(folder)
    raw_file(weights, {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 999]}}, bytes(16))
    with pytest.raises(UserError, match="cannot read weights"):
        load(folder)
    assert main(["export", str(folder), "--out", str(folder.parent / "again")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "cannot read weights" in err[0]
    assert not (folder.parent / "again").exists()


# -- the Hugging Face wrapper ------------------------------------------------------------------------------

@pytest.mark.slow  # imports transformers and loads remote code
def test_hugging_face_refuses_missing_extra_and_pickled_weights(bundle):
    transformers = pytest.importorskip("transformers")
    folder, model = bundle
    auto = transformers.AutoModelForCausalLM
    tokens = torch.randint(0, 40, (1, 7))
    with torch.no_grad():
        assert torch.allclose(auto.from_pretrained(str(folder), trust_remote_code=True)(input_ids=tokens).logits,
                              model(tokens).logits, atol=1e-6)
    weights = folder / "model.safetensors"
    tensors = {name: t.clone() for name, t in unique_state_dict(model).items()}
    save_file({k: v for k, v in tensors.items() if k != "final_norm.weight"}, str(weights))
    with pytest.raises(ValueError, match="does not match the architecture \\(missing: final_norm.weight\\)"):
        auto.from_pretrained(str(folder), trust_remote_code=True)
    save_file({**tensors, "bogus.weight": torch.zeros(2)}, str(weights))
    with pytest.raises(ValueError, match="not in the model: bogus.weight"):
        auto.from_pretrained(str(folder), trust_remote_code=True)
    save_file({**tensors, "final_norm.weight": torch.ones(5)}, str(weights))
    with pytest.raises(ValueError, match="of another shape: final_norm.weight"):
        auto.from_pretrained(str(folder), trust_remote_code=True, ignore_mismatched_sizes=True)
    weights.unlink()
    torch.save(tensors, folder / "pytorch_model.bin")   # never read, even when it is the only weights file
    with pytest.raises(OSError, match="model.safetensors"):
        auto.from_pretrained(str(folder), trust_remote_code=True)
    with pytest.raises(ValueError, match="model.safetensors only"):
        auto.from_pretrained(str(folder), trust_remote_code=True, use_safetensors=False)
