"""Export bundles from specs, checkpoints and search runs; loading them back; the CLI; user errors."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
import yaml
from safetensors.torch import save_file

from composer import HybridLM, UserError, arch_id, load_spec, stripe
from composer.export import export, load
from composer.export.weights import read_safetensors, unique_state_dict
from composer.spec_parse import dump_spec

SPEC = {"name": "tiny", "d_model": 32, "vocab_size": 40, "max_seq_len": 64, "layers": ["attention", "mlp"]}
QUIET = {"progress": lambda *_: None}


def trained_checkpoint(folder, spec_data=SPEC, metrics=None, seed=0):
    """A checkpoint directory as the trainer writes it: spec.yaml, model.safetensors, metrics.json."""
    folder.mkdir(parents=True)
    spec = load_spec(spec_data)
    torch.manual_seed(seed)
    model = HybridLM(spec)
    (folder / "spec.yaml").write_text(dump_spec(spec))
    save_file(unique_state_dict(model), str(folder / "model.safetensors"))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return model


def fake_run(root):
    """A search run directory as composer.runs writes it: leaderboard in trial order, summary.json naming the
    best trial, trials/<id>/ checkpoints, best/consensus specs."""
    run = root / "runs" / "demo"
    trained_checkpoint(run / "trials" / "7", SPEC, {"val_loss": 1.25, "accuracy": 0.5}, seed=7)
    other = {**SPEC, "layers": ["mamba2", "mlp"]}
    trained_checkpoint(run / "trials" / "3", other, {"val_loss": 2.5}, seed=3)
    (run / "leaderboard.csv").write_text("trial,status,val_loss,params\n3,completed,2.5,2000\n7,completed,1.25,1000\n")
    (run / "summary.json").write_text(json.dumps({"best": {"trial": 7, "val_loss": 1.25}}))
    (run / "best.yaml").write_text(dump_spec(load_spec(SPEC)))
    consensus = {**SPEC, "name": "consensus", "layers": ["gla", "mlp"]}
    (run / "consensus.yaml").write_text(yaml.safe_dump(consensus))
    return run


def test_load_returns_the_same_model(tmp_path):
    torch.manual_seed(0)
    model = HybridLM(load_spec(SPEC)).eval()
    export(model, tmp_path / "b", **QUIET)
    tensors, metadata = read_safetensors(str(tmp_path / "b" / "model.safetensors"))
    assert "head.weight" not in tensors and "embed.weight" in tensors  # tied: stored once
    assert metadata["arch_id"] == arch_id(model.spec)
    loaded = load(tmp_path / "b")
    tokens = torch.randint(0, 40, (2, 11))
    assert torch.equal(loaded(tokens).logits, model(tokens).logits)
    assert loaded.head.weight is loaded.embed.weight
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["architecture"] == model.spec.to_dict()
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_composer.ComposerForCausalLM"
    assert config["costs"]["params"] == sum(p.numel() for p in model.parameters())


def test_spec_file_without_weights_unless_asked(tmp_path):
    path = tmp_path / "arch.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    result = export(path, tmp_path / "plain", **QUIET)
    assert not result.has_weights and "model.safetensors" not in result.files
    assert {"spec.yaml", "config.json", "README.md", "modeling.py", "modeling_composer.py",
            "configuration_composer.py"} <= set(result.files)
    assert load_spec(tmp_path / "plain" / "spec.yaml") == load_spec(SPEC)
    assert "none (architecture only; untrained)" in (tmp_path / "plain" / "README.md").read_text()
    with pytest.raises(UserError, match="has no weights"):
        load(tmp_path / "plain")
    seeded = [export(path, tmp_path / f"init{i}", init_weights=True, seed=5, **QUIET) for i in range(2)]
    assert all(r.has_weights for r in seeded)
    assert torch.equal(load(tmp_path / "init0").embed.weight, load(tmp_path / "init1").embed.weight)


def test_checkpoint_source_keeps_weights_and_metrics(tmp_path):
    model = trained_checkpoint(tmp_path / "ckpt", metrics={"val_loss": 1.5, "tokens_per_s": 1234.0})
    export(tmp_path / "ckpt", tmp_path / "b", **QUIET)
    loaded = load(tmp_path / "b")
    assert torch.equal(loaded.embed.weight, model.embed.weight)
    card = (tmp_path / "b" / "README.md").read_text()
    assert f"`{stripe(model.spec)}`" in card
    assert "| val_loss | 1.5 |" in card and "| tokens_per_s | 1234 |" in card
    assert f"| parameters | {sum(p.numel() for p in model.parameters()):,} |" in card


def test_run_source_best_trial_and_consensus(tmp_path):
    run = fake_run(tmp_path)
    export(run, tmp_path / "best", **QUIET)
    assert load(tmp_path / "best").spec == load_spec(SPEC)
    card = (tmp_path / "best" / "README.md").read_text()
    assert "trial 7" in card and "| val_loss | 1.25 |" in card and "| accuracy | 0.5 |" in card
    export(run, tmp_path / "t3", trial="3", **QUIET)
    assert load(tmp_path / "t3").spec.layers[0].op == "mamba2"
    result = export(run, tmp_path / "cons", pick="consensus", **QUIET)
    assert not result.has_weights
    assert load_spec(tmp_path / "cons" / "spec.yaml").name == "consensus"
    with pytest.raises(UserError, match=r"no trial '9' \(trials: 3, 7\)"):
        export(run, tmp_path / "nine", trial="9", **QUIET)


def test_user_errors_leave_nothing_behind(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        export(tmp_path / "missing.yaml", tmp_path / "out", **QUIET)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="exists and is not empty"):
        export(load_spec(SPEC), tmp_path / "full", **QUIET)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "spec.yaml").write_text(dump_spec(load_spec(SPEC)))
    save_file({"embed.weight": torch.zeros(3, 3)}, str(bad / "model.safetensors"))
    with pytest.raises(UserError, match="weights do not fit"):
        export(bad, tmp_path / "out", **QUIET)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "full"]  # no half-written bundle
    with pytest.raises(UserError, match="not a checkpoint"):
        export(tmp_path / "full", tmp_path / "out2", **QUIET)


def run_cli(argv):
    from composer.cli import export as cli_export

    parser = argparse.ArgumentParser(prog="composer")
    cli_export.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_export(tmp_path, capsys):
    path = tmp_path / "arch.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    assert run_cli(["export", str(path), "--out", str(tmp_path / "b"), "--init-weights", "--torch-export"]) == 0
    out = capsys.readouterr().out
    assert "torch.export: ok" in out and "wrote" in out
    program = torch.export.load(str(tmp_path / "b" / "model.pt2"))
    tokens = torch.randint(0, 40, (1, 16))
    assert torch.allclose(program.module()(tokens), load(tmp_path / "b")(tokens).logits, atol=1e-5)
    assert run_cli(["export", str(path), "--out", str(tmp_path / "c")]) == 0
    assert "architecture only" in capsys.readouterr().out
    with pytest.raises(UserError, match="either --trial or --consensus"):
        run_cli(["export", str(path), "--out", str(tmp_path / "d"), "--trial", "1", "--consensus"])


def test_trainer_layout_and_tied_weights_stored_under_the_head_name(tmp_path):
    """The trainer writes checkpoint/model.safetensors (safetensors' save_model may keep either tied name)
    and metrics.jsonl; the search run adds spec.yaml."""
    from safetensors.torch import save_model

    torch.manual_seed(3)
    model = HybridLM(load_spec(SPEC))
    folder = tmp_path / "trial"
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "spec.yaml").write_text(dump_spec(model.spec))
    tensors = unique_state_dict(model)
    tensors["head.weight"] = tensors.pop("embed.weight")
    save_file(tensors, str(folder / "checkpoint" / "model.safetensors"))
    (folder / "metrics.jsonl").write_text('{"step": 10, "val_loss": 3.0}\n{"step": 20, "val_loss": 2.0}\n')
    export(folder, tmp_path / "b", **QUIET)
    assert torch.equal(load(tmp_path / "b").embed.weight, model.embed.weight)
    assert "| val_loss | 2 |" in (tmp_path / "b" / "README.md").read_text()
    save_model(model, str(tmp_path / "sm.safetensors"))
    loaded = HybridLM(load_spec(SPEC))
    from composer.export.weights import load_weights
    load_weights(loaded, read_safetensors(str(tmp_path / "sm.safetensors"))[0])
    assert torch.equal(loaded.head.weight, model.head.weight)


def test_bundle_and_checkpoint_files_are_readable_by_others(tmp_path, tiny_task):
    """Under umask 022 every bundle file is 0644 and its folder 0755 (safetensors writes 0600, mkdtemp makes
    0700); a training checkpoint's weights too."""
    import os
    import stat

    from composer.trainer import train

    previous = os.umask(0o022)
    try:
        export(HybridLM(load_spec(SPEC)), tmp_path / "b", **QUIET)
        train({**SPEC, "vocab_size": 64}, tiny_task(), 1, out_dir=tmp_path / "run", batch_size=2, threads=1)
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "b").iterdir()}
    assert "model.safetensors" in modes and set(modes.values()) == {0o644}
    assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o755
    checkpoint = tmp_path / "run" / "checkpoint"
    assert {stat.S_IMODE(p.stat().st_mode) for p in checkpoint.iterdir()} == {0o644}
