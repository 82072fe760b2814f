"""The bundle loads with Hugging Face `AutoModelForCausalLM(..., trust_remote_code=True)` (when installed)."""

from __future__ import annotations

import pytest
import torch

from composer import HybridLM, load_spec
from composer.export import export

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.slow  # importing transformers and loading remote code: ~20 s


@pytest.mark.parametrize("tie, meta_tokens", [(True, 0), (False, 0), (True, 3)])
def test_auto_model_logits_and_greedy_generate(tmp_path, tie, meta_tokens):
    spec = load_spec({"d_model": 32, "vocab_size": 45, "tie_embeddings": tie, "meta_tokens": meta_tokens,
                      "layers": ["attention", "mlp", "gated_deltanet", "mlp", "mla"]})
    torch.manual_seed(1)
    model = HybridLM(spec).eval()
    export(model, tmp_path / "b", progress=lambda *_: None)
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "b"), trust_remote_code=True).eval()
    assert type(hf).__name__ == "ComposerForCausalLM"
    tokens = torch.randint(0, 45, (2, 13))
    with torch.no_grad():
        assert torch.allclose(hf(input_ids=tokens).logits, model(tokens).logits, atol=1e-5)
    prompt = tokens[:1, :4]
    expected = model.generate(prompt, 6, temperature=0)
    got = hf.generate(prompt, max_new_tokens=6, do_sample=False, attention_mask=torch.ones_like(prompt))
    assert torch.equal(got, expected)


MIXED_STATE_SPEC = {"d_model": 32, "vocab_size": 45, "layers": [
    {"op": "attention", "name": "attn", "n_heads": 2}, "mlp",
    {"loop": {"times": 2, "body": ["mlstm", "mlp"]}},
    {"parallel": ["mamba", "gated_deltanet"], "combine": "mean"},
    {"share": "attn"}, "mlp"]}


def _hf_bundle(tmp_path, spec):
    torch.manual_seed(2)
    model = HybridLM(load_spec(spec)).eval()
    export(model, tmp_path / "b", progress=lambda *_: None)
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "b"), trust_remote_code=True).eval()
    return model, hf


def test_generate_reads_one_token_per_step_through_the_state(tmp_path):
    """After the prompt, each step feeds only the new token: the wrapper's cache is the model's state."""
    model, hf = _hf_bundle(tmp_path, MIXED_STATE_SPEC)
    lengths = []
    hook = hf.embed.register_forward_hook(lambda module, args, out: lengths.append(args[0].shape[1]))
    prompt = torch.randint(0, 45, (1, 5))
    got = hf.generate(prompt, max_new_tokens=6, do_sample=False, attention_mask=torch.ones_like(prompt))
    hook.remove()
    assert lengths == [5, 1, 1, 1, 1, 1]
    assert torch.equal(got, model.generate(prompt, 6, temperature=0))
    lengths.clear()
    hook = hf.embed.register_forward_hook(lambda module, args, out: lengths.append(args[0].shape[1]))
    uncached = hf.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=False,
                           attention_mask=torch.ones_like(prompt))
    hook.remove()
    assert lengths == [5, 6, 7, 8, 9, 10] and torch.equal(uncached, got)


def test_sampling_and_beam_search_agree_with_and_without_the_state(tmp_path):
    """Sampling draws the same tokens either way; beam search reorders the state's batch rows (attention KV,
    conv and SSM caches, loop and parallel sub-states) exactly as re-reading the sequence would."""
    _, hf = _hf_bundle(tmp_path, MIXED_STATE_SPEC)
    prompts = torch.randint(0, 45, (2, 4))
    mask = torch.ones_like(prompts)
    runs = {}
    for use_cache in (True, False):
        torch.manual_seed(5)
        sampled = hf.generate(prompts, max_new_tokens=5, do_sample=True, top_k=10, use_cache=use_cache,
                              attention_mask=mask)
        beams = hf.generate(prompts, max_new_tokens=5, do_sample=False, num_beams=3, num_return_sequences=3,
                            return_dict_in_generate=True, output_scores=True, use_cache=use_cache,
                            attention_mask=mask)
        runs[use_cache] = (sampled, beams)
    assert torch.equal(runs[True][0], runs[False][0])
    cached, uncached = runs[True][1], runs[False][1]
    assert cached.sequences.shape == (6, 9) and torch.equal(cached.sequences, uncached.sequences)
    assert torch.allclose(cached.sequences_scores, uncached.sequences_scores, atol=1e-5)


def test_two_bundles_in_one_process_each_run_their_own_code(tmp_path):
    """Same directory name, different primitives: the second bundle must not reuse the first's model class."""
    _hf_bundle(tmp_path / "one", {"d_model": 32, "vocab_size": 45, "layers": ["attention", "mlp"]})
    second, hf = _hf_bundle(tmp_path / "two", {"d_model": 32, "vocab_size": 45, "layers": ["mlstm", "mlp"]})
    tokens = torch.randint(0, 45, (1, 7))
    with torch.no_grad():
        assert torch.allclose(hf(input_ids=tokens).logits, second(tokens).logits, atol=1e-5)


def test_padded_batches_are_refused_not_misread(tmp_path):
    """The model has no padding mask: a left-padded batch would read the pad tokens as text, so it is an error."""
    _, hf = _hf_bundle(tmp_path, {"d_model": 32, "vocab_size": 45, "layers": ["gated_deltanet", "mlp"]})
    prompts = torch.randint(0, 45, (2, 5))
    mask = torch.ones_like(prompts)
    mask[1, :2] = 0
    with pytest.raises(ValueError, match="padded batches"):
        hf.generate(prompts, max_new_tokens=3, do_sample=False, attention_mask=mask)
    with pytest.raises(ValueError, match="padded batches"):
        hf(input_ids=prompts, attention_mask=mask)
