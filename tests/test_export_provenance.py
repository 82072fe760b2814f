"""provenance(): versions, git commit, device and host, recorded in every bundle's config.json and in the
result.json of every `composer train --out` run."""

from __future__ import annotations

import json
import platform
import socket
import subprocess
from importlib import metadata

import torch

from composer import HybridLM, load_spec
from composer.export import export
from composer.provenance import SOURCE_ROOT, describe_device, provenance

KEYS = {"composer", "torch", "ray", "optuna", "python", "git_commit", "git_dirty", "device", "host", "platform"}


def test_provenance_names_versions_commit_device_and_host():
    record = provenance()
    assert set(record) == KEYS
    assert record["torch"] == metadata.version("torch") and record["torch"].split("+")[0] in torch.__version__
    assert record["ray"] == metadata.version("ray") and record["optuna"] == metadata.version("optuna")
    assert record["python"] == platform.python_version() and record["host"] == socket.gethostname()
    assert record["device"].startswith("cuda:" if torch.cuda.is_available() else "cpu (")
    if (SOURCE_ROOT / ".git").exists():
        head = subprocess.run(["git", "-C", str(SOURCE_ROOT), "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        assert record["git_commit"] == head and isinstance(record["git_dirty"], bool)
    json.dumps(record)   # plain JSON values


def test_describe_device_never_raises():
    assert describe_device("cpu").startswith("cpu (")
    assert describe_device("not a device") == "not a device"
    if not torch.cuda.is_available():
        assert describe_device("cuda") == "cuda"


def test_bundle_config_records_provenance(tmp_path):
    export(HybridLM(load_spec({"d_model": 32, "vocab_size": 40, "layers": ["mlp"]})), tmp_path / "b",
           progress=lambda *_: None)
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["provenance"] == provenance()
    assert f"Composer {config['provenance']['composer']}" in (tmp_path / "b" / "README.md").read_text()


def test_train_out_records_provenance(tmp_path, capsys):
    from composer.cli import main

    spec = tmp_path / "s.yaml"
    spec.write_text("d_model: 16\nvocab_size: 32\nlayers: [mlp]\n")
    out = tmp_path / "run"
    assert main(["train", str(spec), "--steps", "2", "--batch-size", "2", "--threads", "1", "--set", "seq_len=16",
                 "kv_pairs=2", "vocab_size=32", "num_train=64", "num_test=8", "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["provenance"] == provenance()
    assert result["status"] == "completed" and result["step"] == 2 and result["budget"] == {"steps": 2}
    assert result["metrics"]["val_loss"] > 0 and "history" not in result
