"""What a search says before Ray starts, and the names its Optuna study gives the objectives."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_study_names_its_objectives(tmp_path):
    import optuna

    from composer.runs import RunDir
    from composer.search.resume import open_study
    from composer.search.space_parse import load_space

    space = load_space(str(ROOT / "search_spaces" / "quickstart.yaml"))
    tmp_path.joinpath("run").mkdir()
    study = open_study(RunDir(tmp_path / "run"), space)
    assert study.metric_names == space.objective_names() == ["accuracy"]
    again = optuna.load_study(study_name=space.name, storage=RunDir(tmp_path / "run").study_url)
    assert again.metric_names == ["accuracy"]          # stored in study.db: the dashboard reads it there


def test_a_search_speaks_before_ray_starts(tmp_path, monkeypatch, capsys):
    import composer.search.runner as runner

    class RayStarts(Exception):
        pass

    def start_ray(address, verbose):
        assert "starting Ray" in capsys.readouterr().err        # said before, not after
        raise RayStarts

    monkeypatch.setattr(runner, "start_ray", start_ray)
    with pytest.raises(RayStarts):
        runner.search(str(ROOT / "search_spaces" / "quickstart.yaml"), runs_dir=tmp_path)


def test_a_space_whose_base_states_another_vocabulary_is_refused_when_read():
    from composer.errors import UserError
    from composer.search.space_parse import load_space

    text = (ROOT / "search_spaces" / "quickstart.yaml").read_text().replace("  d_model: 64\n",
                                                                            "  d_model: 64\n  vocab_size: 128\n")
    with pytest.raises(UserError, match="the spec's vocab_size is 128 but the mqar task's vocabulary is 256") as e:
        load_space(text)
    assert e.value.path == "base.vocab_size"
    ok = text.replace("vocab_size: 128", "vocab_size: 256")
    assert load_space(ok).vocab_size == 256
