"""Multi-query associative recall (MQAR), as defined by Zoology (Arora et al., 2023).

An example of length `seq_len`: first `kv_pairs` key-value pairs `k1 v1 k2 v2 ...` (keys drawn without
replacement from `1 .. vocab/2 - 1`, values from `vocab/2 .. vocab - 1`), then every key queried once at a
position `2 * gap` after the pairs, the gaps drawn without replacement with probability ∝ gap^(power_a - 1)
(short gaps are likelier). The answer (the key's value) is the target at the query position; every other
target is -100, in training and test alike. Positions that are not queries hold random tokens.
"""

from __future__ import annotations

from typing import Any

import torch

from composer.tasks.base import IGNORE, SyntheticTask, gumbel, positive_int, require, sample_without_replacement
from composer.tasks.registry import register_task


class MQAR(SyntheticTask):
    name = "mqar"

    def __init__(self, vocab_size: int = 8192, seq_len: int = 256, kv_pairs: int = 16, num_train: int = 100_000,
                 num_test: int = 3_000, power_a: float = 0.01, random_non_queries: bool = True, seed: int = 0):
        params = dict(vocab_size=vocab_size, seq_len=seq_len, kv_pairs=kv_pairs, num_train=num_train,
                      num_test=num_test)
        for field in params:
            positive_int(params, field)
        require(vocab_size > seq_len, "vocab_size",
                f"MQAR needs vocab_size > seq_len (got vocab_size={vocab_size}, seq_len={seq_len})")
        require(4 * kv_pairs <= seq_len, "kv_pairs",
                f"MQAR needs 4 * kv_pairs <= seq_len (got kv_pairs={kv_pairs}, seq_len={seq_len})")
        require(seq_len % 2 == 0, "seq_len", f"MQAR needs an even seq_len, got {seq_len}")
        require(0 < power_a <= 1, "power_a", f"expected 0 < power_a <= 1, got {power_a}")
        super().__init__(seed, num_train, num_test)
        self.vocab_size, self.seq_len, self.kv_pairs = vocab_size, seq_len, kv_pairs
        self.power_a, self.random_non_queries = power_a, random_non_queries

    def params(self) -> dict[str, Any]:
        return dict(vocab_size=self.vocab_size, seq_len=self.seq_len, kv_pairs=self.kv_pairs,
                    num_train=self.num_train, num_test=self.num_test, power_a=self.power_a,
                    random_non_queries=self.random_non_queries, seed=self.seed)

    def generate(self, n: int, gen: torch.Generator, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        K, L, V = self.kv_pairs, self.seq_len, self.vocab_size
        context = 2 * K
        half = V // 2
        keys = 1 + sample_without_replacement(torch.rand(n, half - 1, generator=gen), K)
        values = half + sample_without_replacement(torch.rand(n, V - half, generator=gen), K)
        space = (L - context) // 2
        gap = torch.arange(1, space + 1, dtype=torch.float64)
        log_p = (torch.log(torch.tensor(self.power_a, dtype=torch.float64)) + (self.power_a - 1) * torch.log(gap))
        gaps = sample_without_replacement(log_p.float() + gumbel((n, space), gen), K)

        sequence = torch.zeros(n, L + 1, dtype=torch.long)
        sequence[:, 0:context:2] = keys
        sequence[:, 1:context:2] = values
        sequence.scatter_(1, context + 2 * gaps, keys)
        labels = torch.full((n, L + 1), IGNORE, dtype=torch.long)
        labels.scatter_(1, context + 2 * gaps + 1, values)
        inputs, targets = sequence[:, :-1].clone(), labels[:, 1:].clone()
        if self.random_non_queries:
            noise = torch.randint(V, inputs.shape, generator=gen)
            inputs = torch.where(inputs == 0, noise, inputs)
        return inputs, targets


register_task("mqar", MQAR)
