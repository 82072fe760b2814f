"""Hymba's meta tokens (`meta_tokens: N` in a spec): N learned vectors before every sequence, read by every layer,
counted as parameters, costed over N + seq_len positions; decoding starts after them and their logits are dropped."""

from __future__ import annotations

import pytest
import torch

from composer import build_model, load_spec, model_cost
from composer.training.memory import estimate_memory

LAYERS = [{"op": "attention", "window": 4, "keep_prefix": 3}, "mlp", "mamba2", {"op": "mla", "n_heads": 2}, "mlp"]


def spec_of(meta_tokens: int, layers=LAYERS, **extra):
    return load_spec({"d_model": 32, "vocab_size": 50, "max_seq_len": 64, "meta_tokens": meta_tokens,
                      "layers": layers, **extra})


def test_meta_tokens_are_a_learned_prefix_whose_logits_are_dropped():
    """The model with meta tokens is the same model without them reading the meta tokens as a prefix: set the
    meta tokens to the embeddings of three tokens, and the logits equal the plain model's on [those, tokens]."""
    torch.manual_seed(0)
    with_meta = build_model(spec_of(3)).eval()
    plain = build_model(spec_of(0)).eval()
    plain.load_state_dict({k: v for k, v in with_meta.state_dict().items() if k != "meta_tokens.weight"})
    prefix, tokens = torch.tensor([[7, 1, 30]]), torch.randint(0, 50, (1, 12))
    with torch.no_grad():
        with_meta.meta_tokens.weight.copy_(with_meta.embed(prefix)[0])
    logits = with_meta(tokens).logits
    assert logits.shape == (1, 12, 50)
    torch.testing.assert_close(logits, plain(torch.cat([prefix, tokens], 1)).logits[:, 3:], atol=1e-5, rtol=1e-5)


def test_meta_tokens_are_trained_and_change_the_output():
    model = build_model(spec_of(3))
    tokens = torch.randint(0, 50, (2, 9))
    model(tokens).logits.logsumexp(-1).sum().backward()
    assert model.meta_tokens.weight.grad is not None and model.meta_tokens.weight.grad.abs().sum() > 0
    before = model(tokens).logits
    with torch.no_grad():
        model.meta_tokens.weight.add_(1.0)
    assert not torch.allclose(model(tokens).logits, before)


def test_decoding_starts_after_the_meta_tokens():
    model = build_model(spec_of(4)).eval()
    tokens = torch.randint(0, 50, (2, 17))
    full = model(tokens).logits
    state = model.init_state(2)
    assert state[0]["pos"] == 4 and state[3]["latent"].shape[1] == 4  # init_state has run the meta tokens
    pieces, start = [], 0
    for end in [5, 6, 7, 17]:
        out = model(tokens[:, start:end], state)
        pieces.append(out.logits)
        state = out.state
        start = end
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=2e-5, rtol=1e-4)
    generated = model.generate(tokens[:1, :5], 6, temperature=0)
    for i in range(6):  # cached greedy decoding equals recomputing from the whole prefix each step
        assert generated[0, 5 + i] == model(generated[:, :5 + i]).logits[0, -1].argmax()


@pytest.mark.parametrize("seq_len", [8, 40])
def test_costs_count_the_meta_tokens(seq_len):
    n, d = 3, 32
    spec, plain = spec_of(n), spec_of(0)
    cost, without = model_cost(spec, seq_len, dtype_bytes=4), model_cost(plain, seq_len, dtype_bytes=4)
    model = build_model(spec)
    assert cost.params == sum(p.numel() for p in model.parameters()) == without.params + n * d
    assert cost.non_embedding_params == without.non_embedding_params  # they count with the embedding
    longer = model_cost(plain, seq_len + n, dtype_bytes=4)  # every layer runs over n + seq_len positions
    head = 2.0 * d * 50
    assert cost.flops_per_token == pytest.approx((longer.flops_per_token - head) * (seq_len + n) / seq_len + head)
    assert cost.state_bytes == longer.state_bytes
    state = model.init_state(1)
    state = model(torch.randint(0, 50, (1, seq_len)), state).state
    attention, mamba, mla = state[0], state[2], state[3]
    held = (attention["k"].numel() + attention["v"].numel() + sum(t.numel() for t in mamba.values()) +
            mla["latent"].numel() + mla["rope_key"].numel())
    assert cost.state_bytes == 4 * held


def test_memory_estimate_runs_the_layers_over_the_meta_tokens():
    with_meta = estimate_memory(spec_of(16), 32, 2, 1)
    plain = estimate_memory(spec_of(0), 32, 2, 1)
    assert with_meta.activations > plain.activations


def test_meta_tokens_must_not_be_negative():
    from composer import SpecError

    with pytest.raises(SpecError) as info:
        spec_of(-1)
    assert info.value.path == "meta_tokens" and "expected an integer >= 0, got -1" in info.value.message
