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
    torch.testing.assert_close(block(h, e, application)[0], naive_block(block, application, h, e),
                               atol=1e-5, rtol=1e-4)


def test_decoding_in_pieces_equals_the_whole_sequence():
    torch.manual_seed(1)
    block, application = block_and_application()
    h, e = torch.randn(2, 10, 16), torch.randn(2, 10, 16)
    whole, _ = block(h, e, application)
    state, pieces = block.init_state(2), []
    for lo, hi in ((0, 4), (4, 5), (5, 10)):
        y, state = block(h[:, lo:hi], e[:, lo:hi], application, state)
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
    fast = torch.autograd.grad(block(h, e, application)[0].square().sum(), params)
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
        y, block_state = block(h, e, application, None if states is None else states[0])
        out, mixer_state = mixer(norm(h + y), None if states is None else states[1])
        return h + out, (block_state, mixer_state)

    h, e = torch.randn(2, 9, 16), torch.randn(2, 9, 16)
    whole, _ = hybrid(h, e, None)
    states, pieces = (block.init_state(2), mixer.init_state(2)), []
    for lo, hi in ((0, 5), (5, 6), (6, 9)):
        out, states = hybrid(h[:, lo:hi], e[:, lo:hi], states)
        pieces.append(out)
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole, atol=1e-5, rtol=1e-4)
