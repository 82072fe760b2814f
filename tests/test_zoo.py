"""The zoo (search_spaces/zoo/): every published hybrid costed analytically (no weights are built) against the counts
its vendor states, the counting conventions, `composer zoo`, `composer show zoo:NAME` and zoo baselines in confirm."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from composer.cli import main
from composer.costs import model_cost
from composer.spec import Repeat, flatten, iter_layers
from composer.spec_parse import load_spec
from composer.zoo import ZOO_DIR, Figure, PublishedEntry, counted, period, zoo_member, zoo_members

MEMBERS = [m.name for m in zoo_members(expressible_only=True)]


def test_every_spec_file_has_an_entry_and_every_buildable_entry_a_spec():
    files = {p.stem for p in ZOO_DIR.glob("*.yaml")} - {"published"}
    assert files == set(MEMBERS)
    for member in zoo_members():
        assert member.entry.expressible or member.entry.missing   # what is missing is said


@pytest.mark.parametrize("name", MEMBERS)
def test_layer_composition_as_published(name):
    member = zoo_member(name)
    ops: dict[str, int] = {}
    for layer in iter_layers(member.spec.layers):
        ops[layer.op] = ops.get(layer.op, 0) + 1
    assert member.entry.composition and ops == member.entry.composition


@pytest.mark.parametrize("name", MEMBERS)
def test_published_counts_hold(name):
    """The total (and the active count, where the vendor states one) within 0.2% of the published figure, in the
    vendor's counting convention, from the analytic cost alone."""
    member = zoo_member(name)
    cost = model_cost(member.spec, seq_len=1024)
    assert member.check(cost) == []
    assert member.spec.name == name
    header = member.file.read_text().splitlines()[0]
    assert header.startswith("# ") and member.entry.source


@pytest.mark.parametrize("name, params, active", [
    ("lfm2_350m", 354_483_968, None),
    ("lfm2_1_2b", 1_170_340_608, None),
    ("jamba", 51_570_323_328, 12_110_311_296),
    ("samba", 1_330_207_488, None),
    ("falcon_h1_0_5b", 521_411_104, None),
    ("nemotron_h_8b", 8_100_852_736, None),
    ("mamba2_hybrid_8b", 8_654_517_248, None),
    ("qwen3_next", 79_674_391_296, 3_874_929_408),
    ("gpt_oss_20b", 20_914_757_184, 4_187_440_704),
    ("minimax_text_01", 456_089_655_296, 48_403_306_496),
    ("kimi_linear", 49_122_681_728, 3_484_459_904),
    ("gemma3_1b", 999_885_952, None),
    ("recurrentgemma_2b", 2_682_862_080, None),
    ("hymba_1_5b", 1_522_797_824, None),
    ("jet_nemotron_2b", 1_964_806_208, None),
])
def test_exact_counts_summed_from_the_released_shapes(name, params, active):
    """Counts summed by hand from the released configs (each spec file's header shows the sum)."""
    member = zoo_member(name)
    cost = model_cost(member.spec)
    assert cost.params == params
    if active is not None:
        assert cost.active_params == active


def test_stated_figures_hold_to_their_precision():
    assert Figure.parse("354,483,968").tolerance == 0.002
    assert Figure.parse("51.57B").value == 51.57e9 and Figure.parse("51.57B").tolerance == 0.002
    rounded = Figure.parse("1.3B")
    assert rounded.tolerance == pytest.approx(0.05 / 1.3)
    assert rounded.holds(1_349_000_000) and not rounded.holds(1_351_000_000)
    assert Figure.parse("~8.10B").value == 8.1e9
    with pytest.raises(Exception, match="expected a parameter count"):
        Figure.parse("about eight billion")


def test_counting_conventions():
    spec = load_spec({"d_model": 32, "vocab_size": 100, "tie_embeddings": False,
                      "layers": [{"op": "moe", "n_experts": 4, "top_k": 1}]})
    cost = model_cost(spec)
    table = 100 * 32
    assert counted(spec, cost, "all") == cost.params
    assert counted(spec, cost, "no_input_embedding") == cost.params - table
    assert counted(spec, cost, "non_embedding") == cost.params - 2 * table == cost.non_embedding_params
    assert counted(spec, cost, "no_input_embedding", active=True) == cost.active_params - table
    assert counted(spec, cost, "non_embedding", active=True) == cost.active_params - 2 * table
    tied = spec.replace(tie_embeddings=True)
    assert counted(tied, model_cost(tied), "no_input_embedding") == model_cost(tied).params  # the table is the head


def test_period_is_each_top_level_repeat_once():
    jamba = zoo_member("jamba").spec
    unit = period(jamba)
    assert not any(isinstance(n, Repeat) for n in unit.layers)
    assert len(flatten(unit.layers)) * 4 == len(flatten(jamba.layers))
    lfm2 = zoo_member("lfm2_350m").spec        # no repeat: the whole pattern is the unit
    assert period(lfm2).layers == lfm2.layers
    assert period(lfm2, unit=6).layers == flatten(lfm2.layers)[:6]   # a unit named in published.yaml


def test_composer_zoo_lists_members_with_counts_and_sources(capsys):
    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    for member in zoo_members():
        assert f"zoo:{member.name}" in out and member.entry.title in out and member.entry.source in out
    assert main(["zoo", "--json"]) == 0
    facts = {f["name"]: f for f in json.loads(capsys.readouterr().out)}
    assert facts["jamba"]["params"]["counted"] == 51_570_323_328 and facts["jamba"]["params"]["published"] == "51.57B"
    assert facts["jamba"]["active_params"]["counted"] == 12_110_311_296
    assert facts["falcon_h1_0_5b"]["missing"] and all(not f["problems"] for f in facts.values())


def test_show_a_zoo_member_and_choose_the_counting(capsys):
    assert main(["show", "zoo:jamba"]) == 0
    out = capsys.readouterr().out
    assert "params (all)                51,570,323,328  (published: 51.57B, all)" in out
    assert "active (all)                12,110,311,296  (published: 12.11B, all)" in out
    assert main(["show", "zoo:falcon_h1_0_5b"]) == 0
    assert "not expressible: the muP multipliers" in capsys.readouterr().out
    assert main(["show", "zoo:jamba", "--count", "non_embedding", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["counted"]["params"] == {"counting": "non_embedding", "value": 51_570_323_328 - 2 * 65536 * 4096}
    assert facts["published"]["params"] == "51.57B"
    assert main(["show", "zoo:qwen3_next"]) == 0
    out = capsys.readouterr().out
    assert "params (all)                79,674,391,296  (published: ~79.67B, all)" in out and "GD" in out
    assert main(["show", "zoo:gpt_oss_20b"]) == 0          # the vendor's convention for its active count
    assert "active (no_input_embedding) 3,608,307,264  (published: 3.61B, no_input_embedding)" in capsys.readouterr().out
    assert main(["validate", "zoo:lfm2_350m"]) == 0
    assert "ok: zoo:lfm2_350m is valid" in capsys.readouterr().out


def test_an_unknown_member_is_one_error_line(capsys):
    assert main(["show", "zoo:jamab"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown zoo member 'jamab'; did you mean 'jamba'?" in err[0]


def test_a_member_composer_cannot_build_says_what_is_missing(capsys, monkeypatch):
    """Every published member is buildable today; an entry marked `expressible: false` (as Zamba2 was until the
    shared block became a primitive) is listed, and naming it is one error line saying what is missing."""
    import composer.zoo

    entries = {**composer.zoo._published(), "unbuildable": PublishedEntry(
        title="Unbuildable-1B", source="a test", params="1B", expressible=False,
        missing=("a layer that reads the future",))}
    monkeypatch.setattr(composer.zoo, "_published", lambda: entries)
    unbuildable = [m for m in zoo_members() if not m.entry.expressible]
    assert [m.name for m in unbuildable] == ["unbuildable"]
    assert "unbuildable" not in [m.name for m in zoo_members(expressible_only=True)]
    for member in unbuildable:
        assert main(["show", f"zoo:{member.name}"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "cannot be built in Composer: " + member.entry.missing[0] in err[0]


def test_confirm_fits_zoo_baselines_with_the_candidates_rules(tmp_path, capsys):
    """`--baseline zoo:samba zoo:jamba`: each member's repeating unit, its pattern kept, fitted to every size."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_confirm import make_run

    from composer.confirm import ConfirmConfig, plan_confirm

    make_run(tmp_path / "run")
    plan = plan_confirm(tmp_path / "run", ConfirmConfig(sizes=("1M", "4M"),
                                                        baselines=("zoo:samba", "zoo:jamba", "zoo:zamba2_2_7b")))
    for name in ("samba", "jamba", "zamba2_2_7b"):
        candidate = next(c for c in plan.candidates if c.name == name)
        assert candidate.roles == ["baseline"]
        unit = [n.op for n in flatten(zoo_member(name).unit.layers)]
        for label, _ in plan.sizes:
            sized = plan.sized[(name, label)]
            ops = [n.op for n in flatten(sized.spec.layers)]
            if sized.method == "stack":
                assert ops == unit * sized.depth                     # the published pattern, stacked
            else:
                assert sorted(set(ops)) == sorted(set(unit)) and len(ops) >= len(unit)
            assert abs(sized.error) <= plan.config.tolerance
    assert main(["confirm", str(tmp_path / "run"), "--baseline", "zoo:nothing", "--plan"]) == 2
    assert "unknown zoo member 'nothing'" in capsys.readouterr().err


def test_sandwich_norms_count_and_compute_as_gemma_does():
    """norm_position: sandwich (Gemma 2 and 3): x + out_norm(op(norm(x))), two norms per sub-layer, a final norm."""
    import torch

    from composer import HybridLM

    spec = load_spec({"d_model": 32, "vocab_size": 50, "norm_position": "sandwich",
                      "layers": ["attention", "mlp", {"parallel": ["attention", "mamba2"]}]})
    model = HybridLM(spec)
    assert model_cost(spec).params == sum(p.numel() for p in model.parameters())
    assert model_cost(spec).params == model_cost(spec.replace(norm_position="pre")).params + 3 * 32
    block = model.blocks[1]
    with torch.no_grad():
        block.out_norm.weight.uniform_(0.5, 1.5)
        x = torch.randn(2, 5, 32)
        expected = x + block.out_norm(block.op(block.norm(x))[0])
        torch.testing.assert_close(block(x)[0], expected)


def test_widening_mamba2_keeps_heads_per_group():
    """Nemotron-H's Mamba-2 (128 heads in 8 groups at d 4096) narrowed to d 64: 2 heads in 1 group."""
    from scaling.rules import widen

    narrow = widen(zoo_member("nemotron_h_8b").spec, 64)
    params = narrow.resolved_params(next(n for n in iter_layers(narrow.layers) if n.op == "mamba2"))
    assert (params["n_heads"], params["n_groups"]) == (2, 1)


def test_costing_the_zoo_builds_no_weights(monkeypatch):
    """The counts are analytic: with every parameter allocation refused, each member is still costed."""
    import torch

    def refuse(*args, **kwargs):
        raise AssertionError("a weight was built")

    monkeypatch.setattr(torch.nn.Parameter, "__new__", refuse)
    for member in zoo_members(expressible_only=True):
        assert member.check(model_cost(member.spec, seq_len=1024)) == []
