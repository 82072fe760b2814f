"""Every zoo member at a reduced size (its repeating unit at d_model 64, a small vocabulary) trains a few steps and
exports to a standalone modeling.py whose logits and greedy generation equal Composer's (one subprocess, as
tests/test_export.py checks every primitive)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from composer import HybridLM
from composer.export import export
from composer.zoo import zoo_members
from scaling.rules import widen

sys.path.insert(0, str(Path(__file__).parent))
from test_export import NEW_TOKENS, PROMPT_LEN, run_check_script  # noqa: E402

pytestmark = pytest.mark.slow  # a dozen small models trained and exported, checked in a subprocess: ~1 min

MEMBERS = [m.name for m in zoo_members(expressible_only=True)]
REDUCED_WIDTH, VOCAB, CONTEXT, STEPS = 64, 97, 64, 3


def reduced(name: str):
    member = next(m for m in zoo_members(expressible_only=True) if m.name == name)
    return widen(member.unit, REDUCED_WIDTH).replace(vocab_size=VOCAB, max_seq_len=CONTEXT)


def train_a_few_steps(model: HybridLM) -> list[float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(STEPS):
        tokens = torch.randint(0, VOCAB, (2, 33))
        out = model(tokens[:, :-1])
        loss = F.cross_entropy(out.logits.flatten(0, 1), tokens[:, 1:].flatten())
        total = loss + sum(out.aux_losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.fixture(scope="module")
def zoo_results(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("zoo_bundles")
    trained = {}
    for i, name in enumerate(MEMBERS):
        torch.manual_seed(i)
        model = HybridLM(reduced(name))
        trained[name] = train_a_few_steps(model)
        model.eval()
        export(model, root / name, progress=lambda *_: None)
        prompt = torch.randint(0, VOCAB, (2, PROMPT_LEN))
        with torch.no_grad():
            logits = model(prompt).logits
        generated = model.generate(prompt[:1, :5], NEW_TOKENS, temperature=0)
        save_file({"prompt": prompt, "logits": logits.contiguous(), "generated": generated},
                  str(root / name / "expected.safetensors"))
    results = run_check_script(root, MEMBERS, timeout=600)
    results["trained"] = trained
    return results


@pytest.mark.parametrize("name", MEMBERS)
def test_reduced_member_trains_and_its_export_matches(zoo_results, name):
    losses = zoo_results["trained"][name]
    assert len(losses) == STEPS and all(torch.isfinite(torch.tensor(losses)))
    result = zoo_results["bundles"][name]
    assert "error" not in result, result.get("error")
    assert result["max_diff"] < 1e-5
    assert result["same_generation"]
    assert result["arch_name"] == name
