"""The bundle loads with Hugging Face `AutoModelForCausalLM(..., trust_remote_code=True)` (when installed)."""

from __future__ import annotations

import pytest
import torch

from composer import HybridLM, load_spec
from composer.export import export

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.slow  # importing transformers and loading remote code: ~20 s


@pytest.mark.parametrize("tie", [True, False])
def test_auto_model_logits_and_greedy_generate(tmp_path, tie):
    spec = load_spec({"d_model": 32, "vocab_size": 45, "tie_embeddings": tie,
                      "layers": ["attention", "mlp", "gated_deltanet", "mlp"]})
    torch.manual_seed(1)
    model = HybridLM(spec).eval()
    export(model, tmp_path / "b", progress=lambda *_: None)
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "b"), trust_remote_code=True).eval()
    assert type(hf).__name__ == "ComposerForCausalLM"
    tokens = torch.randint(0, 45, (2, 13))
    with torch.no_grad():
        assert torch.allclose(hf(input_ids=tokens).logits, model(tokens), atol=1e-5)
    prompt = tokens[:1, :4]
    expected = model.generate(prompt, 6, temperature=0)
    got = hf.generate(prompt, max_new_tokens=6, do_sample=False, attention_mask=torch.ones_like(prompt))
    assert torch.equal(got, expected)
