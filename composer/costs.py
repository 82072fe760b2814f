"""Analytic costs of a spec: parameters, FLOPs per token and decoding state, per layer and in total.

Counts follow the module `build_model` makes: the parameter total equals `sum(p.numel())` exactly.
FLOPs are forward FLOPs per token averaged over a sequence of `seq_len` tokens (2 per multiply-add;
norms, activations and softmax are not counted); training FLOPs are 3x forward. State is the decoding
state per sequence after `seq_len` tokens, at `dtype_bytes` bytes per value.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from composer.blocks import adapter_params, norm_params
from composer.spec import ArchSpec, Layer, Loop, Node, Parallel, flatten, split_widths
from primitives.base import ZERO_COST, Cost, get_primitive


@dataclass(frozen=True)
class LayerCost:
    path: str         # position in the model, e.g. `blocks.3` or `blocks.2.body.0` (module names)
    op: str           # primitive name, or `loop` / `parallel` for a region
    cost: Cost
    shared: bool = False
    depth: int = 0    # nesting depth (rows inside a loop or parallel block are indented)


@dataclass(frozen=True)
class ModelCost:
    params: int
    non_embedding_params: int
    active_params: int
    flops_per_token: float
    state_bytes: int
    seq_len: int
    dtype_bytes: int
    layers: list[LayerCost] = field(default_factory=list)

    @property
    def train_flops_per_token(self) -> float:
        return 3.0 * self.flops_per_token

    def as_dict(self) -> dict:
        return {
            "params": self.params,
            "non_embedding_params": self.non_embedding_params,
            "active_params": self.active_params,
            "flops_per_token": self.flops_per_token,
            "train_flops_per_token": self.train_flops_per_token,
            "state_bytes": self.state_bytes,
            "seq_len": self.seq_len,
            "dtype_bytes": self.dtype_bytes,
        }


class _Walker:
    def __init__(self, spec: ArchSpec, seq_len: int, dtype_bytes: int):
        self.spec, self.seq_len, self.dtype_bytes = spec, seq_len, dtype_bytes
        self.rows: list[LayerCost] = []

    def primitive(self, layer: Layer, width: int) -> Cost:
        cls = get_primitive(layer.op)
        cfg = self.spec.config(layer)
        cost = cls.cost(cfg, width, self.seq_len, self.dtype_bytes)
        if layer.share is not None:
            # a shared layer owns no primitive weights: it reuses them (compute and state are its own)
            cost = Cost(0, cost.flops_per_token, cost.state_bytes, 0)
        return cost + cls.application_cost(cfg, width)  # every use owns its application (primitives.base)

    def node(self, node: Node, path: str, depth: int) -> Cost:
        d = self.spec.d_model
        norm = norm_params(self.spec.norm, d) * (2 if self.spec.norm_position == "sandwich" else 1)
        if isinstance(node, Layer):
            if get_primitive(node.op).feeds_next:
                norm = 0  # a feeding layer has no norm (composer.blocks.SubLayer)
            extra = adapter_params(d, node.adapter)
            cost = self.primitive(node, d) + Cost(norm + extra, 2.0 * extra, 0, norm + extra)
            self.rows.append(LayerCost(path, node.op, cost, node.share is not None, depth))
            return cost
        if isinstance(node, Loop):
            row = len(self.rows)
            body = ZERO_COST
            for i, child in enumerate(node.body):
                body = body + self.node(child, f"{path}.body.{i}", depth + 1)
            own, flops = 0, 0.0
            if node.inject == "concat":
                own += 2 * d * d
                flops += 2.0 * 2 * d * d * (node.times - 1)
            if node.iteration_embedding:
                own += node.times * d
            if node.halting == "act":
                own += d + 1
                flops += 2.0 * d * node.times
            cost = body.scaled(flops=node.times, state=node.times) + Cost(own, flops, 0, own)
            self.rows.insert(row, LayerCost(path, f"loop x{node.times}", cost, False, depth))
            return cost
        assert isinstance(node, Parallel)
        row = len(self.rows)
        widths = split_widths(d, node.split) if node.split else [d] * len(node.branches)
        cost = Cost(norm, 0.0, 0, norm)
        for i, (branch, width) in enumerate(zip(node.branches, widths)):
            c = self.primitive(branch, width)
            self.rows.append(LayerCost(f"{path}.branches.{i}", branch.op, c, branch.share is not None, depth + 1))
            cost = cost + c
        if node.combine == "concat_proj":
            proj = sum(widths) * d
            cost = cost + Cost(proj, 2.0 * proj, 0, proj)
        self.rows.insert(row, LayerCost(path, f"parallel ({node.combine})", cost, False, depth))
        return cost


def model_cost(spec: ArchSpec, seq_len: int | None = None, dtype_bytes: int = 2) -> ModelCost:
    """Costs of the whole model at context `seq_len` (default: the spec's `max_seq_len`).

    With `meta_tokens` N every layer runs over N + seq_len positions: the layers are costed at that context, their
    FLOPs spread over the seq_len real tokens (the LM head runs on those only), and the state holds the meta tokens
    too. The meta tokens' N x d_model parameters count with the embedding."""
    seq_len = seq_len or spec.max_seq_len
    positions = seq_len + spec.meta_tokens
    walker = _Walker(spec, positions, dtype_bytes)
    total = ZERO_COST
    for i, node in enumerate(flatten(spec.layers)):
        total = total + walker.node(node, f"blocks.{i}", 0)
    per_token = positions / seq_len
    rows = [replace(row, cost=row.cost.scaled(flops=per_token)) for row in walker.rows]
    d, v = spec.d_model, spec.vocab_size
    embedding = v * d + (0 if spec.tie_embeddings else v * d) + spec.meta_tokens * d
    final_norm = norm_params(spec.norm, d) if spec.norm_position != "post" else 0
    params = total.params + embedding + final_norm
    return ModelCost(
        params=params,
        non_embedding_params=params - embedding,
        active_params=total.active + embedding + final_norm,
        flops_per_token=total.flops_per_token * per_token + 2.0 * d * v,
        state_bytes=total.state_bytes,
        seq_len=seq_len,
        dtype_bytes=dtype_bytes,
        layers=rows,
    )
