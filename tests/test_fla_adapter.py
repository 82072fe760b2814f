"""The fla adapter (primitives/ops/kernels/fla_adapter.py) on CPU: fla's Triton kernels need a GPU, but its API and
its PyTorch references run anywhere. Each reference is called as fla's chunk function would be (the keyword
arguments the adapter passes, fla's layout), and the adapter's result must equal Composer's chunked PyTorch form:
outputs, final states and gradients. The adapter's keywords are also held against the signatures of fla's real
chunk functions, and a model whose layers all route through the adapter trains like the PyTorch path."""

import inspect

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("fla.ops.simple_gla.naive")

from fla.ops.delta_rule.naive import delta_rule_recurrence  # noqa: E402
from fla.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule  # noqa: E402
from fla.ops.gla.naive import naive_recurrent_gla  # noqa: E402
from fla.ops.simple_gla.naive import naive_recurrent_simple_gla  # noqa: E402

from composer import build_model, load_spec  # noqa: E402
from primitives.ops import dispatch  # noqa: E402
from primitives.ops.kernels import fla_adapter  # noqa: E402

OPERATORS = list(fla_adapter.FLA_FUNCTIONS)


def _scaled(q, scale):
    """fla's gla and delta-rule references fix the scale at K ** -0.5: fold another scale into q."""
    return q * (scale / q.shape[-1] ** -0.5)


def _options_off(options, *names):
    for name in names:
        assert options.pop(name) is False, name
    assert options == {}, options


def fla_simple_gla(q, k, v, g, scale, initial_state, output_final_state, **options):
    _options_off(options, "state_v_first")
    return naive_recurrent_simple_gla(q, k, v, g, scale=scale, initial_state=initial_state,
                                      output_final_state=output_final_state)


def fla_gla(q, k, v, g, scale, initial_state, output_final_state, **options):
    _options_off(options, "state_v_first")
    return naive_recurrent_gla(_scaled(q, scale), k, v, g, initial_state=initial_state,
                               output_final_state=output_final_state)


def fla_delta_rule(q, k, v, beta, scale, initial_state, output_final_state, **options):
    _options_off(options, "use_qk_l2norm_in_kernel")
    heads_first = [x.transpose(1, 2) for x in (_scaled(q, scale), k, v, beta)]   # this reference is [B, H, T, .]
    o, state = delta_rule_recurrence(*heads_first, initial_state=initial_state, output_final_state=output_final_state)
    return o.transpose(1, 2), state


def fla_gated_delta_rule(q, k, v, g, beta, scale, initial_state, output_final_state, **options):
    _options_off(options, "state_v_first", "use_qk_l2norm_in_kernel", "use_beta_sigmoid_in_kernel")
    return naive_recurrent_gated_delta_rule(q, k, v, beta=beta, g=g, scale=scale, initial_state=initial_state,
                                            output_final_state=output_final_state)


FLA_REFERENCES = {"chunk_simple_gla": fla_simple_gla, "chunk_gla": fla_gla, "chunk_delta_rule": fla_delta_rule,
                  "chunk_gated_delta_rule": fla_gated_delta_rule}


def inputs(operator, B=2, T=37, H=3, K=8, V=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, v = torch.randn(B, T, H, K, generator=gen), torch.randn(B, T, H, V, generator=gen)
    k = F.normalize(torch.randn(B, T, H, K, generator=gen), dim=-1)
    gates = {"chunk_simple_gla": [F.logsigmoid(torch.randn(B, T, H, generator=gen))],
             "chunk_gla": [F.logsigmoid(torch.randn(B, T, H, K, generator=gen))],
             "chunk_delta_rule": [torch.rand(B, T, H, generator=gen)],
             "chunk_gated_delta_rule": [F.logsigmoid(torch.randn(B, T, H, generator=gen)),
                                        torch.rand(B, T, H, generator=gen)]}
    tensors = [x.requires_grad_() for x in (q, k, v, *gates[operator])]
    state = torch.randn(B, H, K, V, generator=gen).requires_grad_()
    return tensors, state


def outputs_and_grads(run, tensors, state):
    o, final = run()
    (o.square().sum() + final.square().sum()).backward()
    grads = [x.grad.clone() for x in (*tensors, state)]
    for x in (*tensors, state):
        x.grad = None
    return [o.detach(), final.detach(), *grads]


@pytest.mark.parametrize("scale", [None, 1.0], ids=["default-scale", "scale-1"])
@pytest.mark.parametrize("operator", OPERATORS)
def test_the_adapter_on_flas_references_equals_the_pytorch_form(operator, scale):
    tensors, state = inputs(operator)
    ours = outputs_and_grads(lambda: dispatch.TORCH_FORMS[operator](*tensors, scale, state, True, 16),
                             tensors, state)
    theirs = outputs_and_grads(lambda: fla_adapter.call(operator, FLA_REFERENCES[operator], *tensors, scale=scale,
                                                        initial_state=state, output_final_state=True),
                               tensors, state)
    for a, b in zip(theirs, ours, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)    # fp32: fla's references compute in it


@pytest.mark.parametrize("operator", OPERATORS)
def test_the_adapter_keeps_composers_dtypes_and_asks_no_state_unless_told(operator):
    tensors, _ = inputs(operator, T=5)
    half = [t.detach().to(torch.bfloat16) if i < 2 else t.detach() for i, t in enumerate(tensors)]   # v in fp32
    kwargs = fla_adapter.fla_arguments(operator, tuple(half), None, None, False)
    assert kwargs["q"].dtype == kwargs["k"].dtype == kwargs["v"].dtype == torch.bfloat16     # one dtype for fla
    o, final = fla_adapter.call(operator, FLA_REFERENCES[operator], *half, initial_state=None)
    assert o.dtype == torch.float32 and o.shape == half[2].shape and final is None         # v's dtype
    _, final = fla_adapter.call(operator, FLA_REFERENCES[operator], *half, output_final_state=True)
    assert final.dtype == torch.float32 and final.shape == (2, 3, 8, 12)


@pytest.mark.parametrize("operator", OPERATORS)
def test_the_adapters_keywords_are_parameters_of_flas_chunk_functions(operator):
    """Each keyword the adapter passes is a named parameter of fla's real function (none swallowed by **kwargs)."""
    parameters = inspect.signature(fla_adapter.fla_function(operator)).parameters
    tensors, state = inputs(operator, T=3)
    kwargs = fla_adapter.fla_arguments(operator, tuple(tensors), None, state, True)
    assert set(kwargs) <= {name for name, p in parameters.items() if p.kind is not p.VAR_KEYWORD}
    assert kwargs["scale"] == 8 ** -0.5 and kwargs["initial_state"].dtype == torch.float32


def test_every_layer_of_the_family_routes_through_the_adapter_and_trains_like_pytorch(monkeypatch):
    """gla, hgrn2, retnet, deltanet, gated_deltanet, mamba2 and linear_attention on the adapter (CPU declared a
    kernel device, fla's references as its kernels): logits and gradients equal the PyTorch path's."""
    spec = load_spec({"d_model": 32, "vocab_size": 16, "max_seq_len": 80,
                      "layers": ["gla", "hgrn2", "retnet", "deltanet", "gated_deltanet", "mamba2",
                                 "linear_attention"]})
    tokens = torch.randint(0, 16, (2, 70), generator=torch.Generator().manual_seed(0))

    def run():
        torch.manual_seed(0)
        model = build_model(spec)
        logits = model(tokens).logits
        F.cross_entropy(logits.flatten(0, 1), tokens.flatten()).backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    want_logits, want_grads = run()
    used = []

    def form(operator):
        used.append(operator)
        reference = FLA_REFERENCES[operator]
        count = len(fla_adapter.FLA_FUNCTIONS[operator][2])
        return lambda *args: fla_adapter.call(operator, reference, *args[:count], scale=args[count],
                                              initial_state=args[count + 1], output_final_state=args[count + 2])

    monkeypatch.setenv("COMPOSER_KERNELS", "trust")
    monkeypatch.setattr(dispatch, "kernel_device", lambda x: True)
    monkeypatch.setattr(dispatch, "kernel_unsupported", lambda operator, tensors: None)   # fp32 references here
    monkeypatch.setattr(dispatch, "kernel_form", form)
    logits, grads = run()
    assert set(used) == set(OPERATORS)
    torch.testing.assert_close(logits, want_logits, atol=1e-4, rtol=1e-4)
    assert grads.keys() == want_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], want_grads[name], atol=1e-4, rtol=1e-4, msg=name)
