"""JetBlock (Jet-Nemotron): the dynamic convolution against its step reference, the layer against its reference
forms (outputs and gradients), a constant generated kernel as a static short convolution, and the released size."""

from __future__ import annotations

import pytest
import torch

from primitives.base import get_primitive, make_config
from primitives.ops import causal_conv1d, dynamic_conv, naive_dynamic_conv, naive_gated_delta_rule


def build(d_model: int, **params):
    cls = get_primitive("jet_block")
    cfg = make_config(cls, params)
    cls.validate(cfg, d_model)
    return cls, cfg, cls(d_model, cfg)


def test_dynamic_conv_equals_its_step_reference_with_gradients():
    torch.manual_seed(0)
    x = torch.randn(2, 11, 6, requires_grad=True)
    kernels = torch.randn(2, 11, 6, 4, requires_grad=True)
    cache = torch.randn(2, 6, 3)
    for c in (None, cache):
        fast, fast_cache = dynamic_conv(x, kernels, c)
        slow, slow_cache = naive_dynamic_conv(x, kernels, c)
        torch.testing.assert_close(fast, slow)
        if c is not None:
            torch.testing.assert_close(fast_cache, slow_cache)
        grads = torch.autograd.grad(fast.pow(2).sum(), (x, kernels))
        expected = torch.autograd.grad(slow.pow(2).sum(), (x, kernels))
        for got, want in zip(grads, expected):
            torch.testing.assert_close(got, want)


def test_dynamic_conv_in_pieces_equals_the_whole():
    x, kernels = torch.randn(1, 9, 5), torch.randn(1, 9, 5, 3)
    whole, _ = dynamic_conv(x, kernels)
    cache, pieces = torch.zeros(1, 5, 2), []
    for start, end in ((0, 1), (1, 5), (5, 9)):
        y, cache = dynamic_conv(x[:, start:end], kernels[:, start:end], cache)
        pieces.append(y)
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole)


def test_a_kernel_the_same_at_every_token_is_a_static_short_conv():
    weight = torch.randn(5, 4)
    x = torch.randn(2, 13, 5)
    dynamic, _ = dynamic_conv(x, weight.expand(2, 13, 5, 4))
    static, _ = causal_conv1d(x, weight, None, None)
    torch.testing.assert_close(dynamic, static)


def test_layer_equals_its_reference_forms_outputs_and_gradients():
    torch.manual_seed(1)
    _, _, layer = build(32, n_heads=2, head_dim=8, expand_v=1.5, kernel_size=3, generator_reduction=4)
    x = torch.randn(2, 70, 32, requires_grad=True)   # crosses a chunk of the chunked delta rule
    fast, _ = layer(x)
    slow, _ = layer.mix(x, None, naive_dynamic_conv, naive_gated_delta_rule)
    torch.testing.assert_close(fast, slow, atol=2e-5, rtol=1e-4)
    leaves = [x, *layer.parameters()]
    grads = torch.autograd.grad(fast.pow(2).sum(), leaves)
    expected = torch.autograd.grad(slow.pow(2).sum(), leaves)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)


def test_decoding_token_by_token_equals_the_reference():
    torch.manual_seed(2)
    _, _, layer = build(32, n_heads=2, head_dim=8, expand_v=2.0)
    x = torch.randn(1, 9, 32)
    with torch.no_grad():
        whole, _ = layer.mix(x, None, naive_dynamic_conv, naive_gated_delta_rule)
        state, steps = layer.init_state(1), []
        for t in range(9):
            y, state = layer(x[:, t:t + 1], state)
            steps.append(y)
    torch.testing.assert_close(torch.cat(steps, dim=1), whole, atol=2e-5, rtol=1e-4)


def test_released_size_counts_as_summed_by_hand():
    """Jet-Nemotron-2B's JetBlock (d 1536, 12 heads x 96, values 12 x 256, kernel 4, generator 3072 / 8 = 384):
    q, k 2 x 1536 x 1152, v 1536 x 3072, a, b 2 x 1536 x 12, A_log, dt_bias 24, generator 1536 x 384 +
    384 x 12288 + 12288, g_proj and o_proj 2 x 1536 x 3072, norm 256."""
    cls, cfg, layer = build(1536, n_heads=12, head_dim=96, expand_v=2.6666666667, kernel_size=4,
                            generator_reduction=8)
    expected = 2 * 1536 * 1152 + 1536 * 3072 + 2 * 1536 * 12 + 24 + 1536 * 384 + 384 * 12288 + 12288 \
        + 2 * 1536 * 3072 + 256
    assert expected == 23_052_568
    assert cls.cost(cfg, 1536, 1024).params == expected == sum(p.numel() for p in layer.parameters())
    assert cls.cost(cfg, 1536, 1024).state_bytes == (12 * 96 * 256 + 3072 * 3) * 2


@pytest.mark.parametrize("op", ["kda", "jet_block"])
def test_values_that_are_not_whole_channels_are_refused_naming_expand_v(op):
    from composer.errors import UserError
    from composer.spec_parse import load_spec

    spec = {"d_model": 64, "vocab_size": 32, "layers": [{"op": op, "n_heads": 2, "expand_v": 0.3}, "mlp"]}
    with pytest.raises(UserError, match=r"layers\[0\].expand_v: head_dim \* expand_v = 9.6 is not a whole number of "
                                        r"channels \(head_dim = 32\)"):
        load_spec(spec)
    spec["layers"][0]["expand_v"] = 1.5
    assert load_spec(spec).layers[0].op == op
