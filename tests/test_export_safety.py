"""Where `composer export` may write: --force replaces only a bundle (never the working directory, a folder
above it, a search run, or the source), atomically; --trial is a name inside the run, never a path."""

from __future__ import annotations

import json
import os

import pytest
import torch
import yaml
from test_export_bundle import SPEC, fake_run

from composer import UserError
from composer.cli import main
from composer.export import export, load

QUIET = {"progress": lambda *_: None}


def cli(capsys, *argv):
    code = main(["export", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "arch.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


def test_force_never_replaces_the_working_directory_or_a_folder_above_it(tmp_path, spec_file, monkeypatch, capsys):
    work = tmp_path / "project" / "work"
    work.mkdir(parents=True)
    (work / "notes.txt").write_text("mine")
    (tmp_path / "project" / "data.txt").write_text("mine too")
    monkeypatch.chdir(work)
    before = listing(tmp_path)
    for out in (".", "..", str(work), "../..", "sub/.."):
        code, _, err = cli(capsys, spec_file, "--out", out, "--force")
        assert code == 2 and len(err) == 1 and err[0].startswith("error: ")
        assert "working directory or a folder above it" in err[0], err
    assert listing(tmp_path) == before


def test_force_never_replaces_a_run_folder_or_a_non_bundle(tmp_path, spec_file, capsys):
    run = fake_run(tmp_path)
    before = listing(run)
    code, _, err = cli(capsys, spec_file, "--out", run, "--force")
    assert code == 2 and "is a search run folder; --force replaces only a bundle" in err[0]
    (run / "summary.json").unlink()
    (run / "leaderboard.csv").unlink()
    code, _, err = cli(capsys, spec_file, "--out", run, "--force")   # still holds trials/
    assert code == 2 and "search run folder" in err[0]
    assert listing(run) == [p for p in before if p not in ("summary.json", "leaderboard.csv")]
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"\xff\xd8")
    code, _, err = cli(capsys, spec_file, "--out", other, "--force")
    assert code == 2 and "is not a Composer bundle" in err[0]
    assert listing(other) == ["cat.jpg"]
    (tmp_path / "file.txt").write_text("x")
    code, _, err = cli(capsys, spec_file, "--out", tmp_path / "file.txt", "--force")
    assert code == 2 and "exists and is not a folder" in err[0]


def test_force_never_replaces_the_source(tmp_path, capsys):
    first = export(load_spec_data(), tmp_path / "b", init_weights=True, **QUIET)
    assert first.has_weights
    code, _, err = cli(capsys, tmp_path / "b", "--out", tmp_path / "b", "--force")
    assert code == 2 and "holds the source being exported" in err[0]
    assert load(tmp_path / "b") is not None


def load_spec_data():
    from composer import load_spec

    return load_spec(SPEC)


def test_force_replaces_an_existing_bundle_atomically(tmp_path, spec_file, monkeypatch, capsys):
    out = tmp_path / "bundle"
    export(spec_file, out, init_weights=True, seed=1, **QUIET)
    old = load(out).embed.weight.clone()
    code, _, err = cli(capsys, spec_file, "--out", out)
    assert code == 2 and "exists and is not empty (pass --force to replace a bundle)" in err[0]
    code, out_text, _ = cli(capsys, spec_file, "--out", out, "--force", "--init-weights", "--seed", "2")
    assert code == 0 and "wrote" in out_text
    assert not torch.equal(load(out).embed.weight, old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arch.yaml", "bundle"]   # nothing left aside

    # a failure while the new bundle is built, or while it is renamed in, leaves the old one in place
    current = load(out).embed.weight.clone()
    files = listing(out)
    import composer.export.bundle as bundle_module

    def broken(*_args, **_kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(bundle_module, "generate_modeling_source", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export(spec_file, out, init_weights=True, seed=3, overwrite=True, **QUIET)
    monkeypatch.undo()
    real_replace, calls = os.replace, []

    def second_replace_fails(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError("rename failed")
        return real_replace(src, dst)

    monkeypatch.setattr(bundle_module.os, "replace", second_replace_fails)
    with pytest.raises(OSError, match="rename failed"):
        export(spec_file, out, init_weights=True, seed=4, overwrite=True, **QUIET)
    monkeypatch.undo()
    assert listing(out) == files and torch.equal(load(out).embed.weight, current)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arch.yaml", "bundle"]


@pytest.mark.parametrize("trial", ["../../..", "..", ".", "/etc", "7/../../..", "a/b", "", "-x", "7\n"])
def test_trial_is_a_name_inside_the_run(tmp_path, trial, capsys):
    run = fake_run(tmp_path)
    code, _, err = cli(capsys, run, "--out", tmp_path / "b", f"--trial={trial}")
    assert code == 2 and len(err) == 1 and "--trial must be a trial number or name" in err[0]
    assert not (tmp_path / "b").exists()


def test_trial_links_out_of_the_run_and_forged_summaries_are_refused(tmp_path):
    run = fake_run(tmp_path)
    outside = tmp_path / "elsewhere"
    (run / "trials" / "7").rename(outside)
    (run / "trials" / "7").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UserError, match="points outside the run's trials/ folder"):
        export(run, tmp_path / "b", trial="7", **QUIET)
    (run / "summary.json").write_text(json.dumps({"best": {"trial": "../../elsewhere"}}))
    with pytest.raises(UserError, match="summary.json best.trial must be a trial number or name"):
        export(run, tmp_path / "b", **QUIET)
    assert not (tmp_path / "b").exists()
    export(run, tmp_path / "b3", trial="3", **QUIET)   # a real trial still exports
    assert load(tmp_path / "b3").spec.layers[0].op == "mamba2"
