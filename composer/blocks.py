"""The residual blocks a HybridLM is made of: a sub-layer, a parallel block and a weight-tied loop.

Every block maps `(x [B, T, D], state) -> (x, state, losses)`; a state of None means "fresh sequence, no
state wanted", and `losses` are the weighted auxiliary losses of this call by name (MoE balance and z-loss,
loop ponder cost), summed over every primitive call inside it: a primitive in a loop or reused by `share`
counts once per call. Losses travel only as return values (no module keeps them), so a nested call cannot
count twice. Blocks are built from spec nodes by `build_block`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from composer.spec import ArchSpec, Layer, Loop, Node, Parallel, split_widths
from primitives.base import Primitive, get_primitive

Losses = dict[str, torch.Tensor]


def add_losses(total: Losses, more: Losses) -> Losses:
    """A new dict: `total` with `more` added name by name."""
    out = dict(total)
    for name, value in more.items():
        out[name] = out[name] + value if name in out else value
    return out


def make_norm(kind: str, width: int) -> nn.Module:
    return nn.RMSNorm(width, eps=1e-6) if kind == "rmsnorm" else nn.LayerNorm(width)


def norm_params(kind: str, width: int) -> int:
    return width if kind == "rmsnorm" else 2 * width


class Adapter(nn.Module):
    """A per-use adapter on the input of a shared layer: u = x + W x (linear) or x + B A x (LoRA).

    The last matrix starts at zero, so every use starts as the plain shared layer.
    """

    def __init__(self, width: int, kind: str, rank: int = 8):
        super().__init__()
        if kind == "lora":
            self.down = nn.Linear(width, rank, bias=False)
            self.up = nn.Linear(rank, width, bias=False)
        else:
            self.down = None
            self.up = nn.Linear(width, width, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.down(x) if self.down is not None else x)


def adapter_params(width: int, adapter: dict[str, Any] | None) -> int:
    if not adapter:
        return 0
    return 2 * width * adapter["rank"] if adapter["kind"] == "lora" else width * width


class Registry:
    """The primitives seen while building one model: by name, for the `share` layers that reuse them, and the
    latest of each op, for the layers that follow it."""

    def __init__(self):
        self.by_name: dict[str, Primitive] = {}
        self.latest: dict[str, Primitive] = {}  # the last primitive built of each op (`Primitive.follow`)


def call_options(primitive: Primitive, embeddings: torch.Tensor | None,
                 application: nn.Module | None) -> dict[str, Any]:
    """The keyword arguments a primitive's forward takes beyond (x, state): see primitives.base."""
    options: dict[str, Any] = {}
    if primitive.reads_embeddings:
        if embeddings is None:
            raise ValueError(f"{primitive.name} reads the input embeddings: call it through HybridLM")
        options["embeddings"] = embeddings
    if application is not None:
        options["application"] = application
    return options


class SubLayer(nn.Module):
    """x + op(norm(x)) (pre-norm), norm(x + op(x)) (post-norm) or x + out_norm(op(norm(x))) (sandwich).

    A primitive that `feeds_next` has no norm: `feed` gives op(x), which `run_blocks` adds to the next sub-layer's
    input (`forward(..., feed=)`: x + op(norm(x + feed))); `forward` of a feeding layer adds op(x) to the stream.
    """

    def __init__(self, op: Primitive | None, width: int, norm: str, post_norm: bool, dropout: float,
                 shared: Primitive | None = None, adapter: dict[str, Any] | None = None, sandwich: bool = False):
        super().__init__()
        self.op = op
        # A shared primitive is kept out of the module tree: its weights belong to the layer that named it.
        self._shared = [shared] if shared is not None else []
        self.norm = make_norm(norm, width) if not self.feeds_next else None
        self.post_norm = post_norm and not self.feeds_next
        self.out_norm = make_norm(norm, width) if sandwich and not self.feeds_next else None
        self.adapter = Adapter(width, adapter["kind"], adapter.get("rank", 8)) if adapter else None
        self.application = self.primitive.new_application()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def primitive(self) -> Primitive:
        return self.op if self.op is not None else self._shared[0]

    @property
    def feeds_next(self) -> bool:
        return self.primitive.feeds_next

    def init_state(self, batch_size: int, device, dtype) -> Any:
        return self.primitive.init_state(batch_size, device, dtype)

    def _call_primitive(self, h: torch.Tensor, state: Any,
                        embeddings: torch.Tensor | None) -> tuple[torch.Tensor, Any, Losses]:
        if self.adapter is not None:
            h = self.adapter(h)
        y, state = self.primitive(h, state, **call_options(self.primitive, embeddings, self.application))
        losses = self.primitive.aux_losses()  # this call's, read before anything can call it again
        if self.out_norm is not None:
            y = self.out_norm(y)
        return self.drop(y), state, losses

    def feed(self, x: torch.Tensor, state: Any = None,
             embeddings: torch.Tensor | None = None) -> tuple[torch.Tensor, Any, Losses]:
        """(op(x), state, losses) of a feeding layer: what it adds to the next sub-layer's input."""
        return self._call_primitive(x, state, embeddings)

    def forward(self, x: torch.Tensor, state: Any = None, embeddings: torch.Tensor | None = None,
                feed: torch.Tensor | None = None) -> tuple[torch.Tensor, Any, Losses]:
        if self.feeds_next:
            y, state, losses = self.feed(x, state, embeddings)
            return x + y, state, losses
        h = x if feed is None else x + feed
        y, state, losses = self._call_primitive(h if self.post_norm else self.norm(h), state, embeddings)
        x = x + y
        return (self.norm(x) if self.post_norm else x), state, losses


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, states: list[Any] | None,
               embeddings: torch.Tensor | None) -> tuple[torch.Tensor, list[Any] | None, Losses]:
    """The blocks of one level in order, with the hand-over of feeding layers (see SubLayer)."""
    new_states: list[Any] | None = [] if states is not None else None
    losses: Losses = {}
    pending: torch.Tensor | None = None  # a feeding layer's output, for the next sub-layer's input
    for i, block in enumerate(blocks):
        state = None if states is None else states[i]
        feeds = isinstance(block, SubLayer) and block.feeds_next
        takes_feed = isinstance(block, SubLayer) and not feeds
        if pending is not None and not takes_feed:
            x, pending = x + pending, None
        if feeds:
            pending, state, block_losses = block.feed(x, state, embeddings)
        elif takes_feed:
            x, state, block_losses = block(x, state, embeddings=embeddings, feed=pending)
            pending = None
        else:
            x, state, block_losses = block(x, state, embeddings=embeddings)
        losses = add_losses(losses, block_losses)
        if new_states is not None:
            new_states.append(state)
    if pending is not None:
        x = x + pending
    return x, new_states, losses


class ParallelBlock(nn.Module):
    """Several primitives on the same normed input (optionally each on its own slice of channels)."""

    def __init__(self, node: Parallel, spec: ArchSpec, registry: Registry):
        super().__init__()
        d = spec.d_model
        self.widths = split_widths(d, node.split) if node.split else [d] * len(node.branches)
        self.split = node.split is not None
        self.combine = node.combine
        self.norm = make_norm(spec.norm, d)
        self.post_norm = spec.norm_position == "post"
        self.out_norm = make_norm(spec.norm, d) if spec.norm_position == "sandwich" else None
        self.branches = nn.ModuleList()
        self._shared: list[Primitive | None] = []
        self.applications = nn.ModuleDict()  # branch index -> its application (primitives.base)
        for i, (branch, width) in enumerate(zip(node.branches, self.widths)):
            op, shared = make_primitive(branch, spec, width, registry)
            self.branches.append(op if op is not None else nn.Identity())
            self._shared.append(shared)
            application = (op if op is not None else shared).new_application()
            if application is not None:
                self.applications[str(i)] = application
        self.proj = None
        if node.combine == "concat_proj":
            self.proj = nn.Linear(sum(self.widths), d, bias=False)
        self.drop = nn.Dropout(spec.dropout) if spec.dropout > 0 else nn.Identity()

    def primitives(self) -> list[Primitive]:
        return [s if s is not None else b for b, s in zip(self.branches, self._shared)]

    def init_state(self, batch_size: int, device, dtype) -> Any:
        return [p.init_state(batch_size, device, dtype) for p in self.primitives()]

    def forward(self, x: torch.Tensor, state: Any = None,
                embeddings: torch.Tensor | None = None) -> tuple[torch.Tensor, Any, Losses]:
        h = x if self.post_norm else self.norm(x)
        inputs = h.split(self.widths, dim=-1) if self.split else [h] * len(self.widths)
        branch_embeddings = [embeddings] * len(self.widths)
        if self.split and embeddings is not None:
            branch_embeddings = list(embeddings.split(self.widths, dim=-1))
        outs, states, losses = [], [], {}
        for i, (op, u) in enumerate(zip(self.primitives(), inputs)):
            options = call_options(op, branch_embeddings[i], self.applications[str(i)]
                                   if str(i) in self.applications else None)
            y, s = op(u, None if state is None else state[i], **options)
            losses = add_losses(losses, op.aux_losses())
            outs.append(y)
            states.append(s)
        if self.combine in ("concat", "concat_proj"):
            y = torch.cat(outs, dim=-1)
            if self.proj is not None:
                y = self.proj(y)
        else:
            y = torch.stack(outs).sum(0)
            if self.combine == "mean":
                y = y / len(outs)
        if self.out_norm is not None:
            y = self.out_norm(y)
        x = x + self.drop(y)
        return (self.norm(x) if self.post_norm else x), (None if state is None else states), losses


class LoopBlock(nn.Module):
    """The body run `times` times with the same weights (recurrent depth).

    Options (see `composer.spec.Loop`): input re-injection, per-iteration embedding, truncated
    backpropagation (`grad_iters`), adaptive halting (ACT). `times` may be overridden at inference
    (`HybridLM.generate(..., loop_times=n)`): the streaming state holds one body state per iteration.
    """

    def __init__(self, node: Loop, spec: ArchSpec, registry: Registry):
        super().__init__()
        d = spec.d_model
        self.times = node.times
        self.override: int | None = None
        self.body = nn.ModuleList(build_block(n, spec, registry) for n in node.body)
        self.inject = node.inject
        self.inject_proj = nn.Linear(2 * d, d, bias=False) if node.inject == "concat" else None
        self.iteration_embedding = nn.Parameter(torch.zeros(node.times, d)) if node.iteration_embedding else None
        self.grad_iters = node.grad_iters
        self.halting = node.halting
        self.ponder_coef = node.ponder_cost
        self.halt = nn.Linear(d, 1) if node.halting == "act" else None
        if self.halt is not None:
            nn.init.zeros_(self.halt.weight)
            nn.init.constant_(self.halt.bias, -2.0)

    @property
    def iterations(self) -> int:
        return self.override or self.times

    def init_state(self, batch_size: int, device, dtype) -> Any:
        return [[b.init_state(batch_size, device, dtype) for b in self.body] for _ in range(self.iterations)]

    def _step(self, h: torch.Tensor, x0: torch.Tensor, it: int, states: Any,
              embeddings: torch.Tensor | None) -> tuple[torch.Tensor, Any, Losses]:
        if it > 0 and self.inject == "add":
            h = h + x0
        elif it > 0 and self.inject == "concat":
            h = self.inject_proj(torch.cat([h, x0], dim=-1))
        if self.iteration_embedding is not None:
            h = h + self.iteration_embedding[min(it, self.times - 1)]
        return run_blocks(self.body, h, states, embeddings)

    def forward(self, x: torch.Tensor, state: Any = None,
                embeddings: torch.Tensor | None = None) -> tuple[torch.Tensor, Any, Losses]:
        n = self.iterations
        no_grad_iters = n - self.grad_iters if self.grad_iters is not None and self.training else 0
        h, new_state, losses = x, [], {}
        act = self.halt is not None
        halted = torch.zeros(x.shape[:-1], device=x.device, dtype=x.dtype) if act else None
        output = torch.zeros_like(x) if act else None
        steps = torch.zeros_like(halted) if act else None
        remainder = torch.zeros_like(halted) if act else None
        for it in range(n):
            with torch.set_grad_enabled(torch.is_grad_enabled() and it >= no_grad_iters):
                h, s, step_losses = self._step(h, x, it, None if state is None else state[it], embeddings)
            new_state.append(s)
            losses = add_losses(losses, step_losses)
            if act:
                # ACT: a token halts at the step where its halting probability reaches what is left of
                # its budget (or at the last step), and spends that remainder there. Every token still runs
                # every iteration (the body mixes tokens); halting weighs the outputs.
                p = torch.sigmoid(self.halt(h)).squeeze(-1)
                remaining = 1.0 - halted
                running = (remaining > 1e-6).to(x.dtype)
                stop = (p >= remaining) if it < n - 1 else torch.ones_like(p, dtype=torch.bool)
                weight = torch.where(stop, remaining, p) * running
                output = output + weight.unsqueeze(-1) * h
                steps = steps + running
                remainder = remainder + torch.where(stop, remaining, torch.zeros_like(p)) * running
                halted = halted + weight
        if act:
            losses = add_losses(losses, {"ponder": self.ponder_coef * (steps + remainder).mean()})
            h = output
        return h, (None if state is None else new_state), losses


def make_primitive(layer: Layer, spec: ArchSpec, width: int,
                   registry: Registry) -> tuple[Primitive | None, Primitive | None]:
    """(owned primitive, None) for a new layer; (None, the shared primitive) for a `share` layer."""
    if layer.share is not None:
        return None, registry.by_name[layer.share]
    op = get_primitive(layer.op)(width, spec.config(layer))
    op.follow(registry.latest.get(layer.op))
    registry.latest[layer.op] = op
    if layer.name is not None and layer.name not in registry.by_name:
        registry.by_name[layer.name] = op
    return op, None


def build_block(node: Node, spec: ArchSpec, registry: Registry) -> nn.Module:
    if isinstance(node, Layer):
        op, shared = make_primitive(node, spec, spec.d_model, registry)
        return SubLayer(op, spec.d_model, spec.norm, spec.norm_position == "post", spec.dropout,
                        shared=shared, adapter=node.adapter, sandwich=spec.norm_position == "sandwich")
    if isinstance(node, Loop):
        return LoopBlock(node, spec, registry)
    if isinstance(node, Parallel):
        return ParallelBlock(node, spec, registry)
    raise TypeError(f"unexpected node {node!r} (repeat nodes are flattened before building)")


def sample_logits(logits: torch.Tensor, temperature: float, top_k: int | None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """The next token per row: greedy at temperature 0, else sampled (optionally from the top k)."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)
