"""HybridLM: token embedding -> blocks from the spec -> final norm -> LM head."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from composer.blocks import LoopBlock, Registry, build_block, make_norm, run_blocks, sample_logits
from composer.spec import ArchSpec, flatten
from composer.spec_parse import load_spec


class LMOutput(NamedTuple):
    """What one `HybridLM` call returns."""

    logits: torch.Tensor                # [B, T, V]
    state: list[Any] | None             # the advanced decoding state; None when the call was given none
    aux_losses: dict[str, torch.Tensor]  # name (moe_balance, moe_z, ponder) -> weighted value of this call


class MetaTokens(nn.Module):
    """Hymba's meta tokens: `n` learned vectors before every sequence (`weight` [n, d], at the embeddings' scale);
    without them (n = 0) the module holds nothing. A module, so that views sharing HybridLM's children (the
    Hugging Face wrapper, the torch.export view) carry them too."""

    def __init__(self, n: int, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n, width) * width ** -0.5) if n else None

    @property
    def count(self) -> int:
        return 0 if self.weight is None else self.weight.shape[0]

    def prepend(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, D] -> [B, n + T, D]."""
        if self.weight is None:
            return x
        return torch.cat([self.weight.to(x.dtype).expand(x.shape[0], -1, -1), x], dim=1)


class HybridLM(nn.Module):
    """A language model built from an `ArchSpec`.

    `model(tokens)` returns an `LMOutput` whose `logits` are `[B, T, V]`. `model(tokens, state)` continues the
    sequences held in `state` (from `init_state`) and returns the new state in `.state`: feeding a sequence in
    pieces gives the same logits as feeding it whole. `.aux_losses` maps each auxiliary loss (moe_balance, moe_z,
    ponder) to its weighted value summed over every primitive call of this forward, so a training loss is
    `task_loss + sum(out.aux_losses.values())`.
    """

    def __init__(self, spec: ArchSpec):
        super().__init__()
        self.spec = spec
        d = spec.d_model
        self.embed = nn.Embedding(spec.vocab_size, d)
        self.drop = nn.Dropout(spec.dropout) if spec.dropout > 0 else nn.Identity()
        registry = Registry()
        self.blocks = nn.ModuleList(build_block(node, spec, registry) for node in flatten(spec.layers))
        self.final_norm = make_norm(spec.norm, d) if spec.norm_position != "post" else nn.Identity()
        self.head = nn.Linear(d, spec.vocab_size, bias=False)
        # Embeddings at std d^-1/2: large enough not to be drowned by the residual branches (whose Linear
        # layers keep PyTorch's default init) and giving unit-scale logits through a tied head. With std 0.02,
        # token identity was buried under the sub-layer outputs and MQAR stalled on its 1/kv_pairs plateau.
        nn.init.normal_(self.embed.weight, std=d ** -0.5)
        if spec.tie_embeddings:
            self.head.weight = self.embed.weight
        else:
            nn.init.normal_(self.head.weight, std=d ** -0.5)
        # Created last, so the other weights' init is as without it. Not named `meta`: torch.export's GraphModule
        # has a `meta` attribute of its own, which would hide the child.
        self.meta_tokens = MetaTokens(spec.meta_tokens, d)

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor, state: list[Any] | None = None) -> LMOutput:
        x = self.drop(self.embed(tokens))
        meta = self.meta_tokens.count if state is None else 0  # a state from init_state already holds them
        x = self.meta_tokens.prepend(x) if meta else x
        x, new_state, losses = run_blocks(self.blocks, x, state, embeddings=x)
        return LMOutput(self.head(self.final_norm(x[:, meta:])), new_state, losses)

    def init_state(self, batch_size: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> list[Any]:
        """The decoding state for `batch_size` fresh sequences (one entry per block): empty, or with meta tokens
        the state after them."""
        param = self.embed.weight
        device = param.device if device is None else device
        dtype = param.dtype if dtype is None else dtype
        states = [block.init_state(batch_size, device, dtype) for block in self.blocks]
        if self.meta_tokens.count:
            x = self.meta_tokens.weight.to(device, dtype).expand(batch_size, -1, -1)
            _, states, _ = run_blocks(self.blocks, x, states, embeddings=x)
        return states

    # -- test-time compute -------------------------------------------------------------------------
    def set_loop_times(self, times: int | None) -> None:
        """Run every loop `times` iterations (None: as trained)."""
        for module in self.modules():
            if isinstance(module, LoopBlock):
                module.override = times

    # -- generation ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, loop_times: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Continue `prompt` [B, T] by `max_new_tokens`, decoding one token at a time with the state.

        temperature 0 is greedy. `loop_times` runs looped blocks a different number of times than in
        training (test-time compute).
        """
        was_training = self.training
        self.eval()
        previous = [m.override for m in self.modules() if isinstance(m, LoopBlock)]
        if loop_times is not None:
            self.set_loop_times(loop_times)
        try:
            state = self.init_state(prompt.shape[0])
            logits, state, _ = self(prompt, state)
            out = [prompt]
            token = sample_logits(logits[:, -1], temperature, top_k, generator)
            for i in range(max_new_tokens):
                out.append(token[:, None])
                if i == max_new_tokens - 1:
                    break
                logits, state, _ = self(token[:, None], state)
                token = sample_logits(logits[:, -1], temperature, top_k, generator)
            return torch.cat(out, dim=1)
        finally:
            for module, value in zip((m for m in self.modules() if isinstance(m, LoopBlock)), previous):
                module.override = value
            self.train(was_training)


def build_model(spec: ArchSpec | dict | str) -> HybridLM:
    """A HybridLM from a spec (or anything `load_spec` reads)."""
    return HybridLM(load_spec(spec))
