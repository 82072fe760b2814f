"""The attention options the published hybrids use, each held to a small hand-written form of its published formula.

* attention sinks (gpt-oss): softmax over [scores, sink], then the sink's column dropped;
* partial RoPE (Qwen3-Next's partial_rotary_factor): the Hugging Face rotate-half form on the first r dims only;
* the output gate (Qwen3-Next: sigmoid(W_g x) per channel; head-wise: one per head) before the out projection;
* a prefix kept visible through a sliding window (Hymba's meta tokens with SWA);
* ReLU^2 (Nemotron-H's MLP): down(relu(up(x))^2), no gate;
and their costs: parameters, state bytes (what the cache really holds) and keys per query.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from composer import build_model, load_spec, model_cost
from primitives import ConfigError
from primitives.attention import Attention, AttentionConfig, mean_keys
from primitives.mlp import MLP, MLPConfig

D = 64


def hf_rope(x: torch.Tensor, dims: int, base: float, positions: torch.Tensor) -> torch.Tensor:
    """Hugging Face's apply_rotary_pos_emb with a partial rotary dim: inv_freq = 1 / base^(arange(0, r, 2) / r),
    cos/sin of cat(freqs, freqs), x_rot * cos + rotate_half(x_rot) * sin on the first r dims, the rest passed."""
    inv_freq = 1.0 / (base ** (torch.arange(0, dims, 2, dtype=torch.float32) / dims))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
    rot, rest = x[..., :dims], x[..., dims:]
    half = torch.cat([-rot[..., dims // 2:], rot[..., :dims // 2]], dim=-1)
    return torch.cat([rot * cos + half * sin, rest], dim=-1)


def reference(m: Attention, x: torch.Tensor) -> torch.Tensor:
    """Eager attention with every option, written out from the published definitions (no shared code)."""
    cfg, (B, T, _) = m.cfg, x.shape
    H, G, h = m.n_heads, m.n_kv_heads, m.head_dim
    q, k, v = m.qkv(x).split([H * h, G * h, G * h], dim=-1)
    q, k, v = (t.view(B, T, -1, h).transpose(1, 2) for t in (q, k, v))
    if cfg.qk_norm:
        q = q * torch.rsqrt(q.pow(2).mean(-1, keepdim=True) + 1e-6) * m.q_norm
        k = k * torch.rsqrt(k.pow(2).mean(-1, keepdim=True) + 1e-6) * m.k_norm
    if cfg.rope:
        dims = cfg.rope_dims or (int(h * cfg.rope_fraction) if cfg.rope_fraction else h)
        q, k = hf_rope(q, dims, cfg.rope_base, torch.arange(T)), hf_rope(k, dims, cfg.rope_base, torch.arange(T))
    k, v = k.repeat_interleave(H // G, dim=1), v.repeat_interleave(H // G, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(h)
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    allowed = j <= i
    if cfg.window:
        allowed = allowed & ((j > i - cfg.window) | (j < cfg.keep_prefix))
    scores = scores.masked_fill(~allowed, -math.inf)
    if cfg.sinks:
        combined = torch.cat([scores, m.sinks.view(1, H, 1, 1).expand(B, H, T, 1)], dim=-1)
        combined = combined - combined.max(dim=-1, keepdim=True).values
        probs = F.softmax(combined, dim=-1)[..., :-1]  # the sink's column is dropped
    else:
        probs = F.softmax(scores, dim=-1)
    y = (probs @ v).transpose(1, 2)  # [B, T, H, h]
    if cfg.output_gate == "head":
        y = y * torch.sigmoid(m.gate(x))[..., None]
    y = y.reshape(B, T, H * h)
    if cfg.output_gate == "channel":
        y = y * torch.sigmoid(m.gate(x))
    return m.out(y)


OPTIONS = {
    "sinks": dict(sinks=True, n_heads=4),
    "sinks_gqa_window_bias": dict(sinks=True, n_heads=4, n_kv_heads=2, window=5, bias=True),
    "partial_rope_fraction": dict(rope_fraction=0.25, n_heads=2),
    "partial_rope_dims": dict(rope_dims=6, n_heads=2, rope_base=500.0),
    "qwen3_next_gate": dict(output_gate="channel", qk_norm=True, rope_fraction=0.25, n_heads=2, n_kv_heads=1),
    "head_gate": dict(output_gate="head", n_heads=4, bias=True),
    "kept_prefix": dict(window=3, keep_prefix=4, n_heads=2),
    "qwen2_qkv_bias": dict(qkv_bias=True, n_heads=4, n_kv_heads=2, window=5),
    "everything": dict(window=4, keep_prefix=2, sinks=True, output_gate="channel", rope_dims=8, qk_norm=True,
                       n_heads=4, n_kv_heads=2, bias=True),
}


def built(params: dict) -> Attention:
    torch.manual_seed(0)
    m = Attention(D, AttentionConfig(**params))
    Attention.validate(m.cfg, D)
    for p in m.parameters():  # away from the init: sinks start at 0, norms at 1
        p.data.add_(0.3 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("name", list(OPTIONS))
def test_attention_option_equals_its_published_formula_outputs_and_gradients(name):
    m = built(OPTIONS[name]).double()  # float64 but for the RoPE angles, which both forms take in float32
    x = torch.randn(2, 13, D, dtype=torch.float64)
    y, _ = m(x)
    expected = reference(m, x)
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(y.square().sum(), list(m.parameters()))
    expected_grads = torch.autograd.grad(expected.square().sum(), list(m.parameters()))
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e, atol=1e-5 * e.abs().max().item(), rtol=1e-5)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_attention_option_streams_and_decodes(name):
    m = built(OPTIONS[name]).eval()
    x = torch.randn(2, 17, D)
    full, _ = m(x)
    state = m.init_state(2)
    first, state = m(x[:, :6], state)
    pieces = [first]
    for t in range(6, 17):
        y, state = m(x[:, t:t + 1], state)
        pieces.append(y)
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=2e-5, rtol=1e-4)


def test_a_sink_absorbs_attention_and_at_minus_infinity_changes_nothing():
    m = built(dict(sinks=True, n_heads=4))
    x = torch.randn(1, 9, D)
    with torch.no_grad():
        m.sinks.fill_(-math.inf)
        without, _ = m(x)
        plain = built(dict(n_heads=4))
        plain.load_state_dict({k: v for k, v in m.state_dict().items() if k != "sinks"})
        torch.testing.assert_close(without, plain(x)[0])
        m.sinks.fill_(1e4)  # the sink takes all the weight: the attention output is zero, the layer gives o's bias
        torch.testing.assert_close(m(x)[0], torch.zeros(1, 9, D), atol=1e-6, rtol=0)


def test_the_channel_gate_is_qwen3_next_layout():
    """Qwen3-Next's q_proj emits, per head, the queries then the gate (head_dim each); its gate is the second half
    of each head's block. Splitting such a q_proj into this layer's qkv and gate weights gives its output."""
    cfg = AttentionConfig(n_heads=2, n_kv_heads=1, output_gate="channel", qk_norm=True, rope_fraction=0.25)
    m = built(vars(cfg))
    H, G, h = m.n_heads, m.n_kv_heads, m.head_dim
    q_w, k_w, v_w = m.qkv.weight.split([H * h, G * h, G * h])
    q_proj = torch.cat([q_w.view(H, h, D), m.gate.weight.view(H, h, D)], dim=1).reshape(2 * H * h, D)
    x = torch.randn(1, 7, D)
    query, gate = (x @ q_proj.T).view(1, 7, H, 2 * h).chunk(2, dim=-1)
    assert torch.allclose(query.reshape(1, 7, H * h), x @ q_w.T, atol=1e-6)
    assert torch.allclose(gate.reshape(1, 7, H * h), m.gate(x), atol=1e-6)


def test_kept_prefix_stays_in_a_bounded_cache():
    m = built(dict(window=4, keep_prefix=3, n_heads=2)).eval()
    state = m.init_state(1)
    x = torch.randn(1, 30, D)
    full, _ = m(x)
    outs = []
    for t in range(30):
        y, state = m(x[:, t:t + 1], state)
        outs.append(y)
        assert state["k"].shape[2] == min(t + 1, 4 + 3)
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=2e-5, rtol=1e-4)
    alone, _ = built(dict(window=4, n_heads=2))(x)
    assert not torch.allclose(alone[:, 10:], full[:, 10:])  # the prefix is still seen far past the window


@pytest.mark.parametrize("name", list(OPTIONS))
@pytest.mark.parametrize("seq_len", [1, 5, 23])
def test_attention_cost_counts_parameters_and_the_real_cache(name, seq_len):
    m = built(OPTIONS[name]).eval()
    cost = Attention.cost(m.cfg, D, seq_len, dtype_bytes=4)
    assert cost.params == sum(p.numel() for p in m.parameters())
    _, state = m(torch.randn(1, seq_len, D), m.init_state(1))
    assert cost.state_bytes == 4 * (state["k"].numel() + state["v"].numel())


@pytest.mark.parametrize("seq_len, window, keep_prefix", [(1, None, 0), (40, None, 0), (40, 8, 0), (40, 8, 5),
                                                          (40, 8, 60), (7, 8, 3), (40, 1, 1), (100, 30, 40)])
def test_keys_per_query_count_the_mask(seq_len, window, keep_prefix):
    i, j = torch.arange(seq_len)[:, None], torch.arange(seq_len)[None, :]
    allowed = j <= i
    if window:
        allowed &= (j > i - window) | (j < keep_prefix)
    assert mean_keys(seq_len, window, keep_prefix) == pytest.approx(allowed.sum().item() / seq_len)


def test_qkv_bias_is_on_the_queries_keys_and_values_alone():
    m = built(OPTIONS["qwen2_qkv_bias"])
    assert m.qkv.bias is not None and m.out.bias is None
    plain = Attention.cost(AttentionConfig(n_heads=4, n_kv_heads=2), D, 16)
    assert Attention.cost(m.cfg, D, 16).params - plain.params == m.qkv.bias.numel()


def test_gate_and_sink_costs():
    plain = Attention.cost(AttentionConfig(n_heads=4), D, 16)
    channel = Attention.cost(AttentionConfig(n_heads=4, output_gate="channel"), D, 16)
    head = Attention.cost(AttentionConfig(n_heads=4, output_gate="head", sinks=True), D, 16)
    assert channel.params - plain.params == D * D and channel.flops_per_token - plain.flops_per_token == 2 * D * D
    assert head.params - plain.params == D * 4 + 4 and head.flops_per_token - plain.flops_per_token == 2 * D * 4
    assert channel.state_bytes == head.state_bytes == plain.state_bytes


@pytest.mark.parametrize("params, field, words", [
    (dict(rope_dims=8, rope_fraction=0.5), "rope_dims", "not both"),
    (dict(rope_dims=7), "rope_dims", "even number"),
    (dict(rope_dims=128, n_heads=1), "rope_dims", "rotate 128 dims of a head of 64"),
    (dict(rope_fraction=0.1, n_heads=2), "rope_fraction", "rotate 3 dims"),
    (dict(window=4, keep_prefix=2, forget_gate=True), "keep_prefix", "forget_gate"),
])
def test_impossible_options_name_their_field(params, field, words):
    with pytest.raises(ConfigError) as info:
        Attention.validate(AttentionConfig(**params), D)
    assert info.value.field == field and words in info.value.message


def test_equivalent_options_share_an_arch_id():
    from composer.canonical_form import arch_id

    def spec(**params):
        return load_spec({"d_model": D, "layers": [{"op": "attention", "n_heads": 2, **params}]})

    assert arch_id(spec(rope_fraction=0.25)) == arch_id(spec(rope_dims=8))
    assert arch_id(spec()) == arch_id(spec(rope_dims=32)) != arch_id(spec(rope_dims=8))
    assert arch_id(spec(keep_prefix=3)) == arch_id(spec())  # no window: nothing to keep through
    assert arch_id(spec(window=8, keep_prefix=3)) != arch_id(spec(window=8))


def test_relu2_mlp_is_nemotron_h():
    torch.manual_seed(0)
    m = MLP(D, MLPConfig(kind="relu2", d_ff=96))
    assert [name for name, _ in m.named_parameters()] == ["up.weight", "down.weight"]  # no gate, no bias
    x = torch.randn(2, 5, D)
    torch.testing.assert_close(m(x)[0], F.relu(x @ m.up.weight.T).pow(2) @ m.down.weight.T)
    cost = MLP.cost(MLPConfig(kind="relu2"), D, 16)
    assert cost.params == 2 * D * 4 * D == sum(p.numel() for p in MLP(D, MLPConfig(kind="relu2")).parameters())


def test_zoo_options_cost_what_a_model_holds():
    spec = load_spec({"d_model": D, "vocab_size": 40, "layers": [{"op": "attention", **params}
                                                                 for params in OPTIONS.values()]})
    assert model_cost(spec).params == sum(p.numel() for p in build_model(spec).parameters())
