"""HybridLM: parameter counts, streaming, generation, sharing, loops, and user-registered primitives."""

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from composer import build_model, load_spec, model_cost
from primitives import Cost, Primitive, register, registered, unregister

BASE = {"d_model": 32, "vocab_size": 50, "max_seq_len": 64}


def spec_of(layers, **extra):
    return load_spec({**BASE, **extra, "layers": layers})


def n_params(model):
    return sum(p.numel() for p in model.parameters())


SPECS = {
    "gpt": ["attention", "mlp"] * 2,
    "untied_layernorm_post": dict(layers=[{"op": "attention", "n_heads": 4, "bias": True}, {"op": "mlp", "kind": "gelu", "bias": True}],
                                  tie_embeddings=False, norm="layernorm", norm_position="post"),
    "gqa_window_qknorm_forget": [{"op": "attention", "n_heads": 4, "n_kv_heads": 2, "window": 5, "qk_norm": True,
                                  "forget_gate": True}, "mlp"],
    "sinks_window_head_gate_partial_rope": [{"op": "attention", "n_heads": 4, "n_kv_heads": 2, "window": 5,
                                             "sinks": True, "output_gate": "head", "rope_fraction": 0.5,
                                             "bias": True}, "mlp"],
    "qwen3_next_gated_attention_relu2": [{"op": "attention", "n_heads": 2, "output_gate": "channel", "qk_norm": True,
                                          "rope_dims": 4}, {"op": "mlp", "kind": "relu2", "bias": True}],
    "meta_tokens_kept_through_window": dict(meta_tokens=3, layers=[
        {"op": "attention", "window": 4, "keep_prefix": 3, "sinks": True}, "mlp",
        {"op": "mla", "q_lora_rank": 8, "bias": True}, "mlp"]),
    "mla_nope": [{"op": "mla", "rope": False, "n_heads": 2, "kv_lora_rank": 6, "qk_rope_head_dim": 4}, "mlp"],
    "loop": [{"loop": {"times": 3, "body": ["attention", "mlp"], "inject": "concat", "iteration_embedding": True,
                       "halting": "act"}}],
    "parallel": [{"parallel": ["attention", {"op": "attention", "window": 3}, "mlp"], "combine": "concat_proj"}],
    "split": [{"parallel": [{"op": "attention", "n_heads": 2}, "mlp"], "combine": "concat", "split": [0.5, 0.5]}],
    "share": [{"op": "attention", "name": "g"}, "mlp", {"share": "g", "adapter": {"kind": "lora", "rank": 4}},
              {"share": "g", "adapter": "linear"}, "mlp"],
}


def build(name):
    value = SPECS[name]
    return spec_of(value) if isinstance(value, list) else load_spec({**BASE, **value})


@pytest.mark.parametrize("name", list(SPECS))
def test_analytic_params_equal_module(name):
    spec = build(name)
    model = build_model(spec)
    cost = model_cost(spec)
    assert cost.params == n_params(model)
    assert sum(r.cost.params for r in cost.layers if r.depth == 0) == cost.non_embedding_params - (
        spec.d_model if spec.norm_position == "pre" else 0)


@pytest.mark.parametrize("name", list(SPECS))
def test_streaming_equals_full_forward(name):
    model = build_model(build(name)).eval()
    tokens = torch.randint(0, 50, (2, 21))
    full = model(tokens).logits
    for cuts in ([10], [1, 2, 3, 20], list(range(1, 21))):
        state = model.init_state(2)
        pieces, start = [], 0
        for end in cuts + [21]:
            logits, state, _ = model(tokens[:, start:end], state)
            pieces.append(logits)
            start = end
        torch.testing.assert_close(torch.cat(pieces, 1), full, atol=2e-5, rtol=1e-4)


def primitive_layers():
    """One small model per registered primitive (token mixers followed by an MLP)."""
    out = []
    for name in sorted(registered()):
        if name.startswith("toy_"):
            continue
        out.append(pytest.param(name, id=name))
    return out


@pytest.mark.parametrize("op", primitive_layers())
def test_every_primitive_streams_and_counts_exactly(op):
    spec = spec_of([op, "mlp", op], d_model=64)
    model = build_model(spec).eval()
    assert model_cost(spec).params == n_params(model)
    tokens = torch.randint(0, 50, (2, 19))
    full = model(tokens).logits
    state = model.init_state(2)
    first, state, _ = model(tokens[:, :7], state)
    rest = [first]
    for t in range(7, 19):
        logits, state, _ = model(tokens[:, t:t + 1], state)
        rest.append(logits)
    torch.testing.assert_close(torch.cat(rest, 1), full, atol=5e-5, rtol=1e-4)


def test_cached_generation_equals_recomputing():
    model = build_model(spec_of([{"op": "attention", "window": 6}, "mlp", "attention", "mlp"])).eval()
    prompt = torch.randint(0, 50, (3, 5))
    out = model.generate(prompt, max_new_tokens=12, temperature=0)
    seq = prompt
    for _ in range(12):
        nxt = model(seq).logits[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], 1)
    assert torch.equal(out, seq)


def test_sampling_respects_top_k_and_is_seeded():
    model = build_model(spec_of(["attention", "mlp"])).eval()
    prompt = torch.zeros(2, 3, dtype=torch.long)
    a = model.generate(prompt, 8, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(1))
    b = model.generate(prompt, 8, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (2, 11)
    top1 = model.generate(prompt, 8, temperature=1.0, top_k=1)
    assert torch.equal(top1, model.generate(prompt, 8, temperature=0))


def test_loop_reuses_weights_and_share_counts_once():
    once = build_model(spec_of([{"loop": {"times": 1, "body": ["attention", "mlp"]}}]))
    thrice = build_model(spec_of([{"loop": {"times": 3, "body": ["attention", "mlp"]}}]))
    assert n_params(once) == n_params(thrice)
    shared = build_model(spec_of([{"op": "attention", "name": "g"}, {"share": "g"}]))
    fresh = build_model(spec_of(["attention", "attention"]))
    attn = 4 * 32 * 32
    assert n_params(fresh) - n_params(shared) == attn
    assert shared.blocks[1].primitive is shared.blocks[0].primitive
    assert len(shared.state_dict()) == len(list(shared.parameters())) + 1  # tied head listed twice


def test_loop_of_one_equals_the_body():
    torch.manual_seed(0)
    plain = build_model(spec_of(["attention", "mlp"]))
    looped = build_model(spec_of([{"loop": {"times": 1, "body": ["attention", "mlp"]}}]))
    looped.load_state_dict({k.replace("blocks.0", "blocks.0.body.0").replace("blocks.1", "blocks.0.body.1"): v
                            for k, v in plain.state_dict().items()})
    tokens = torch.randint(0, 50, (2, 9))
    torch.testing.assert_close(looped(tokens).logits, plain(tokens).logits)


def test_grad_iters_truncates_backprop_through_depth():
    spec = spec_of([{"loop": {"times": 3, "grad_iters": 1, "body": ["attention", "mlp"]}}], tie_embeddings=False)
    model = build_model(spec)
    model(torch.randint(0, 50, (2, 9))).logits.sum().backward()
    assert model.embed.weight.grad is None or model.embed.weight.grad.abs().sum() == 0
    assert model.blocks[0].body[0].op.qkv.weight.grad.abs().sum() > 0
    full = build_model(spec_of([{"loop": {"times": 3, "body": ["attention", "mlp"]}}], tie_embeddings=False))
    full(torch.randint(0, 50, (2, 9))).logits.sum().backward()
    assert full.embed.weight.grad.abs().sum() > 0


def test_loop_times_at_inference_changes_compute():
    model = build_model(spec_of([{"loop": {"times": 2, "body": ["attention", "mlp"], "inject": "add"}}])).eval()
    prompt = torch.randint(0, 50, (1, 6))
    default = model.generate(prompt, 6, temperature=0)
    assert torch.equal(default, model.generate(prompt, 6, temperature=0, loop_times=2))
    more = model.generate(prompt, 6, temperature=0, loop_times=5)
    model.set_loop_times(5)
    seq = prompt
    for _ in range(6):
        seq = torch.cat([seq, model(seq).logits[:, -1].argmax(-1, keepdim=True)], 1)
    model.set_loop_times(None)
    assert torch.equal(more, seq)
    assert model.blocks[0].override is None


def test_act_ponder_cost_is_an_aux_loss():
    model = build_model(spec_of([{"loop": {"times": 3, "body": ["attention", "mlp"], "halting": "act",
                                           "ponder_cost": 0.5}}]))
    _, _, losses = model(torch.randint(0, 50, (2, 9)))
    assert set(losses) == {"ponder"}
    # halting bias starts at sigmoid(-2) ~ 0.12 per step: every token runs all 3 iterations, spending
    # the remainder 1 - 2 * 0.12 at the last: ponder = N + R
    p = torch.sigmoid(torch.tensor(-2.0)).item()
    assert losses["ponder"].item() == pytest.approx(0.5 * (3 + 1 - 2 * p), rel=1e-5)
    sum(losses.values()).backward()
    assert model.blocks[0].halt.bias.grad is not None


@pytest.mark.parametrize("layers", [
    [{"loop": {"times": 3, "body": ["attention", {"op": "moe", "n_experts": 4}]}}],
    [{"op": "moe", "n_experts": 4, "name": "e"}, "attention", {"share": "e"}],
])
def test_aux_losses_sum_over_every_call_of_a_looped_or_shared_primitive(layers):
    model = build_model(spec_of(layers))
    moe = next(m for m in model.modules() if getattr(m, "name", "") == "moe")
    calls = []
    moe.register_forward_hook(lambda module, args, out: calls.append(module.aux_losses()))
    _, _, losses = model(torch.randint(0, 50, (2, 9)))
    assert len(calls) in (2, 3)
    for name in ("moe_balance", "moe_z"):
        torch.testing.assert_close(losses[name], sum(c[name] for c in calls))
    _, _, losses = model(torch.randint(0, 50, (2, 9)))  # a new forward starts a new sum
    torch.testing.assert_close(losses["moe_balance"], sum(c["moe_balance"] for c in calls[-len(calls) // 2:]))


LOOPED_MOE = [{"loop": {"times": 2, "body": ["attention", {"op": "moe", "n_experts": 4}]}},
              {"op": "moe", "n_experts": 4, "name": "e"}, {"share": "e"}]


class Checkpointed(nn.Module):
    """A block run under activation checkpointing: its forward runs again during backward."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x, state=None, **options):
        with torch.utils.checkpoint.set_checkpoint_early_stop(False):  # recompute the whole block
            return torch.utils.checkpoint.checkpoint(self.block, x, state, use_reentrant=False, **options)


def test_recomputed_blocks_count_aux_losses_once():
    model = build_model(spec_of(LOOPED_MOE))
    tokens = torch.randint(0, 50, (2, 9))
    params = [p for p in model.parameters() if p.requires_grad]
    logits, _, expected = model(tokens)
    expected_grads = torch.autograd.grad(logits.sum() + sum(expected.values()), params, allow_unused=True)
    calls = []
    for moe in {id(m): m for m in model.modules() if getattr(m, "name", "") == "moe"}.values():
        moe.register_forward_hook(lambda module, args, out: calls.append(1))
    model.blocks = nn.ModuleList(Checkpointed(b) for b in model.blocks)
    logits, _, losses = model(tokens)
    forward_calls = len(calls)
    grads = torch.autograd.grad(logits.sum() + sum(losses.values()), params, allow_unused=True)
    assert forward_calls == 4 and len(calls) == 2 * forward_calls  # every MoE call ran again in backward
    assert set(losses) == set(expected) == {"moe_balance", "moe_z"}
    for name in expected:
        torch.testing.assert_close(losses[name], expected[name])
    for g, g_ref in zip(grads, expected_grads):
        assert (g is None) == (g_ref is None)
        if g is not None:
            torch.testing.assert_close(g, g_ref)


def test_aux_losses_belong_to_their_call():
    """A nested or later call (an evaluation between forward and backward) leaves a call's losses as they were;
    the streaming form returns them last."""
    model = build_model(spec_of(LOOPED_MOE))
    first = torch.randint(0, 50, (2, 9))
    _, _, losses = model(first)
    kept = {name: value.detach().clone() for name, value in losses.items()}
    _, _, other = model(torch.randint(0, 50, (3, 5)))
    assert not torch.allclose(other["moe_balance"], kept["moe_balance"])
    for name in kept:
        torch.testing.assert_close(losses[name], kept[name])
    sum(losses.values()).backward()
    logits, state, streamed = model(first, model.init_state(2))
    assert logits.shape == (2, 9, 50) and len(state) == len(model.blocks)
    for name in kept:
        torch.testing.assert_close(streamed[name], kept[name])
    assert isinstance(model(first).logits, torch.Tensor) and model(first).state is None


def test_user_registered_primitive_is_usable_by_name():
    @dataclass
    class ToyConfig:
        scale: float = 2.0

    @register("toy_scale")
    class ToyScale(Primitive):
        kind = "channel_mixer"
        Config = ToyConfig

        def __init__(self, d_model, cfg):
            super().__init__(d_model, cfg)
            self.w = nn.Parameter(torch.ones(d_model))

        @classmethod
        def cost(cls, cfg, d_model, seq_len, dtype_bytes=2):
            return Cost(d_model, float(d_model), 0)

        def forward(self, x, state=None):
            return x * self.w * self.cfg.scale, state

    try:
        spec = load_spec("d_model: 16\nvocab_size: 10\nlayers:\n  - {op: toy_scale, scale: 3.0}\n  - attention\n")
        model = build_model(spec)
        assert model.blocks[0].op.cfg.scale == 3.0
        assert model_cost(spec).params == n_params(model)
        assert model(torch.zeros(1, 4, dtype=torch.long)).logits.shape == (1, 4, 10)
    finally:
        unregister("toy_scale")
