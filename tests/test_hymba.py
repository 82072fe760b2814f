"""Hymba's hybrid-head layer against its parts (Composer's attention and Mamba with the same weights), and its
cross-layer key/value sharing: what the later layer reads, its count, decoding, and the wiring errors (exact counts,
streaming and gradients of the layer alone are in test_recurrent_layers.py's tables)."""

from __future__ import annotations

import pytest
import torch

from composer import HybridLM, load_spec
from composer.costs import model_cost
from primitives.base import ConfigError, get_primitive, make_config
from primitives.common import rms_norm


def build(name: str, d_model: int, **params):
    cls = get_primitive(name)
    cfg = make_config(cls, params)
    cls.validate(cfg, d_model)
    layer = cls(d_model, cfg)
    with torch.no_grad():  # away from the init, so that norms and gates are not trivially 1
        for p in layer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return layer


def test_hybrid_head_is_the_mean_of_the_normed_attention_and_mamba_heads():
    """out_proj((norm_a(attention(x)) + norm_s(mamba(x))) / 2), each branch built from the same weights as
    Composer's own attention and Mamba (their output projections the identity; values as wide as the queries
    at expand 1)."""
    torch.manual_seed(0)
    d, H, G, h, R, N = 32, 2, 1, 16, 3, 8
    hymba = build("hymba", d, n_heads=H, n_kv_heads=G, head_dim=h, expand=1.0, dt_rank=R, d_state=N, window=5,
                  keep_prefix=2)
    attention = build("attention", d, n_heads=H, n_kv_heads=G, head_dim=h, window=5, keep_prefix=2)
    mamba = build("mamba", d, expand=1.0, dt_rank=R, d_state=N, inner_norms=True)
    q, k, v, u, z = hymba.in_proj.weight.split(hymba.split_sizes)
    with torch.no_grad():
        attention.qkv.weight.copy_(torch.cat([q, k, v]))
        attention.out.weight.copy_(torch.eye(d))
        mamba.in_proj.weight.copy_(torch.cat([u, z]))
        mamba.out_proj.weight.copy_(torch.eye(d))
        for name in ("x_proj", "dt_proj", "conv"):
            getattr(mamba, name).load_state_dict(getattr(hymba, name).state_dict())
        for name in ("A_log", "D", "dt_norm", "b_norm", "c_norm"):
            getattr(mamba, name).copy_(getattr(hymba, name))
    x = torch.randn(2, 11, d)
    expected = hymba.out_proj((rms_norm(attention(x)[0], hymba.attn_norm) + rms_norm(mamba(x)[0], hymba.ssm_norm)) / 2)
    torch.testing.assert_close(hymba(x)[0], expected, atol=1e-5, rtol=1e-4)


def test_a_layer_reusing_kv_attends_over_the_earlier_layers_keys_and_values():
    """With the same input, the reusing layer equals a layer with its own queries and SSM heads and the earlier
    layer's key/value columns; it owns no key/value weights."""
    torch.manual_seed(1)
    sizes = {"n_heads": 4, "n_kv_heads": 2, "head_dim": 8}
    earlier, later = build("hymba", 32, **sizes), build("hymba", 32, reuse_kv=True, **sizes)
    later.follow(earlier)
    whole = build("hymba", 32, **sizes)
    whole.load_state_dict({**later.state_dict(), "in_proj.weight": torch.cat([
        later.in_proj.weight[:32], earlier.in_proj.weight[32:32 + 2 * 8 + 2 * 16], later.in_proj.weight[32:]])})
    x = torch.randn(2, 9, 32)
    earlier(x)
    torch.testing.assert_close(later(x)[0], whole(x)[0], atol=1e-5, rtol=1e-4)
    assert later.in_proj.weight.shape[0] == whole.in_proj.weight.shape[0] - 2 * (8 + 16)


SHARED = {"d_model": 32, "vocab_size": 50, "meta_tokens": 3,
          "defaults": {"hymba": {"n_heads": 2, "n_kv_heads": 1, "window": 5, "keep_prefix": 3}},
          "layers": ["hymba", "mlp", {"op": "hymba", "reuse_kv": True}, "mlp", {"op": "hymba", "reuse_kv": True},
                     "mlp", "hymba", "mlp"]}


def test_a_model_sharing_kv_counts_and_decodes_as_it_runs_whole():
    spec = load_spec(SHARED)
    torch.manual_seed(2)
    model = HybridLM(spec).eval()
    cost = model_cost(spec, seq_len=16)
    assert cost.params == sum(p.numel() for p in model.parameters())
    plain = model_cost(load_spec({**SHARED, "layers": ["hymba", "mlp"] * 4}), seq_len=16)
    assert cost.state_bytes < plain.state_bytes  # the reusing layers keep no KV cache of their own
    tokens = torch.randint(0, 50, (2, 14))
    with torch.no_grad():
        whole = model(tokens).logits
        state, steps = model.init_state(2), []
        for piece in (tokens[:, :4], tokens[:, 4:5], tokens[:, 5:11], tokens[:, 11:]):
            out = model(piece, state)
            state = out.state
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), whole, atol=1e-5, rtol=1e-4)


def test_reuse_kv_needs_an_earlier_layer_with_the_same_keys():
    with pytest.raises(ConfigError) as error:
        HybridLM(load_spec({**SHARED, "layers": [{"op": "hymba", "reuse_kv": True}, "mlp"]}))
    assert error.value.field == "reuse_kv"
    with pytest.raises(ConfigError) as error:
        HybridLM(load_spec({**SHARED, "layers": ["hymba", {"op": "hymba", "reuse_kv": True, "window": 7}]}))
    assert error.value.field == "reuse_kv"
