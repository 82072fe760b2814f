"""The Task interface, seeded generators, and the lazy chunked training set of synthetic tasks.

A task gives a model everything it needs: `vocab_size`, `seq_len` (the context the model must accept),
deterministic training batches `(inputs [B, T] long, targets [B, T] long)` with -100 where there is no loss,
a fixed test set, and `evaluate(model)` -> metrics. The batch of step `s` depends only on the task's
parameters, its seed, `s` and the batch size, so a resumed run sees exactly the batches an uninterrupted one
would, in any process.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F

from composer.errors import UserError

IGNORE = -100
DEFAULT_CHUNK = 1024


def stable_seed(*parts: int | str) -> int:
    """A 63-bit seed from ints and strings that is the same in every process (unlike `hash`)."""
    value = 1469598103934665603
    for part in parts:
        for byte in str(part).encode() + b"\x00":
            value = ((value ^ byte) * 1099511628211) % (1 << 64)
    return value & ((1 << 63) - 1)


def generator(*parts: int | str) -> torch.Generator:
    """A CPU generator seeded from `parts` (see `stable_seed`)."""
    return torch.Generator().manual_seed(stable_seed(*parts))


def require(condition: bool, field: str, message: str) -> None:
    """Raise a UserError naming `field` when `condition` is false."""
    if not condition:
        raise UserError(message, path=field)


def positive_int(params: dict[str, Any], field: str) -> int:
    value = params[field]
    require(isinstance(value, int) and not isinstance(value, bool) and value > 0, field,
            f"expected a positive integer, got {value!r}")
    return value


class DataRepeatWarning(UserWarning):
    """Training passes over a task's training data more than once."""


class Task:
    """Base class of evaluation tasks. Subclasses set `name`, `vocab_size`, `seq_len` and implement
    `train_batch` and `test_set`; `evaluate` works for any task whose test targets mark labelled positions."""

    name: str = "task"
    vocab_size: int
    seq_len: int
    primary_metric: str = "accuracy"   # what a learning-rate sweep maximises ("loss" is minimised)
    metrics: tuple[str, ...] = ("loss", "accuracy")   # the keys `evaluate` returns
    splits: tuple[str, ...] = ()       # held-out splits besides validation that `evaluate_split` scores (test, ...)

    def params(self) -> dict[str, Any]:
        """The task's settings (recorded with every run)."""
        return {}

    def model_vocab_size(self, spec_vocab_size: int, stated: bool = True) -> int:
        """The vocabulary the model trains with: the task's, one rule for every task. A spec that states
        (`stated`) another size is a UserError naming both, never silently replaced (the embedding and head
        would change size behind the user's back); a spec that states none takes the task's."""
        if stated and spec_vocab_size != self.vocab_size:
            raise UserError(f"the spec's vocab_size is {spec_vocab_size} but {self.vocabulary()}; "
                            f"{self.vocabulary_fix(spec_vocab_size)}", path="vocab_size")
        return self.vocab_size

    def vocabulary(self) -> str:
        """The task's vocabulary in words, for the message of a mismatch."""
        return f"the {self.name} task's vocabulary is {self.vocab_size} tokens"

    def vocabulary_fix(self, spec_vocab_size: int) -> str:
        """How to make the spec and the task agree."""
        return (f"set vocab_size: {self.vocab_size} in the spec, or give the task the spec's (--set "
                f"vocab_size={spec_vocab_size}; task.params.vocab_size in a search space)")

    def tokens_per_pass(self) -> int | None:
        """Tokens in one pass over the training data, where seeing them again is repetition (text); None for
        generated tasks, whose fixed sets are visited for many epochs by design."""
        return None

    def warn_if_repeated(self, tokens: int) -> float | None:
        """Warn (DataRepeatWarning) when training on `tokens` tokens passes over the training data more than
        once; returns the number of passes (None when they do not apply)."""
        per_pass = self.tokens_per_pass()
        if not per_pass:
            return None
        passes = tokens / per_pass
        if passes > 1:
            warnings.warn(DataRepeatWarning(
                f"training on {tokens:,} tokens makes {passes:.1f} passes over the {per_pass:,}-token training "
                f"split of task {self.name!r}: the model sees the data repeated (use more data or a smaller "
                "budget)"), stacklevel=2)
        return passes

    def train_batch(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def train_rows(self, step: int, batch_size: int, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows `start:stop` of `train_batch(step, batch_size)`: one data-parallel worker's part of the batch.
        Here by slicing the whole batch; the tasks of this package make only the rows asked for."""
        inputs, targets = self.train_batch(step, batch_size)
        return inputs[start:stop], targets[start:stop]

    def test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, batch_size: int = 128) -> dict[str, float]:
        """Mean cross-entropy and argmax accuracy over the labelled positions of the test set (the validation
        split: what a search and a learning-rate choice read)."""
        inputs, targets = self.test_set()
        return evaluate_labelled(model, inputs, targets, batch_size)

    def check_split(self, split: str) -> None:
        """A UserError naming `split` unless `evaluate_split` can score it."""
        if split not in self.splits:
            held = ", ".join(self.splits) or "none"
            raise UserError(f"task {self.name!r} has no held-out split {split!r} (it has: {held})",
                            path="final_splits")

    @torch.no_grad()
    def evaluate_split(self, model: torch.nn.Module, split: str, batch_size: int = 128) -> dict[str, float]:
        """The metrics of `evaluate` on another held-out split (one of `splits`): a split that judges what the
        validation split chose. Here none (a subclass that has splits overrides this)."""
        self.check_split(split)
        raise NotImplementedError


@torch.no_grad()
def evaluate_labelled(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                      batch_size: int) -> dict[str, float]:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum, correct, count = 0.0, 0, 0
    try:
        for start in range(0, inputs.shape[0], batch_size):
            x = inputs[start:start + batch_size].to(device)
            y = targets[start:start + batch_size].to(device)
            mask = y != IGNORE
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(x).logits
            picked = logits[mask].float()
            labels = y[mask]
            loss_sum += F.cross_entropy(picked, labels, reduction="sum").item()
            correct += (picked.argmax(-1) == labels).sum().item()
            count += labels.numel()
    finally:
        model.train(was_training)
    if count == 0:
        return {"loss": float("nan"), "accuracy": float("nan")}
    return {"loss": loss_sum / count, "accuracy": correct / count}


class SyntheticTask(Task):
    """A task whose examples come from `generate(n, gen, train)`.

    The training set (`num_train` examples) is made lazily in chunks of `chunk_size` examples, each chunk from
    its own seeded generator, so a short run generates only the chunks it touches. Each epoch visits the
    chunks in a fresh seeded order, and the examples of each chunk in a fresh seeded order.
    """

    def __init__(self, seed: int, num_train: int, num_test: int, chunk_size: int = DEFAULT_CHUNK):
        self.seed = seed
        self.num_train = num_train
        self.num_test = num_test
        self.chunk_size = chunk_size
        self._chunks: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._epochs: dict[int, torch.Tensor] = {}
        self._test: tuple[torch.Tensor, torch.Tensor] | None = None
        self._judge: tuple[torch.Tensor, torch.Tensor] | None = None

    # subclasses -----------------------------------------------------------------------------------
    def generate(self, n: int, gen: torch.Generator, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """`n` examples: (inputs [n, seq_len], targets [n, seq_len]); `train` selects training targets."""
        raise NotImplementedError

    # data -----------------------------------------------------------------------------------------
    def _stream(self) -> str:
        """Names the data stream: the settings that shape an example (not the set sizes or seed), so a
        smaller training set is a prefix of a larger one and the test set does not move the training data."""
        sizes = {"num_train", "num_test", "num_train_examples", "num_test_examples", "seed"}
        return f"{self.name}:{sorted((k, v) for k, v in self.params().items() if k not in sizes)}"

    def chunk(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if index not in self._chunks:
            n = min(self.chunk_size, self.num_train - index * self.chunk_size)
            x, y = self.generate(n, generator(self.seed, self._stream(), "train", index), True)
            self._chunks[index] = (x.to(torch.int32), y.to(torch.int32))   # half the memory of int64
        return self._chunks[index]

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """Example indices of one epoch, in visiting order."""
        if epoch not in self._epochs:
            gen = generator(self.seed, self._stream(), "order", epoch)
            n_chunks = math.ceil(self.num_train / self.chunk_size)
            parts = []
            for c in torch.randperm(n_chunks, generator=gen).tolist():
                size = min(self.chunk_size, self.num_train - c * self.chunk_size)
                parts.append(c * self.chunk_size + torch.randperm(size, generator=gen))
            self._epochs = {epoch: torch.cat(parts)}   # keep one epoch: the loop moves forward
        return self._epochs[epoch]

    def examples(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        chunk_ids = indices // self.chunk_size
        inputs = torch.empty(len(indices), self.seq_len, dtype=torch.long)
        targets = torch.empty_like(inputs)
        for c in chunk_ids.unique().tolist():
            where = chunk_ids == c
            x, y = self.chunk(c)
            local = indices[where] - c * self.chunk_size
            inputs[where], targets[where] = x[local].long(), y[local].long()
        return inputs, targets

    def train_batch(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.train_rows(step, batch_size, 0, batch_size)

    def train_rows(self, step: int, batch_size: int, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(step * batch_size + start, step * batch_size + stop)
        epochs, offsets = positions // self.num_train, positions % self.num_train
        indices = torch.empty_like(positions)
        for e in epochs.unique().tolist():
            where = epochs == e
            indices[where] = self.epoch_order(e)[offsets[where]]
        return self.examples(indices)

    splits = ("test",)

    def test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._test is None:
            self._test = self.generate(self.num_test, generator(self.seed, self._stream(), "test"), False)
        return self._test

    @torch.no_grad()
    def evaluate_split(self, model: torch.nn.Module, split: str, batch_size: int = 128) -> dict[str, float]:
        """`test`: `num_test` more examples drawn from their own generator, independent of the validation set
        (`test_set`, which `evaluate` scores) and of the training set."""
        self.check_split(split)
        if self._judge is None:
            self._judge = self.generate(self.num_test, generator(self.seed, self._stream(), "judge"), False)
        return evaluate_labelled(model, *self._judge, batch_size)


def sample_without_replacement(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of `k` distinct items per row, drawn with probabilities ∝ exp(scores) (Gumbel top-k)."""
    return scores.topk(k, dim=-1).indices


def gumbel(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    u = torch.rand(shape, generator=gen).clamp_(1e-20, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))
