"""The recurrent token mixers: exact parameter counts, streaming equals whole, gradients, config errors."""

from __future__ import annotations

import pytest
import torch

from primitives.base import ConfigError, get_primitive, make_config

LAYERS = ["mamba", "mamba2", "linear_attention", "retnet", "gla", "hgrn2", "deltanet", "gated_deltanet",
          "mlstm", "mingru", "rglru", "short_conv", "kda", "lightning_attention", "rwkv7", "slstm", "hymba",
          "jet_block"]

# Non-default settings per layer, to check the parameter formula beyond the defaults.
VARIANTS = {
    "mamba": [{"expand": 2.0, "d_state": 8, "dt_rank": 3, "kernel_size": 3}, {"dt_rank": 5, "inner_norms": True}],
    "mamba2": [{"expand": 2.0, "n_heads": 4, "d_state": 16, "n_groups": 2, "kernel_size": 2},
               {"expand": 1.5, "n_heads": 3, "d_state": 8, "gated_norm": False}],
    "linear_attention": [{"n_heads": 4, "feature_map": "identity"}, {"n_heads": 2, "expand_k": 0.5}],
    "retnet": [{"n_heads": 4, "expand_k": 1.0, "expand_v": 2.0}],
    "gla": [{"n_heads": 2, "gate_rank": 8, "expand_k": 1.0}],
    "hgrn2": [{"n_heads": 4, "expand_k": 1.0}],
    "deltanet": [{"n_heads": 2, "kernel_size": 2, "output_gate": True}, {"n_heads": 4, "expand_v": 2.0}],
    "gated_deltanet": [{"n_heads": 2, "expand_k": 1.0, "expand_v": 2.0, "kernel_size": 3},
                       {"n_heads": 4, "key_heads": 2, "expand_k": 0.5, "expand_v": 1.0, "shared_norm": True}],
    "mlstm": [{"n_heads": 4, "expand_k": 1.0, "chunk_size": 5}],
    "mingru": [{"expand": 2.0, "output_gate": False}],
    "rglru": [{"expand": 2.0, "n_heads": 4, "kernel_size": 2}, {"n_heads": 2, "bias": True}],
    "short_conv": [{"expand": 2.0, "kernel_size": 3, "conv_bias": True},
                   {"gating": "bcx", "expand": 1.0, "kernel_size": 3, "conv_bias": True, "proj_bias": True}],
    "kda": [{"n_heads": 2, "head_dim": 16, "expand_v": 1.5, "gate_rank": 7, "gate_bias": True, "kernel_size": 3}],
    "lightning_attention": [{"n_heads": 4, "expand_k": 0.5, "expand_v": 0.5, "decay_scale": 0.25}],
    "rwkv7": [{"n_heads": 4, "decay_rank": 8, "a_rank": 4, "gate_rank": 16}],
    "slstm": [{"n_heads": 2, "kernel_size": 0}],
    "hymba": [{"n_heads": 4, "n_kv_heads": 2, "head_dim": 16, "expand": 1.5, "dt_rank": 5, "window": 8,
               "keep_prefix": 2}, {"n_heads": 2, "inner_norms": False, "rope": False, "reuse_kv": True}],
    "jet_block": [{"n_heads": 2, "head_dim": 24, "expand_v": 2.0, "kernel_size": 3, "generator_reduction": 5}],
}

# A setting `check` must reject at d_model = 64, and the field it must name.
INVALID = {
    "mamba": ({"d_state": 0}, "d_state"),
    "mamba2": ({"n_heads": 5}, "n_heads"),
    "linear_attention": ({"n_heads": 3}, "n_heads"),
    "retnet": ({"n_heads": 3}, "n_heads"),
    "gla": ({"n_heads": 3}, "n_heads"),
    "hgrn2": ({"n_heads": 3}, "n_heads"),
    "deltanet": ({"n_heads": 3}, "n_heads"),
    "gated_deltanet": ({"n_heads": 3}, "n_heads"),
    "mlstm": ({"n_heads": 3}, "n_heads"),
    "mingru": ({"expand": 0.0}, "expand"),
    "rglru": ({"n_heads": 5}, "n_heads"),
    "short_conv": ({"kernel_size": 0}, "kernel_size"),
    "kda": ({"n_heads": 3}, "n_heads"),
    "lightning_attention": ({"n_heads": 3}, "n_heads"),
    "rwkv7": ({"n_heads": 3}, "n_heads"),
    "slstm": ({"n_heads": 3}, "n_heads"),
    "hymba": ({"n_heads": 4, "n_kv_heads": 3}, "n_kv_heads"),
    "jet_block": ({"n_heads": 4, "head_dim": 10, "expand_v": 0.25}, "expand_v"),
}


def build(name: str, d_model: int, **params):
    cls = get_primitive(name)
    cfg = make_config(cls, params)
    cls.validate(cfg, d_model)
    return cls, cfg, cls(d_model, cfg)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", LAYERS)
def test_cost_params_match_the_module(name):
    for d_model in (32, 40, 64, 96):
        for params in [{}] + (VARIANTS[name] if d_model == 64 else []):
            cls, cfg, layer = build(name, d_model, **params)
            cost = cls.cost(cfg, d_model, seq_len=128)
            assert cost.params == n_params(layer), (d_model, params)
            assert cost.flops_per_token > 2 * cost.params * 0.5
            assert cost.state_bytes > 0
            assert cls.cost(cfg, d_model, 128, dtype_bytes=4).state_bytes == 2 * cost.state_bytes
            assert cls.cost(cls.resolve(cfg, d_model), d_model, 128) == cost


@pytest.mark.parametrize("name", [n for n in LAYERS if n != "hymba"])  # hymba: attention and Mamba in one layer
def test_defaults_are_sized_like_attention(name):
    d_model = 256
    cls = get_primitive(name)
    params = cls.cost(cls.Config(), d_model, seq_len=1024).params
    assert 0.5 * 4 * d_model**2 <= params <= 2 * 4 * d_model**2, params / (4 * d_model**2)


def run_in_pieces(layer, x, splits):
    state = layer.init_state(x.shape[0], x.device, x.dtype)
    outputs, start = [], 0
    for end in list(splits) + [x.shape[1]]:
        y, state = layer(x[:, start:end], state)
        outputs.append(y)
        start = end
    return torch.cat(outputs, dim=1), state


@pytest.mark.parametrize("name", LAYERS)
def test_streaming_equals_whole(name):
    params = VARIANTS[name][0] if name in ("mamba2", "mlstm") else {}
    _, _, layer = build(name, 64, **params)
    x = torch.randn(2, 100, 64)  # crosses a chunk boundary (64) of the chunked operators
    with torch.no_grad():
        whole, none_state = layer(x)
        assert none_state is None
        for splits in ([1], [64], [99], [5, 6, 7, 8, 70]):
            pieces, _ = run_in_pieces(layer, x, splits)
            torch.testing.assert_close(pieces, whole, atol=2e-5, rtol=1e-4)
        steps, state = run_in_pieces(layer, x[:, :12], range(1, 12))
        torch.testing.assert_close(steps, whole[:, :12], atol=2e-5, rtol=1e-4)
        # The state after a piece continues it: the carried state differs from a fresh one.
        fresh = layer.init_state(2, x.device, x.dtype)
        assert any(not torch.equal(state[key], fresh[key]) for key in fresh)


@pytest.mark.parametrize("name", LAYERS)
def test_every_parameter_gets_a_gradient(name):
    _, _, layer = build(name, 32)
    x = torch.randn(2, 13, 32, requires_grad=True)
    y, _ = layer(x)
    assert y.shape == x.shape
    y.pow(2).mean().backward()
    for pname, p in layer.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", LAYERS)
def test_check_rejects_an_impossible_setting(name):
    params, field = INVALID[name]
    with pytest.raises(ConfigError) as error:
        build(name, 64, **params)
    assert error.value.field == field


@pytest.mark.parametrize("name", LAYERS)
def test_bf16_autocast_forward_runs(name):
    _, _, layer = build(name, 32)
    x = torch.randn(1, 9, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = layer(x)
        state = layer.init_state(1, x.device, torch.float32)
        y_step, state = layer(x[:, :1], state)
    assert y.shape == x.shape and torch.isfinite(y.float()).all()
    assert torch.isfinite(y_step.float()).all()
    torch.testing.assert_close(y_step.float(), y[:, :1].float(), atol=0.1, rtol=0.1)


# ----------------------------------------------------------------------------------------------
# Each layer's mathematics against its formula written out directly


def test_short_conv_is_the_causal_convolution_formula():
    from primitives.common import ShortConv

    conv = ShortConv(3, kernel_size=4, bias=True)
    x = torch.randn(2, 9, 3)
    y, _ = conv(x)
    w, b = conv.conv.weight[:, 0], conv.conv.bias  # [C, k]
    padded = torch.cat([torch.zeros(2, 3, 3), x], dim=1)
    expected = torch.stack([(padded[:, t:t + 4] * w.T).sum(1) + b for t in range(9)], dim=1)
    torch.testing.assert_close(y, expected)


def test_linear_attention_is_normalised_elu_attention():
    _, _, layer = build("linear_attention", 32, n_heads=2)
    x = torch.randn(2, 11, 32)
    q, k, v, _ = layer.project(x, None)
    phi_q, phi_k = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1
    scores = torch.einsum("bthd,bshd->bhts", phi_q, phi_k).tril()
    o = torch.einsum("bhts,bshd->bthd", scores, v) / scores.sum(-1).transpose(1, 2)[..., None]
    expected = layer.o_proj(o.reshape(2, 11, 32))
    torch.testing.assert_close(layer(x)[0], expected, atol=1e-5, rtol=1e-4)


def test_retnet_is_parallel_retention():
    _, _, layer = build("retnet", 64, n_heads=2)
    x = torch.randn(1, 10, 64)
    q, k, v, _ = layer.project(x, None)
    gamma = 1 - 2.0 ** (-5 - torch.arange(2.0))
    t = torch.arange(10.0)
    decay = (gamma[:, None, None] ** (t[:, None] - t[None, :])).tril()          # [H, T, S]
    scores = torch.einsum("bthd,bshd->bhts", q, k) * q.shape[-1] ** -0.5 * decay
    o = torch.einsum("bhts,bshd->bthd", scores, v)
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-6)
    expected = layer.o_proj(o.reshape(1, 10, 64) * torch.nn.functional.silu(layer.g_proj(x)))
    torch.testing.assert_close(layer(x)[0], expected, atol=1e-5, rtol=1e-4)


def test_mingru_is_the_gru_interpolation():
    _, _, layer = build("mingru", 16, output_gate=False)
    x = torch.randn(2, 7, 16)
    z_logit, candidate = layer.in_proj(x).chunk(2, dim=-1)
    z, h, hs = torch.sigmoid(z_logit), torch.zeros(2, 16), []
    for t in range(7):
        h = (1 - z[:, t]) * h + z[:, t] * candidate[:, t]
        hs.append(h)
    torch.testing.assert_close(layer(x)[0], layer.out_proj(torch.stack(hs, 1)), atol=1e-6, rtol=1e-5)


def test_rglru_recurrence_formula():
    _, _, layer = build("rglru", 16, n_heads=2)
    x = torch.randn(1, 6, 16)
    gate, u = layer.in_proj(x).chunk(2, dim=-1)
    u, _ = layer.conv(u)
    r, i = torch.sigmoid(layer.recurrence_gate(u)), torch.sigmoid(layer.input_gate(u))
    a = torch.sigmoid(layer.Lambda) ** (8 * r)
    h, hs = torch.zeros(1, 16), []
    for t in range(6):
        h = a[:, t] * h + torch.sqrt(1 - a[:, t] ** 2) * i[:, t] * u[:, t]
        hs.append(h)
    expected = layer.out_proj(torch.stack(hs, 1) * torch.nn.functional.gelu(gate))
    torch.testing.assert_close(layer(x)[0], expected, atol=1e-5, rtol=1e-4)


def test_mamba_selective_scan_formula():
    _, _, layer = build("mamba", 16, d_state=4)
    x = torch.randn(1, 5, 16)
    u, z = layer.in_proj(x).chunk(2, dim=-1)
    u, _ = layer.conv(u)
    dt_low, B, C = layer.x_proj(u).split([layer.dt_rank, 4, 4], dim=-1)
    dt = torch.nn.functional.softplus(layer.dt_proj(dt_low))
    A = -torch.exp(layer.A_log)
    h, ys = torch.zeros(1, layer.d_inner, 4), []
    for t in range(5):
        h = torch.exp(dt[:, t, :, None] * A) * h + dt[:, t, :, None] * B[:, t, None, :] * u[:, t, :, None]
        ys.append((h * C[:, t, None, :]).sum(-1) + layer.D * u[:, t])
    expected = layer.out_proj(torch.stack(ys, 1) * torch.nn.functional.silu(z))
    torch.testing.assert_close(layer(x)[0], expected, atol=1e-5, rtol=1e-4)


def test_hgrn2_forget_gate_complement_is_the_key():
    _, _, layer = build("hgrn2", 32, n_heads=2)
    x = torch.randn(1, 6, 32)
    q, f_logit, v, _ = layer.project(x, None)
    f = torch.sigmoid(f_logit)
    S, outs = torch.zeros(1, 2, 8, 16), []
    for t in range(6):
        S = f[:, t, :, :, None] * S + (1 - f[:, t])[..., None] * v[:, t, :, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t], S))
    o = torch.stack(outs, 1)
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-6)
    expected = layer.o_proj(o.reshape(1, 6, 32) * torch.nn.functional.silu(layer.g_proj(x)))
    torch.testing.assert_close(layer(x)[0], expected, atol=1e-5, rtol=1e-4)


def test_gated_deltanet_update_rule():
    _, _, layer = build("gated_deltanet", 32, n_heads=2)
    x = torch.randn(1, 6, 32)
    q, k, v, beta, _ = layer.qk_beta(x, None)
    alpha = torch.exp(-torch.exp(layer.A_log) * torch.nn.functional.softplus(layer.a_proj(x) + layer.dt_bias))
    S, outs = torch.zeros(1, 2, 8, 16), []
    for t in range(6):
        S = alpha[:, t, :, None, None] * S
        error = v[:, t] - torch.einsum("bhk,bhkv->bhv", k[:, t], S)
        S = S + beta[:, t, :, None, None] * k[:, t, :, :, None] * error[:, :, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t], S) * 8**-0.5)
    o = torch.stack(outs, 1)
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-6)
    expected = layer.o_proj(o.reshape(1, 6, 32) * torch.nn.functional.silu(layer.g_proj(x)))
    torch.testing.assert_close(layer(x)[0], expected, atol=1e-5, rtol=1e-4)
    assert torch.allclose(k.norm(dim=-1), torch.ones(1, 6, 2))


def test_mamba2_ssd_formula():
    _, _, layer = build("mamba2", 32, n_heads=2, d_state=4, n_groups=2, expand=1.0)
    x = torch.randn(1, 6, 32)
    z, xbc, dt = layer.in_proj(x).split([32, 32 + 16, 2], dim=-1)
    xbc, _ = layer.conv(xbc)
    u, B, C = xbc.split([32, 8, 8], dim=-1)
    u, B, C = u.view(1, 6, 2, 16), B.view(1, 6, 2, 4), C.view(1, 6, 2, 4)  # group h serves head h
    dt = torch.nn.functional.softplus(dt + layer.dt_bias)
    decay = torch.exp(-torch.exp(layer.A_log) * dt)                                 # [1, T, H]
    h, ys = torch.zeros(1, 2, 4, 16), []
    for t in range(6):
        h = decay[:, t, :, None, None] * h + B[:, t, :, :, None] * (dt[:, t, :, None] * u[:, t])[:, :, None, :]
        ys.append(torch.einsum("bhn,bhnp->bhp", C[:, t], h) + layer.D[:, None] * u[:, t])
    y = torch.stack(ys, 1).reshape(1, 6, 32) * torch.nn.functional.silu(z)
    y = y.view(1, 6, 2, 16)
    y = (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + 1e-6)).reshape(1, 6, 32) * layer.norm
    torch.testing.assert_close(layer(x)[0], layer.out_proj(y), atol=1e-5, rtol=1e-4)


def test_gla_gate_is_logsigmoid_over_16():
    _, _, layer = build("gla", 32, n_heads=2)
    x = torch.randn(1, 6, 32)
    q, k, v, _ = layer.project(x, None)
    alpha = torch.sigmoid(layer.gk(x)).pow(1 / 16).view(1, 6, 2, 8)
    S, outs = torch.zeros(1, 2, 8, 16), []
    for t in range(6):
        S = alpha[:, t, :, :, None] * S + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t], S) * 8**-0.5)
    o = torch.stack(outs, 1)
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-6)
    expected = layer.o_proj(o.reshape(1, 6, 32) * torch.nn.functional.silu(layer.g_proj(x)))
    torch.testing.assert_close(layer(x)[0], expected, atol=1e-5, rtol=1e-4)
