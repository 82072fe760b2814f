"""The `moe` primitive against a naive per-expert reference; routing losses; capacity; costs; config errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from composer import build_model, load_spec, model_cost
from primitives import ConfigError
from primitives.moe import MoE, MoEConfig
from primitives.ops.grouped_mm import grouped_mm, grouped_mm_loop, grouped_mm_usable

D = 16
IMPLS = ["loop", "grouped"]


def needs_grouped(impl):
    if impl == "grouped" and not grouped_mm_usable(torch.zeros(1, 16), torch.zeros(1, 16, 16)):
        pytest.skip("torch._grouped_mm is not usable for CPU fp32 in this torch")


def reference(m: MoE, x: torch.Tensor) -> torch.Tensor:
    """Every expert on every token, weighted by its routing weight (zero when not chosen or dropped)."""
    cfg = m.cfg
    batch, seq, d = x.shape
    flat = x.reshape(-1, d)
    logits = flat @ m.router.weight.T + (m.router.bias if cfg.bias else 0)
    scores = logits.softmax(-1) if cfg.score == "softmax" else logits.sigmoid()
    chosen = (scores + (m.score_bias if cfg.score_correction else 0)).topk(cfg.top_k, dim=-1).indices
    top = scores.gather(-1, chosen)
    weights = (top / top.sum(-1, keepdim=True) if cfg.renormalize else top) * cfg.routed_scale
    keep = torch.ones_like(weights)
    if cfg.capacity_factor is not None:
        capacity = math.ceil(cfg.capacity_factor * batch * seq * cfg.top_k / cfg.n_experts)
        used = [0] * cfg.n_experts
        for t in range(seq):
            for b in range(batch):
                for j in range(cfg.top_k):
                    e = int(chosen[b * seq + t, j])
                    if used[e] < capacity:
                        used[e] += 1
                    else:
                        keep[b * seq + t, j] = 0.0
    y = torch.zeros_like(flat)
    for e in range(cfg.n_experts):
        gate_weight = ((chosen == e) * weights * keep).sum(-1, keepdim=True)
        gate, up = (flat @ m.w_up[e] + (m.b_up[e] if cfg.bias else 0)).chunk(2, dim=-1)
        if cfg.activation == "clamped_swiglu":   # gpt-oss's experts, written out
            gate, up = gate.clamp(max=7.0), up.clamp(-7.0, 7.0)
            hidden = (up + 1) * gate * torch.sigmoid(1.702 * gate)
        else:
            hidden = F.silu(gate) * up
        y = y + gate_weight * (hidden @ m.w_down[e] + (m.b_down[e] if cfg.bias else 0))
    if cfg.n_shared_experts:
        gate, up = m.shared_up(flat).chunk(2, dim=-1)
        shared = m.shared_down(F.silu(gate) * up)
        y = y + (shared * torch.sigmoid(flat @ m.shared_gate.weight.T) if cfg.shared_gate else shared)
    return y.view(batch, seq, d)


def outputs_and_grads(m, x, fn, upstream):
    x = x.clone().requires_grad_(True)
    y = fn(x)
    params = [x, *(p for p in m.parameters() if p.requires_grad)]
    return y, torch.autograd.grad(y, params, upstream)


CASES = [
    dict(),
    dict(score="sigmoid"),
    dict(score="sigmoid", renormalize=False),
    dict(renormalize=False),
    dict(n_shared_experts=2),
    dict(top_k=3, n_experts=5),
    dict(capacity_factor=0.75),
    dict(capacity_factor=1.0, score="sigmoid", n_shared_experts=1),
    dict(bias=True, activation="clamped_swiglu", top_k=3),                                    # gpt-oss
    dict(n_shared_experts=1, shared_gate=True, renormalize=True),                             # Qwen3-Next
    dict(score="sigmoid", score_correction=True, routed_scale=2.5, n_shared_experts=1),       # Kimi Linear
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("overrides", CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_matches_naive_reference_outputs_and_gradients(impl, overrides):
    needs_grouped(impl)
    m = MoE(D, MoEConfig(expansion=1.5, **overrides))
    m.impl = impl
    x = torch.randn(3, 7, D)
    upstream = torch.randn(3, 7, D)
    y, grads = outputs_and_grads(m, x, lambda x: m(x)[0], upstream)
    y_ref, grads_ref = outputs_and_grads(m, x, lambda x: reference(m, x), upstream)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    names = ["x", *(n for n, p in m.named_parameters() if p.requires_grad)]
    for name, g, g_ref in zip(names, grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-5, msg=lambda msg, name=name: f"{name}: {msg}")


@pytest.mark.parametrize("impl", IMPLS)
def test_expert_without_tokens_matches_reference_and_gets_zero_gradient(impl):
    needs_grouped(impl)
    m = MoE(D, MoEConfig(n_experts=8, top_k=2, expansion=1.5))
    m.impl = impl
    x = torch.randn(1, 3, D)  # 3 tokens x 2 choices reach at most 6 of 8 experts
    chosen = m.route(x.reshape(-1, D))[3]
    idle = sorted(set(range(8)) - set(chosen.flatten().tolist()))
    assert len(idle) >= 2
    upstream = torch.randn(1, 3, D)
    y, grads = outputs_and_grads(m, x, lambda x: m(x)[0], upstream)
    y_ref, grads_ref = outputs_and_grads(m, x, lambda x: reference(m, x), upstream)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-5)
    named = dict(zip(["x", *(n for n, _ in m.named_parameters())], grads))
    grad_up, grad_down = named["w_up"], named["w_down"]
    assert torch.count_nonzero(grad_up[idle]) == 0 and torch.count_nonzero(grad_down[idle]) == 0
    busy = chosen[0, 0]
    assert torch.count_nonzero(grad_up[busy]) > 0


def test_router_receives_gradients_from_output_and_from_aux_losses():
    m = MoE(D, MoEConfig())
    x = torch.randn(2, 5, D)
    m(x)[0].pow(2).sum().backward()
    from_output = m.router.weight.grad.clone()
    assert from_output.abs().sum() > 0
    m.zero_grad()
    m(x)
    sum(m.aux_losses().values()).backward()
    assert m.router.weight.grad.abs().sum() > 0
    assert m.w_up.grad is None  # aux losses touch only the router


def one_hot_router(score="softmax", scale=3.0):
    """4 experts, top-1, d=4, router = scale * identity: token e_i goes to expert i."""
    m = MoE(4, MoEConfig(n_experts=4, top_k=1, score=score, expansion=1.0, aux_loss_coef=0.5, z_loss_coef=0.25))
    with torch.no_grad():
        m.router.weight.copy_(scale * torch.eye(4))
    return m


@pytest.mark.parametrize("score", ["softmax", "sigmoid"])
def test_balance_loss_is_one_for_uniform_routing_and_larger_when_skewed(score):
    m = one_hot_router(score)
    uniform = torch.eye(4).repeat(3, 1).view(2, 6, 4)  # every expert gets the same share, symmetric scores
    m(uniform)
    aux = m.aux_losses()
    torch.testing.assert_close(aux["moe_balance"], torch.tensor(0.5 * 1.0))
    logits = 3.0 * torch.eye(4)
    torch.testing.assert_close(aux["moe_z"], 0.25 * torch.logsumexp(logits, -1).square().mean())

    skewed = torch.eye(4)[0].expand(2, 6, 4)  # every token goes to expert 0
    m(skewed)
    scores = logits[0].softmax(-1) if score == "softmax" else logits[0].sigmoid() / logits[0].sigmoid().sum()
    expected = 4 * 1.0 * scores[0]  # f_0 = 1, P_0 = probability of expert 0
    torch.testing.assert_close(m.aux_losses()["moe_balance"], 0.5 * expected)
    assert expected > 1.5


def test_capacity_drops_later_positions_deterministically():
    m = MoE(4, MoEConfig(n_experts=2, top_k=1, capacity_factor=1.0, expansion=2.0))
    with torch.no_grad():
        m.router.weight.copy_(torch.tensor([[5.0, 5, 5, 5], [-5, -5, -5, -5]]))
    x = torch.rand(2, 4, 4) + 0.5  # all 8 tokens choose expert 0; capacity = ceil(1.0 * 8 / 2) = 4
    y, _ = m(x)
    dense = MoE(4, MoEConfig(n_experts=2, top_k=1, expansion=2.0))
    dense.load_state_dict(m.state_dict())
    y_dropless, _ = dense(x)
    torch.testing.assert_close(y[:, :2], y_dropless[:, :2])  # positions 0, 1 of both rows are kept
    assert torch.count_nonzero(y[:, 2:]) == 0  # later positions are dropped (contribute zero)
    assert torch.count_nonzero(y_dropless[:, 2:]) > 0
    assert torch.equal(m(x)[0], y)


def test_dropless_chunked_forward_equals_full_forward():
    m = MoE(D, MoEConfig())
    x = torch.randn(2, 9, D)
    y, state = m(x, m.init_state(2))
    assert state is None
    pieces = [m(x[:, :4])[0], m(x[:, 4:5])[0], m(x[:, 5:])[0]]
    torch.testing.assert_close(torch.cat(pieces, dim=1), y, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("overrides", [dict(), dict(n_shared_experts=2), dict(n_experts=3, top_k=3, expansion=0.7)])
def test_cost_params_equal_numel_and_active_params_count_top_k(overrides):
    cfg = MoEConfig(**overrides)
    d = 24
    m = MoE(d, cfg)
    cost = MoE.cost(cfg, d, seq_len=128)
    assert cost.params == sum(p.numel() for p in m.parameters())
    h = round(cfg.expansion * d)
    active = d * cfg.n_experts + 3 * d * h * (cfg.top_k + cfg.n_shared_experts)
    assert cost.active_params == active
    assert cost.flops_per_token == 2 * active
    assert cost.state_bytes == 0


def test_default_active_params_are_close_to_a_dense_swiglu():
    d = 256
    dense = 3 * d * round(8 / 3 * d)
    active = MoE.cost(MoEConfig(), d, 256).active_params
    assert abs(active / dense - 1) < 0.05
    assert round(MoEConfig().expansion * 64) % 8 == 0  # aligned rows for grouped GEMM kernels


@pytest.mark.parametrize("field, overrides", [
    ("top_k", dict(top_k=9)),
    ("top_k", dict(top_k=0)),
    ("n_experts", dict(n_experts=0)),
    ("n_shared_experts", dict(n_shared_experts=-1)),
    ("expansion", dict(expansion=0.0)),
    ("expansion", dict(expansion=0.01)),
    ("capacity_factor", dict(capacity_factor=0.0)),
    ("aux_loss_coef", dict(aux_loss_coef=-1.0)),
    ("z_loss_coef", dict(z_loss_coef=-0.1)),
])
def test_check_names_the_field(field, overrides):
    with pytest.raises(ConfigError) as info:
        MoE.validate(MoEConfig(**overrides), D)
    assert info.value.field == field


def test_model_with_moe_sums_aux_losses_and_costs_exactly():
    spec = load_spec({"d_model": 32, "vocab_size": 40, "max_seq_len": 16,
                      "layers": ["attention", {"op": "moe", "n_experts": 4, "n_shared_experts": 1}]})
    model = build_model(spec)
    assert model_cost(spec).params == sum(p.numel() for p in model.parameters())
    _, _, losses = model(torch.randint(0, 40, (2, 8)))
    assert set(losses) == {"moe_balance", "moe_z"}
    assert losses["moe_balance"] > 0


@pytest.mark.parametrize("impl", IMPLS)
def test_grouped_mm_matches_loop_with_empty_groups_and_expanded_gradients(impl):
    needs_grouped(impl)
    counts = torch.tensor([3, 0, 5, 0])
    x = torch.randn(8, 16, requires_grad=True)
    w = torch.randn(4, 16, 12, requires_grad=True)
    y = grouped_mm(x, w, counts, impl)
    torch.testing.assert_close(y, torch.cat([x[:3] @ w[0], x[3:] @ w[2]]))
    y.sum().backward()  # a gradient with zero strides
    torch.testing.assert_close(x.grad, torch.cat([w[0].sum(-1).expand(3, 16), w[2].sum(-1).expand(5, 16)]))
    assert torch.count_nonzero(w.grad[[1, 3]]) == 0


def test_grouped_mm_auto_falls_back_for_unaligned_sizes():
    x, w = torch.randn(5, 13), torch.randn(2, 13, 7)
    assert not grouped_mm_usable(x, w)
    torch.testing.assert_close(grouped_mm(x, w, torch.tensor([2, 3])), grouped_mm_loop(x, w, [2, 3]))


@pytest.mark.parametrize("overrides, extra, extra_active", [
    # gpt-oss: router bias E, expert biases E (2h + d); a token touches its top_k experts' biases
    (dict(bias=True, top_k=2), lambda d, h, E: E + E * (2 * h + d), lambda d, h, E: E + 2 * (2 * h + d)),
    (dict(n_shared_experts=1, shared_gate=True), lambda d, h, E: d, lambda d, h, E: d),              # Qwen3-Next
    (dict(score_correction=True), lambda d, h, E: E, lambda d, h, E: E),                            # Kimi Linear
])
def test_cost_of_the_published_options_equals_numel(overrides, extra, extra_active):
    d = 24
    base = MoEConfig(**{k: v for k, v in overrides.items() if k in ("top_k", "n_shared_experts")})
    cfg = MoEConfig(**overrides)
    cost, plain = MoE.cost(cfg, d, 128), MoE.cost(base, d, 128)
    h, E = round(cfg.expansion * d), cfg.n_experts
    assert cost.params == sum(p.numel() for p in MoE(d, cfg).parameters()) == plain.params + extra(d, h, E)
    assert cost.active_params == plain.active_params + extra_active(d, h, E)


def test_shared_gate_needs_a_shared_expert():
    with pytest.raises(ConfigError, match="needs n_shared_experts >= 1") as info:
        MoE.validate(MoEConfig(shared_gate=True), 16)
    assert info.value.field == "shared_gate"
