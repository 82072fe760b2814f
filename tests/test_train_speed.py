"""The trainer's fast paths compute what their plain forms do: the fused AdamW update equals the per-tensor one
up to floating-point reassociation, the multi-tensor gradient clipping equals torch's bit for bit, and a run on
the fast paths reaches the losses of a run on the plain ones."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from composer import build_model
from composer.training.setup import make_optimizer
from composer.training.step import clip_grad_norm

HYBRID = {"d_model": 16, "vocab_size": 64, "max_seq_len": 32,
          "layers": ["attention", "mlp", "gated_deltanet", "mlp", "short_conv", "mlp"]}


def _batches(n: int, batch: int = 4, seq: int = 32, vocab: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [(torch.randint(vocab, (batch, seq), generator=gen), torch.randint(vocab, (batch, seq), generator=gen))
            for _ in range(n)]


def _train(model, optimizer, batches, clip) -> list[float]:
    losses = []
    for x, y in batches:
        loss = F.cross_entropy(model(x).logits.flatten(0, 1), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip(model.parameters(), 0.5)
        optimizer.step()
        losses.append(loss.item())
    return losses


def _plain_optimizer(model, lr, weight_decay):
    """make_optimizer's AdamW (the same groups and settings) in its per-tensor form."""
    fused = make_optimizer(model, lr, weight_decay)
    groups = [{"params": list(g["params"]), "weight_decay": g["weight_decay"]} for g in fused.param_groups]
    return torch.optim.AdamW(groups, lr=lr, betas=fused.defaults["betas"], fused=False, foreach=False)


def test_make_optimizer_is_fused_on_cpu():
    optimizer = make_optimizer(build_model(HYBRID), 1e-3, 0.1)
    assert all(group["fused"] for group in optimizer.param_groups)


def test_the_fused_update_is_the_per_tensor_update():
    batches = _batches(4)
    torch.manual_seed(0)
    fast = build_model(HYBRID)
    plain = build_model(HYBRID)
    plain.load_state_dict(fast.state_dict())
    fast_opt = make_optimizer(fast, 3e-3, 0.1)
    plain_opt = _plain_optimizer(plain, 3e-3, 0.1)
    assert not any(group["fused"] for group in plain_opt.param_groups)
    fast_losses = _train(fast, fast_opt, batches, clip_grad_norm)
    plain_losses = _train(plain, plain_opt, batches, torch.nn.utils.clip_grad_norm_)
    assert max(abs(a - b) for a, b in zip(fast_losses, plain_losses)) < 1e-5
    for (name, a), b in zip(fast.named_parameters(), plain.parameters()):
        assert torch.allclose(a, b, rtol=0, atol=1e-5), name
    assert fast_losses[-1] != plain_losses[0]      # the models did train


def test_clip_grad_norm_is_torchs_bit_for_bit():
    model = build_model(HYBRID)
    x, y = _batches(1)[0]
    F.cross_entropy(model(x).logits.flatten(0, 1), y.reshape(-1)).backward()
    grads = [p.grad.clone() for p in model.parameters()]

    def clipped(clip, max_norm):
        for p, g in zip(model.parameters(), grads):
            p.grad = g.clone()
        return clip(model.parameters(), max_norm), [p.grad for p in model.parameters()]

    for max_norm, scaled in ((1e-3, True), (1e3, False)):
        ours, ours_grads = clipped(clip_grad_norm, max_norm)
        theirs, their_grads = clipped(torch.nn.utils.clip_grad_norm_, max_norm)
        assert torch.equal(ours, theirs)
        assert all(torch.equal(a, b) for a, b in zip(ours_grads, their_grads))
        assert all(torch.equal(a, g) for a, g in zip(ours_grads, grads)) != scaled


def test_clip_grad_norm_without_gradients_is_zero():
    model = build_model(HYBRID)
    assert clip_grad_norm(model.parameters(), 1.0).item() == 0.0
