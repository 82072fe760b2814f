"""paired_scores equals intra_chunk_scores pair by pair (outputs and gradients, fp64), on its one-matmul path
and on the strong-decay path that halves the wide blocks."""

import pytest
import torch

from primitives.ops.chunked_gla import intra_chunk_scores
from primitives.ops.paired_scores import paired_scores


@pytest.mark.parametrize("gate_scale", [0.5, 60.0])  # 60 per step: every block too wide to factorize
@pytest.mark.parametrize("n_queries,n_keys", [(2, 1), (2, 2)])
def test_paired_scores_equal_intra_chunk_scores_with_gradients(gate_scale, n_queries, n_keys):
    gen = torch.Generator().manual_seed(0)
    C, K = 8, 4
    G = (-gate_scale * torch.rand(3, 2, C, K, generator=gen, dtype=torch.float64)).cumsum(-2)
    xs = [torch.randn(3, 2, C, K, generator=gen, dtype=torch.float64) for _ in range(n_queries + n_keys)]
    weight = torch.randn(3, 2, n_queries * C, n_keys * C, generator=gen, dtype=torch.float64)

    def run(fused: bool):
        leaves = [t.clone().requires_grad_() for t in (G, *xs)]
        g, queries, keys = leaves[0], leaves[1:1 + n_queries], leaves[1 + n_queries:]
        if fused:
            scores = paired_scores(queries, keys, g)
        else:
            scores = torch.cat([torch.cat([intra_chunk_scores(x, y, g) for y in keys], -1) for x in queries], -2)
        return scores, torch.autograd.grad((scores * weight).sum(), leaves)

    scores, grads = run(True)
    ref, grads_ref = run(False)
    assert torch.allclose(scores, ref, rtol=1e-10, atol=1e-12)
    for grad, grad_ref in zip(grads, grads_ref):
        assert torch.allclose(grad, grad_ref, rtol=1e-9, atol=1e-11)
