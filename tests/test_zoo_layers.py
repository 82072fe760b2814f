"""The recurrent and convolutional layers of the published hybrids (KDA, lightning attention, LFM2's gated short
convolution, RWKV-7, Hyena, sLSTM): each layer's output against its published equations written out directly,
and Hyena's exact counts, streaming and gradients (the others are in test_recurrent_layers.py's tables)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from primitives import ops
from primitives.base import ConfigError, get_primitive, make_config


def build(name: str, d_model: int, **params):
    cls = get_primitive(name)
    cfg = make_config(cls, params)
    cls.validate(cfg, d_model)
    torch.manual_seed(0)
    layer = cls(d_model, cfg)
    with torch.no_grad():  # move away from the init so that gates and norms are not trivially 0 or 1
        for p in layer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return cls, cfg, layer


def causal_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y_t = sum_j w_j x_{t-k+1+j} (+ b) over x [B, T, C], weight [C, k]: the short convolution by hand."""
    k = weight.shape[-1]
    padded = torch.cat([x.new_zeros(x.shape[0], k - 1, x.shape[2]), x], dim=1)
    y = torch.stack([(padded[:, t:t + k] * weight.T).sum(1) for t in range(x.shape[1])], dim=1)
    return y if bias is None else y + bias


def test_kda_is_the_per_channel_gated_delta_rule():
    _, _, layer = build("kda", 32, n_heads=2, head_dim=8, expand_v=1.5)
    x = torch.randn(1, 7, 32)
    H, dk, dv = 2, 8, 12
    qkv = F.silu(causal_conv(layer.qkv(x), layer.conv.conv.weight[:, 0]))
    q, k, v = qkv.split([16, 16, 24], dim=-1)
    q, k, v = F.normalize(q.view(1, 7, H, dk), dim=-1), F.normalize(k.view(1, 7, H, dk), dim=-1), v.view(1, 7, H, dv)
    f = layer.f_proj[1](layer.f_proj[0](x)).view(1, 7, H, dk) + layer.dt_bias.view(H, dk)
    decay = torch.exp(-layer.A_log.exp()[:, None] * F.softplus(f))                       # [1, T, H, dk]
    beta = torch.sigmoid(layer.b_proj(x))
    S, outs = torch.zeros(1, H, dk, dv), []
    for t in range(7):
        S = decay[:, t, :, :, None] * S
        S = S + beta[:, t, :, None, None] * k[:, t, :, :, None] * (v[:, t] - torch.einsum("bhk,bhkv->bhv", k[:, t], S))[:, :, None]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t], S) * dk**-0.5)
    o = torch.stack(outs, 1)
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * layer.o_norm               # one weight, all heads
    o = o * torch.sigmoid(layer.g_proj(x)).view(1, 7, H, dv)
    torch.testing.assert_close(layer(x)[0], layer.o_proj(o.reshape(1, 7, H * dv)), atol=1e-5, rtol=1e-4)


def test_kda_counts_the_kimi_linear_layer():
    """Kimi-Linear-48B-A3B's KDA layer (d 2304, 32 heads of 128, conv 4, low-rank gates of rank 128, no gate bias),
    summed from the released tensor shapes."""
    cls = get_primitive("kda")
    d, P, r, H = 2304, 32 * 128, 128, 32
    released = {"q_proj": d * P, "k_proj": d * P, "v_proj": d * P, "q/k/v_conv1d": 3 * P * 4, "f_a_proj": d * r,
                "f_b_proj": r * P, "b_proj": d * H, "A_log": H, "dt_bias": P, "g_a_proj": d * r, "g_b_proj": r * P,
                "o_norm": 128, "o_proj": P * d}
    cost = cls.cost(cls.Config(n_heads=32, head_dim=128), d, 4096)
    assert cost.params == sum(released.values())


def test_lightning_attention_is_decayed_linear_attention_with_minimax_slopes():
    _, _, layer = build("lightning_attention", 32, n_heads=4, decay_scale=0.7)
    x = torch.randn(2, 9, 32)
    q, k, v = F.silu(layer.qkv(x)).split(32, dim=-1)
    q, k, v = (z.view(2, 9, 4, 8) for z in (q, k, v))
    # MiniMax's get_slope_rate: base^(h + 1) with base = 2^(-8 / H), times the depth factor
    slopes = (1 / 2 ** (8 / 4)) ** torch.arange(1, 5.0) * 0.7
    t = torch.arange(9.0)
    decay = torch.exp(-slopes[:, None, None] * (t[:, None] - t[None, :])).tril()          # [H, T, S]
    o = torch.einsum("bhts,bshd->bthd", torch.einsum("bthd,bshd->bhts", q, k) * decay, v).reshape(2, 9, 32)
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-6) * layer.norm               # RMSNorm over all heads
    expected = layer.o_proj(torch.sigmoid(layer.g_proj(x)) * o)
    torch.testing.assert_close(layer(x)[0], expected, atol=1e-5, rtol=1e-4)


def test_lightning_attention_decay_scale_is_minimax_depth_schedule():
    """The spec value for layer l of L (1 - l / (L - 1 + 1e-5) + 1e-5) reproduces MiniMax's per-layer rates."""
    from primitives.lightning import lightning_log_decay

    L, H = 80, 64
    for layer_idx in (0, 39, 79):
        factor = 1 - layer_idx / (L - 1 + 1e-5) + 1e-5
        minimax = (1 / (2 ** (8 / H))) ** (torch.arange(H) + 1) * factor
        torch.testing.assert_close(lightning_log_decay(H, factor), -minimax.float())


def test_short_conv_bcx_is_lfm2s_gated_convolution():
    _, _, layer = build("short_conv", 24, gating="bcx", expand=1.0, kernel_size=3, conv_bias=True, proj_bias=True)
    x = torch.randn(2, 8, 24)
    b, c, u = layer.in_proj(x).chunk(3, dim=-1)
    conv = causal_conv(b * u, layer.conv.conv.weight[:, 0], layer.conv.conv.bias)
    torch.testing.assert_close(layer(x)[0], layer.out_proj(c * conv), atol=1e-6, rtol=1e-5)
    # LFM2-350M's ShortConv block (d 1024, conv_L_cache 3, no biases): 4 d^2 + 3 d, as its released tensors
    cls = get_primitive("short_conv")
    d = 1024
    lfm2 = cls.cost(cls.Config(gating="bcx", expand=1.0, kernel_size=3), d, 1024)
    assert lfm2.params == d * 3 * d + d * 3 + d * d


def test_rwkv7_time_mixing_formula():
    _, _, layer = build("rwkv7", 32, n_heads=2)
    x = torch.randn(1, 6, 32)
    H, dh = 2, 16
    shifted = torch.cat([torch.zeros(1, 1, 32), x[:, :-1]], dim=1)
    xr, xw, xk, xv, xa, xg = (x + (shifted - x) * mu for mu in layer.mix)
    r, k, v = layer.r_proj(xr), layer.k_proj(xk), layer.v_proj(xv)
    w = torch.exp(-math.exp(-0.5) * torch.sigmoid(layer.w_lora(xw)))                  # decay in (0.545, 1)
    alpha = torch.sigmoid(layer.a_lora(xa))
    g = layer.g_lora(xg)
    kappa = F.normalize((k * layer.k_k).view(1, 6, H, dh), dim=-1)
    k = k * (1 + (alpha - 1) * layer.k_a)
    r, k, v, w, alpha = (z.view(1, 6, H, dh) for z in (r, k, v, w, alpha))
    S, outs = torch.zeros(1, H, dh, dh), []
    for t in range(6):
        kk, a = kappa[:, t], alpha[:, t]
        # S <- S diag(w) - S kk^T (a kk) + v^T k in RWKV's [V, K] layout; here S is [K, V]
        S = (w[:, t, :, :, None] * S - (kk * a)[:, :, :, None] * torch.einsum("bhk,bhkv->bhv", kk, S)[:, :, None]
             + k[:, t, :, :, None] * v[:, t, :, None, :])
        outs.append(torch.einsum("bhk,bhkv->bhv", r[:, t], S))
    o = torch.stack(outs, 1)
    mean, var = o.mean(-1, keepdim=True), o.var(-1, unbiased=False, keepdim=True)
    o = ((o - mean) / torch.sqrt(var + dh * 1e-5)).reshape(1, 6, 32) * layer.norm_weight + layer.norm_bias
    bonus = ((r * k * layer.r_k).sum(-1, keepdim=True) * v).reshape(1, 6, 32)
    torch.testing.assert_close(layer(x)[0], layer.o_proj((o + bonus) * g), atol=1e-5, rtol=1e-4)


def test_rwkv7_default_ranks_are_the_released_models():
    """RWKV-7 World 0.1B (d 768) and 1.5B (d 2048), heads of 64: decay and learning-rate ranks 64 / 96, gate 128 / 256
    (the value-residual rank, 32 / 64, belongs to the path this layer leaves out)."""
    from primitives.rwkv7 import rwkv7_sizes

    cls = get_primitive("rwkv7")
    assert rwkv7_sizes(cls.Config(), 768) == (12, 64, 64, 128)
    assert rwkv7_sizes(cls.Config(), 2048) == (32, 96, 96, 256)


# ----------------------------------------------------------------------------------------------
# Hyena

HYENA_VARIANTS = [{"max_len": 128}, {"order": 3, "max_len": 40, "filter_order": 8, "emb_dim": 5,
                                     "train_pos_emb": False, "short_kernel": 2, "modulate": False}]


@pytest.mark.parametrize("params", HYENA_VARIANTS)
def test_hyena_cost_counts_every_parameter(params):
    for d_model in (32, 40, 64):
        cls, cfg, layer = build("hyena", d_model, **params)
        cost = cls.cost(cfg, d_model, seq_len=128)
        assert cost.params == sum(p.numel() for p in layer.parameters())
        assert cls.cost(cfg, d_model, 128, dtype_bytes=4).state_bytes == 2 * cost.state_bytes
        state = layer.init_state(1)
        assert cost.state_bytes == sum(t.numel() for t in state.values()) * 2


def test_hyena_defaults_are_safaris_pile_operator():
    """Safari's Pile Hyena (d 864, l_max 2048, order 2, filter MLP 33 -> 64 -> 64 -> 64 -> 864, trained z, biases on
    every projection and the short filter): the parameter count from its module shapes."""
    cls = get_primitive("hyena")
    d, L, e, F_ = 864, 2048, 33, 64
    safari = (d * 3 * d + 3 * d) + (d * d + d) + (3 * d * 3 + 3 * d)          # in_proj, out_proj, short_filter
    safari += d + L * e + (e * F_ + F_) + F_ + 2 * (F_ * F_ + F_) + F_ * d    # bias, z, MLP with shared Sin freq
    assert cls.cost(cls.Config(max_len=L), d, L).params == safari


@pytest.mark.parametrize("params", HYENA_VARIANTS)
def test_hyena_streaming_equals_whole(params):
    _, _, layer = build("hyena", 32, **params)
    x = torch.randn(2, 100, 32)   # longer than the 40-tap filter of the second variant
    with torch.no_grad():
        whole, none_state = layer(x)
        assert none_state is None
        for splits in ([1], [64], [5, 6, 7, 8, 70]):
            state, outputs, start = layer.init_state(2), [], 0
            for end in [*splits, 100]:
                y, state = layer(x[:, start:end], state)
                outputs.append(y)
                start = end
            torch.testing.assert_close(torch.cat(outputs, 1), whole, atol=2e-5, rtol=1e-4)


def test_hyena_every_parameter_gets_a_gradient_and_bf16_runs():
    _, _, layer = build("hyena", 32, max_len=64)
    x = torch.randn(2, 13, 32, requires_grad=True)
    y, _ = layer(x)
    y.pow(2).mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16, _ = layer(x.detach()[:1, :9])
    assert torch.isfinite(y16.float()).all()
    torch.testing.assert_close(y16.float(), y[:1, :9].detach(), atol=0.1, rtol=0.1)


def test_hyena_rejects_an_even_embedding():
    with pytest.raises(ConfigError) as error:
        build("hyena", 32, emb_dim=4)
    assert error.value.field == "emb_dim"


def test_hyena_order_two_is_the_gated_long_convolution():
    _, _, layer = build("hyena", 16, max_len=32, emb_dim=5, filter_order=8, train_pos_emb=False)
    x = torch.randn(1, 20, 16)
    u = causal_conv(layer.in_proj(x), layer.short_conv.conv.weight[:, 0], layer.short_conv.conv.bias)
    x0, x1, v = u.split(16, dim=-1)
    # safari's filter: MLP of the complex-exponential embedding, times the exponential modulation
    L, bands = 32, 2
    t = torch.linspace(0, 1, L)[:, None]
    angle = 2 * math.pi * torch.linspace(0, L - 1, L)[:, None] / L
    z = torch.exp(-1j * torch.linspace(1e-4, bands - 1, bands)[None] * angle)
    torch.testing.assert_close(layer.z, torch.cat([t, z.real, z.imag], dim=-1))
    deltas = torch.linspace(math.log(1e-2) / 1.5, math.log(1e-2) / 0.3, 16)
    h = layer.implicit_filter(layer.z) * torch.exp(-t * deltas.abs())                       # [L, d]
    w = v * x1
    conv = torch.stack([sum(h[s] * w[:, i - s] for s in range(i + 1)) for i in range(20)], dim=1)
    y = (conv + w * layer.skip) * x0
    torch.testing.assert_close(layer(x)[0], layer.out_proj(y), atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------------------------
# sLSTM


def test_slstm_layer_is_headwise_exponential_gating():
    _, _, layer = build("slstm", 16, n_heads=2, kernel_size=3)
    x = torch.randn(1, 5, 16)
    H, dh = 2, 8
    x_conv = F.silu(causal_conv(x, layer.conv.conv.weight[:, 0], layer.conv.conv.bias))
    w_if = torch.einsum("bthi,hio->btho", x_conv.view(1, 5, H, dh), layer.w_if)
    w_zo = torch.einsum("bthi,hio->btho", x.view(1, 5, H, dh), layer.w_zo)
    wx = torch.cat([w_if, w_zo], -1).view(1, 5, H, 4, dh) + layer.bias
    y_prev, c, n, m = (torch.zeros(1, H, dh) for _ in range(4))
    outs = []
    for t in range(5):
        raw = wx[:, t] + torch.einsum("bhd,hdge->bhge", y_prev, layer.recurrent)   # each head sees its own units
        i, f, z, o = raw.unbind(2)
        m_new = i if t == 0 else torch.maximum(i, F.logsigmoid(f) + m)
        c = torch.exp(F.logsigmoid(f) + m - m_new) * c + torch.exp(i - m_new) * torch.tanh(z)
        n = torch.exp(F.logsigmoid(f) + m - m_new) * n + torch.exp(i - m_new)
        m, y_prev = m_new, torch.sigmoid(o) * c / n
        outs.append(y_prev)
    y = torch.stack(outs, 1)
    y = ((y - y.mean(-1, keepdim=True)) / torch.sqrt(y.var(-1, unbiased=False, keepdim=True) + 1e-5))
    torch.testing.assert_close(layer(x)[0], y.reshape(1, 5, 16) * layer.norm, atol=1e-5, rtol=1e-4)


def test_slstm_heads_do_not_mix():
    _, _, layer = build("slstm", 16, n_heads=2, kernel_size=0)
    x = torch.randn(1, 6, 16)
    changed = x.clone()
    changed[..., :8] += 1.0                      # head 0's channels only
    with torch.no_grad():
        y, y_changed = layer(x)[0], layer(changed)[0]
    assert not torch.allclose(y[..., :8], y_changed[..., :8])
    torch.testing.assert_close(y[..., 8:], y_changed[..., 8:])


def test_slstm_training_loop_equals_the_step_reference():
    """The layer's recurrence (ops.slstm_scan) against ops.naive_slstm on the layer's own pre-activations."""
    _, _, layer = build("slstm", 16, n_heads=4)
    wx = torch.randn(2, 9, 4, 4, 4)
    torch.testing.assert_close(ops.slstm_scan(wx, layer.recurrent)[0], ops.naive_slstm(wx, layer.recurrent)[0])


def test_hyena_decoding_reuses_its_filter_only_while_the_weights_are_unchanged():
    _, _, layer = build("hyena", 16, max_len=32, emb_dim=5, filter_order=8)
    x = torch.randn(1, 3, 16)
    with torch.no_grad():
        state = layer.init_state(1)
        first, _ = layer(x[:, :1], state)
        assert layer.filter_cache is not None
        again, _ = layer(x[:, :1], state)
        torch.testing.assert_close(again, first)
        layer.implicit_filter[-1].weight.mul_(2.0)          # an in-place change of the weights the filter uses
        changed, _ = layer(x[:, :1], state)
        fresh = layer.compute_filters(32)
    torch.testing.assert_close(layer.filter_cache[2], fresh)
    assert not torch.allclose(changed, first)


def test_gated_deltanet_grouped_value_heads_equal_a_layer_with_the_key_heads_repeated():
    """Qwen3-Next's Gated DeltaNet (key_heads 2 serving 4 value heads, one norm weight per head channel) equals a
    plain Gated DeltaNet of 4 heads whose query/key rows (and their conv channels) repeat each key head twice."""
    d, H, Hk, dk = 32, 4, 2, 8
    _, _, gva = build("gated_deltanet", d, n_heads=H, key_heads=Hk, expand_k=Hk * dk / d, expand_v=1.0,
                      shared_norm=True)
    _, _, plain = build("gated_deltanet", d, n_heads=H, expand_k=H * dk / d, expand_v=1.0)
    K, V = Hk * dk, d
    repeat = torch.arange(Hk).repeat_interleave(H // Hk)                     # value head h reads key head h // 2
    rows = (repeat[:, None] * dk + torch.arange(dk)).reshape(-1)             # [H dk] rows of a [K] projection
    with torch.no_grad():
        q, k, v = gva.qkv.weight.split([K, K, V])
        plain.qkv.weight.copy_(torch.cat([q[rows], k[rows], v]))
        cq, ck, cv = gva.conv.conv.weight.split([K, K, V])
        plain.conv.conv.weight.copy_(torch.cat([cq[rows], ck[rows], cv]))
        for name in ("g_proj", "o_proj", "b_proj", "a_proj"):
            getattr(plain, name).weight.copy_(getattr(gva, name).weight)
        plain.A_log.copy_(gva.A_log)
        plain.dt_bias.copy_(gva.dt_bias)
        plain.norm.copy_(gva.norm.repeat(H))                                  # one weight per channel, all heads
    x = torch.randn(2, 70, d)
    torch.testing.assert_close(gva(x)[0], plain(x)[0], atol=1e-5, rtol=1e-4)
    state = gva.init_state(2)
    assert state["ssm"].shape == (2, H, dk, d // H)
    first, state = gva(x[:, :33], state)
    rest, _ = gva(x[:, 33:], state)
    torch.testing.assert_close(torch.cat([first, rest], 1), gva(x)[0], atol=2e-5, rtol=1e-4)


def test_gated_deltanet_key_heads_must_divide_the_heads():
    cls = get_primitive("gated_deltanet")
    with pytest.raises(ConfigError, match="key_heads=3 must divide n_heads=4") as info:
        cls.validate(make_config(cls, {"n_heads": 4, "key_heads": 3, "expand_k": 0.75}), 32)
    assert info.value.field == "key_heads"


def test_geglu_mlp_is_gemmas():
    """kind geglu: W_down(gelu_tanh(W_gate x) * W_up x), with biases as RecurrentGemma's MLP has them."""
    _, cfg, layer = build("mlp", 16, kind="geglu", d_ff=24, bias=True)
    x = torch.randn(2, 5, 16)
    gate, up = (x @ layer.up.weight.T + layer.up.bias).chunk(2, dim=-1)
    hidden = 0.5 * gate * (1 + torch.tanh(math.sqrt(2 / math.pi) * (gate + 0.044715 * gate**3))) * up
    torch.testing.assert_close(layer(x)[0], hidden @ layer.down.weight.T + layer.down.bias)
    cls = get_primitive("mlp")
    assert cls.cost(cfg, 16, 8).params == 3 * 16 * 24 + 2 * 24 + 16 == sum(p.numel() for p in layer.parameters())


def test_attention_out_bias_alone():
    cls, cfg, layer = build("attention", 32, n_heads=2, n_kv_heads=1, out_bias=True)
    assert layer.qkv.bias is None and layer.out.bias is not None
    plain = cls.cost(make_config(cls, {"n_heads": 2, "n_kv_heads": 1}), 32, 8).params
    assert cls.cost(cfg, 32, 8).params == plain + 32 == sum(p.numel() for p in layer.parameters())
