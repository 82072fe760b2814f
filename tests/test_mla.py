"""Multi-head latent attention against DeepSeek-V3's published formula (the Hugging Face DeepseekV3Attention with
rope_interleave off), Kimi Linear's NoPE form, its latent cache, and its costs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from composer import build_model, load_spec, model_cost
from primitives import ConfigError
from primitives.mla import MLAConfig, MultiHeadLatentAttention

D = 64


def rms(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * weight


def rope(x: torch.Tensor, base: float) -> torch.Tensor:
    """Rotate-half RoPE over all of x's last dim at positions 0..T-1 (x [..., T, r])."""
    r, T = x.shape[-1], x.shape[-2]
    inv_freq = 1.0 / (base ** (torch.arange(0, r, 2, dtype=torch.float32) / r))
    emb = torch.cat([torch.arange(T).float()[:, None] * inv_freq] * 2, dim=-1)
    half = torch.cat([-x[..., r // 2:], x[..., :r // 2]], dim=-1)
    return x * emb.cos().to(x.dtype) + half * emb.sin().to(x.dtype)


def reference(m: MultiHeadLatentAttention, x: torch.Tensor) -> torch.Tensor:
    """q = q_b(norm(q_a x)) (or q_proj x); [c, k_rot] = kv_a x; [k_pass, v] = kv_b(norm(c)); k = [k_pass, rope(k_rot)]
    shared by the heads; q = [q_pass, rope(q_rot)]; eager softmax(q k^T / sqrt(dn + dr)) v; o_proj."""
    s, (B, T, _) = m.sizes, x.shape
    q = m.q_proj(x) if s.q_rank is None else m.q_b(rms(m.q_a(x), m.q_norm))
    q_pass, q_rot = q.view(B, T, s.heads, s.qk).transpose(1, 2).split([s.nope, s.rope], dim=-1)
    c, k_rot = m.kv_a(x).split([s.kv_rank, s.rope], dim=-1)
    kv = m.kv_b(rms(c, m.kv_norm)).view(B, T, s.heads, s.nope + s.value).transpose(1, 2)
    k_pass, v = kv.split([s.nope, s.value], dim=-1)
    k_rot = k_rot.view(B, 1, T, s.rope)
    if m.cfg.rope:
        q_rot, k_rot = rope(q_rot, m.cfg.rope_base), rope(k_rot, m.cfg.rope_base)
    q = torch.cat([q_pass, q_rot], dim=-1)
    k = torch.cat([k_pass, k_rot.expand(B, s.heads, T, s.rope)], dim=-1)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(s.qk)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), -math.inf)
    y = F.softmax(scores, dim=-1) @ v
    return m.out(y.transpose(1, 2).reshape(B, T, s.heads * s.value))


CONFIGS = {
    "deepseek_v3_like": dict(n_heads=4, q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8,
                             v_head_dim=16),
    "v2_lite_like_full_rank_q": dict(n_heads=2, kv_lora_rank=12, qk_nope_head_dim=32, qk_rope_head_dim=16,
                                     v_head_dim=24, bias=True),
    "kimi_linear_nope": dict(n_heads=2, rope=False, kv_lora_rank=16),
    "defaults": dict(),
    "no_rope_dims": dict(qk_rope_head_dim=0, n_heads=2),
}


def built(params: dict) -> MultiHeadLatentAttention:
    torch.manual_seed(0)
    cfg = MLAConfig(**params)
    MultiHeadLatentAttention.validate(cfg, D)
    m = MultiHeadLatentAttention(D, cfg)
    for p in m.parameters():
        p.data.add_(0.2 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("name", list(CONFIGS))
def test_mla_equals_the_published_formula_outputs_and_gradients(name):
    m = built(CONFIGS[name]).double()
    x = torch.randn(2, 11, D, dtype=torch.float64)
    y, _ = m(x)
    expected = reference(m, x)
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(y.square().sum(), list(m.parameters()))
    for g, e in zip(grads, torch.autograd.grad(expected.square().sum(), list(m.parameters()))):
        torch.testing.assert_close(g, e, atol=1e-5 * e.abs().max().item(), rtol=1e-5)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_mla_streams_and_caches_only_the_latent_and_the_rope_key(name):
    m = built(CONFIGS[name]).eval()
    s = m.sizes
    x = torch.randn(2, 15, D)
    full, _ = m(x)
    state = m.init_state(2)
    first, state = m(x[:, :4], state)
    pieces = [first]
    for t in range(4, 15):
        y, state = m(x[:, t:t + 1], state)
        pieces.append(y)
        assert state["latent"].shape == (2, t + 1, s.kv_rank) and state["rope_key"].shape == (2, t + 1, s.rope)
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("seq_len", [1, 9])
def test_mla_cost_counts_parameters_and_the_latent_cache(name, seq_len):
    m = built(CONFIGS[name])
    cost = MultiHeadLatentAttention.cost(m.cfg, D, seq_len, dtype_bytes=4)
    assert cost.params == sum(p.numel() for p in m.parameters())
    _, state = m(torch.randn(1, seq_len, D), m.init_state(1))
    assert cost.state_bytes == 4 * (state["latent"].numel() + state["rope_key"].numel())


def test_mla_cache_is_smaller_than_multi_head_attention_at_the_same_heads():
    """DeepSeek-V3's attention: 128 heads of 128 + 64 dims, latent 512: the cache is (512 + 64) per token, against
    2 x 128 x (128 + 64) for MHA with those query/key dims (the 57x of the DeepSeek-V2 paper's comparison)."""
    cfg = MLAConfig(n_heads=128, q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64,
                    v_head_dim=128)
    cost = MultiHeadLatentAttention.cost(cfg, 7168, 1000, dtype_bytes=2)
    assert cost.state_bytes == (512 + 64) * 1000 * 2
    # DeepSeek-V3's published per-layer attention parameters: q_a, q_a norm, q_b, kv_a, kv_a norm, kv_b, o
    assert cost.params == (7168 * 1536 + 1536 + 1536 * 128 * 192 + 7168 * 576 + 512 + 512 * 128 * 256
                           + 128 * 128 * 7168)


def test_mla_resolves_its_defaults_and_refuses_an_odd_rope_dim():
    resolved = MultiHeadLatentAttention.resolve(MLAConfig(), D)
    assert (resolved.n_heads, resolved.kv_lora_rank, resolved.qk_nope_head_dim, resolved.qk_rope_head_dim,
            resolved.v_head_dim, resolved.q_lora_rank) == (1, 16, 64, 32, 64, None)
    with pytest.raises(ConfigError) as info:
        MultiHeadLatentAttention.validate(MLAConfig(qk_rope_head_dim=5), D)
    assert info.value.field == "qk_rope_head_dim"
    MultiHeadLatentAttention.validate(MLAConfig(qk_rope_head_dim=5, rope=False), D)  # NoPE: any width
    with pytest.raises(ConfigError) as info:
        MultiHeadLatentAttention.validate(MLAConfig(n_heads=3), D)
    assert info.value.field == "n_heads"


def test_mla_in_a_model_counts_and_widens():
    from scaling.rules import widen

    spec = load_spec({"d_model": D, "vocab_size": 40, "layers": [{"op": "mla", "n_heads": 2, "kv_lora_rank": 8,
                                                                  "q_lora_rank": 16}, "mlp"]})
    assert model_cost(spec).params == sum(p.numel() for p in build_model(spec).parameters())
    wide = widen(spec, 2 * D)
    assert wide.layers[0].params == {"n_heads": 4, "kv_lora_rank": 16, "q_lora_rank": 32}
