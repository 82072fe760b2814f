"""Zamba2's shared transformer block (primitives/zamba2.py): a naive reference of its equations, decoding in pieces,
its exact parameter count, and Zamba2-2.7B's total from Composer's costs of its parts."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from composer.zoo import Figure
from primitives.base import get_primitive, make_config
from primitives.zamba2 import (
    Zamba2Application,
    Zamba2BlockConfig,
    Zamba2SharedBlock,
    application_cost,
    shared_block_cost,
)


def block_and_application(d: int = 16, **params) -> tuple[Zamba2SharedBlock, Zamba2Application]:
    cfg = Zamba2BlockConfig(**{"n_heads": 4, "d_ff": 24, "lora_rank": 3, **params})
    block, application = Zamba2SharedBlock(d, cfg), Zamba2Application(d, cfg)
    with torch.no_grad():  # away from the init, so that norms and the zero LoRA are not trivial
        for p in [*block.parameters(), *application.parameters()]:
            p.add_(0.1 * torch.randn_like(p))
    return block, application


def naive_block(block: Zamba2SharedBlock, application: Zamba2Application, h: torch.Tensor,
                e: torch.Tensor) -> torch.Tensor:
    """The equations of transformers' Zamba2AttentionDecoderLayer and Zamba2HybridLayer's linear, written out."""
    eps = block.cfg.eps
    u = torch.cat([h, e], dim=-1)
    u = u * torch.rsqrt(u.pow(2).mean(-1, keepdim=True) + eps) * block.input_norm
    B, T, _ = u.shape
    H, hd = block.heads, block.head_dim
    q, k, v = (p(u).view(B, T, H, hd).transpose(1, 2) for p in (block.q_proj, block.k_proj, block.v_proj))
    scores = q @ k.transpose(-1, -2) * (hd / 2) ** -0.5
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), -math.inf)
    a = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, H * hd)
    a = block.o_proj(a)
    m = a * torch.rsqrt(a.pow(2).mean(-1, keepdim=True) + eps) * block.pre_ff_norm
    g, up = (block.gate_up(m) + application.lora_up(application.lora_down(m))).chunk(2, dim=-1)
    return application.linear(block.down(F.gelu(g) * up))


def test_the_block_follows_its_equations():
    torch.manual_seed(0)
    block, application = block_and_application()
    h, e = torch.randn(2, 9, 16), torch.randn(2, 9, 16)
    torch.testing.assert_close(block(h, embeddings=e, application=application)[0], naive_block(block, application, h, e),
                               atol=1e-5, rtol=1e-4)


def test_decoding_in_pieces_equals_the_whole_sequence():
    torch.manual_seed(1)
    block, application = block_and_application()
    h, e = torch.randn(2, 10, 16), torch.randn(2, 10, 16)
    whole, _ = block(h, embeddings=e, application=application)
    state, pieces = block.init_state(2), []
    for lo, hi in ((0, 4), (4, 5), (5, 10)):
        y, state = block(h[:, lo:hi], state, embeddings=e[:, lo:hi], application=application)
        pieces.append(y)
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole, atol=1e-5, rtol=1e-4)
    assert state["k"].shape == (2, 4, 10, 8) and int(state["pos"]) == 10
    assert shared_block_cost(block.cfg, 16, 10, dtype_bytes=4).state_bytes == \
        (state["k"].numel() + state["v"].numel()) * 4 // 2


def test_gradients_match_the_naive_reference():
    torch.manual_seed(2)
    block, application = block_and_application()
    h, e = torch.randn(1, 6, 16, requires_grad=True), torch.randn(1, 6, 16)
    params = [*block.parameters(), *application.parameters(), h]
    fast = torch.autograd.grad(block(h, embeddings=e, application=application)[0].square().sum(), params)
    slow = torch.autograd.grad(naive_block(block, application, h, e).square().sum(), params)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_parameter_counts_are_exact():
    for params in ({}, {"lora_rank": 0}, {"d_ff": None, "n_heads": 8}):
        block, application = block_and_application(**params)
        cfg = block.cfg
        assert shared_block_cost(cfg, 16, 32).params == sum(p.numel() for p in block.parameters())
        assert application_cost(cfg, 16).params == sum(p.numel() for p in application.parameters())


def test_zamba2_2_7b_total_from_the_costs_of_its_parts():
    """transformers' Zamba2Config defaults (the released Zyphra/Zamba2-2.7B): d 2560, 54 Mamba-2 layers (expand 2,
    d_state 64, 80 heads of 64, conv 4) each with its input RMSNorm, 9 of them hybrid; 2 shared blocks (32 heads,
    d_ff 4 d), each application a rank-128 gate_up LoRA and a d x d linear; vocabulary 32000, tied; final norm."""
    d, vocab = 2560, 32000
    mamba2 = get_primitive("mamba2")
    mamba_cfg = make_config(mamba2, {"expand": 2.0, "n_heads": 80, "d_state": 64, "kernel_size": 4})
    cfg = Zamba2BlockConfig(n_heads=32, d_ff=4 * d, lora_rank=128)
    total = (54 * (mamba2.cost(mamba_cfg, d, 4096).params + d) + 2 * shared_block_cost(cfg, d, 4096).params
             + 9 * application_cost(cfg, d).params + vocab * d + d)
    assert total == 2_662_214_560
    assert Figure.parse("2.7B").holds(total)


def test_a_hybrid_layer_written_out_decodes_in_pieces():
    """transformers' Zamba2HybridLayer from these modules and Composer's mamba2: h + mamba2(rmsnorm(h + y)), y the
    shared block's output on (h, e); fed in pieces with both states it equals the whole sequence."""
    torch.manual_seed(3)
    block, application = block_and_application()
    mamba2 = get_primitive("mamba2")
    mixer = mamba2(16, make_config(mamba2, {"expand": 2.0, "n_heads": 4, "d_state": 8}))
    norm = torch.nn.RMSNorm(16, eps=1e-5)

    def hybrid(h, e, states):
        y, block_state = block(h, None if states is None else states[0], embeddings=e, application=application)
        out, mixer_state = mixer(norm(h + y), None if states is None else states[1])
        return h + out, (block_state, mixer_state)

    h, e = torch.randn(2, 9, 16), torch.randn(2, 9, 16)
    whole, _ = hybrid(h, e, None)
    states, pieces = (block.init_state(2), mixer.init_state(2)), []
    for lo, hi in ((0, 5), (5, 6), (6, 9)):
        out, states = hybrid(h[:, lo:hi], e[:, lo:hi], states)
        pieces.append(out)
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole, atol=1e-5, rtol=1e-4)


SMALL_ZAMBA2 = """
name: small_zamba2
d_model: 16
vocab_size: 50
max_seq_len: 32
defaults:
  mamba2: {expand: 2.0, n_heads: 4, d_state: 8}
  zamba2_block: {n_heads: 4, d_ff: 24, lora_rank: 3}
layers:
  - mamba2
  - {op: zamba2_block, name: shared_a}
  - mamba2
  - {op: zamba2_block, name: shared_b}
  - mamba2
  - {share: shared_a}
  - mamba2
"""


def small_model():
    from composer.model import build_model

    torch.manual_seed(4)
    model = build_model(SMALL_ZAMBA2)
    with torch.no_grad():  # away from the init: the LoRAs start at zero, the norms at one
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_a_zamba2_model_computes_the_hybrid_layers_written_out():
    """HybridLM from a spec: each `zamba2_block` adds its output to the next Mamba-2 layer's input, before that
    layer's norm, and leaves the residual stream alone; the second use of block A runs A's weights with its own
    application."""
    model = small_model()
    b = model.blocks
    assert b[1].norm is None and b[1].op is not None and b[5].op is None and b[5].primitive is b[1].op
    tokens = torch.randint(0, 50, (2, 11))
    e = model.embed(tokens)

    def mamba_layer(i, h, y=None):
        return h + b[i].op(b[i].norm(h if y is None else h + y))[0]

    def shared(i, h):
        return b[i].primitive(h, embeddings=e, application=b[i].application)[0]

    h = mamba_layer(0, e)
    h = mamba_layer(2, h, shared(1, h))
    h = mamba_layer(4, h, shared(3, h))
    h = mamba_layer(6, h, shared(5, h))
    expected = model.head(model.final_norm(h))
    torch.testing.assert_close(model(tokens).logits, expected, atol=1e-5, rtol=1e-5)


def test_a_zamba2_model_counts_decodes_and_trains_its_shared_blocks():
    from composer.costs import model_cost

    model = small_model()
    assert model_cost(model.spec).params == sum(p.numel() for p in model.parameters())
    tokens = torch.randint(0, 50, (2, 10))
    whole = model(tokens).logits
    state, pieces = model.init_state(2), []
    for lo, hi in ((0, 3), (3, 4), (4, 10)):
        out = model(tokens[:, lo:hi], state)
        state = out.state
        pieces.append(out.logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole, atol=1e-5, rtol=1e-4)
    whole.square().mean().backward()
    a, app_first, app_shared = model.blocks[1].op, model.blocks[1].application, model.blocks[5].application
    assert a.q_proj.weight.grad.abs().sum() > 0 and app_shared.linear.weight.grad.abs().sum() > 0
    assert app_first.linear.weight is not app_shared.linear.weight


def test_feeding_layers_meet_loops_parallel_blocks_and_each_other():
    """Where no plain sub-layer follows (another feeding layer, a loop, the end), the output joins the stream; in a
    parallel block the block is an ordinary branch. Each such model costs exactly and decodes in pieces."""
    from composer.costs import model_cost
    from composer.model import build_model

    specs = [
        "  - {op: zamba2_block, name: z}\n  - {share: z}\n  - mlp\n",
        "  - zamba2_block\n  - loop: 2\n    body: [mamba2, zamba2_block]\n",
        "  - parallel: [zamba2_block, mamba2]\n    split: [0.5, 0.5]\n    combine: concat\n  - zamba2_block\n",
    ]
    head = SMALL_ZAMBA2[:SMALL_ZAMBA2.index("layers:")].replace("n_heads: 4, d_ff", "n_heads: 2, d_ff")
    for layers in specs:
        torch.manual_seed(5)
        model = build_model(head + "layers:\n" + layers)
        assert model_cost(model.spec).params == sum(p.numel() for p in model.parameters()), layers
        tokens = torch.randint(0, 50, (1, 7))
        whole = model(tokens).logits
        state = model.init_state(1)
        first = model(tokens[:, :4], state)
        rest = model(tokens[:, 4:], first.state)
        torch.testing.assert_close(torch.cat([first.logits, rest.logits], dim=1), whole, atol=1e-5, rtol=1e-4)
    model = build_model(head + "layers:\n" + specs[0])
    e = model.embed(tokens := torch.randint(0, 50, (1, 5)))
    z, z2, mlp = model.blocks
    h = e + z.primitive(e, embeddings=e, application=z.application)[0]   # a feeder after a feeder: flushed
    y = z2.primitive(h, embeddings=e, application=z2.application)[0]
    h = h + mlp.op(mlp.norm(h + y))[0]
    torch.testing.assert_close(model(tokens).logits, model.head(model.final_norm(h)), atol=1e-5, rtol=1e-5)
