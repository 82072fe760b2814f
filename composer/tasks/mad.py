"""The six MAD tasks (Poli et al., 2024, "Mechanistic Design and Scaling of Hybrid Architectures").

Instances follow the definitions of MAD's reference generators (token layouts and vocabularies as there):

in_context_recall   pairs `k v` (keys from the lower half of the non-special vocabulary, values from the upper
                    half, one value per key within a sequence); the last pair repeats a presented key. Test
                    labels: every value whose key appeared before (multi-query), and the final value.
noisy_in_context_recall   the same, with each pair replaced by two noise tokens (from the top
                    `noise_vocab_size` ids) with probability `frac_noise`.
fuzzy_in_context_recall   keys and values are motifs of 1..k_motif_size / 1..v_motif_size distinct tokens
                    (test keys always k_motif_size long); left-padded with a pad token.
selective_copying   `num_tokens_to_copy` tokens scattered among blanks, a copy token, then blanks at which the
                    tokens are to be reproduced in order.
memorization        a fixed key -> value map (same for every example): `k INSERT` pairs, the value is the target
                    at each INSERT; the training set is small (256 examples) so the map must be memorised.
compression         MAD trains an encoder-decoder: the model reads `seq_len - 1` random tokens and a compression
                    token, and an MLP decoder reconstructs the sequence from the model's output at that token.
                    A causal LM has no separate decoder, so here the sequence `x_1 .. x_n C` is followed by
                    `n - 1` more compression tokens and the model must emit `x_j` at the j-th `C` (targets only
                    there). The model's own layers act as the decoder; recall of the whole sequence after the
                    separator is what is measured. Context: 2 * (seq_len - 1).

Training targets: for the recall tasks MAD trains next-token prediction on every position (and tests only the
labelled ones); for the other tasks training and test targets are the same labelled positions.
`multi_query=True` (all published settings) is the only recall mode supported.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from composer.tasks.base import IGNORE, SyntheticTask, generator, gumbel, positive_int, require
from composer.tasks.registry import register_family, register_task
from composer.tasks.suite import TaskSuite

TASKS = ("in_context_recall", "fuzzy_in_context_recall", "noisy_in_context_recall", "selective_copying",
         "compression", "memorization")

# The published settings (MAD's task files): the baseline, and the changes that make the difficulty variants
# (one field varied at a time). A task's score is the mean accuracy over its settings.
_NUM = {"num_train_examples": [6400, 3200, 1600, 800]}
SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "in_context_recall": {
        "baseline": {"vocab_size": 16, "seq_len": 128, "num_train_examples": 12800, "multi_query": True},
        "changes": {"vocab_size": [32, 64, 128], "seq_len": [256, 512, 1024], **_NUM},
    },
    "fuzzy_in_context_recall": {
        "baseline": {"vocab_size": 16, "seq_len": 128, "num_train_examples": 12800, "multi_query": True,
                     "k_motif_size": 3, "v_motif_size": 3},
        "changes": {"vocab_size": [32, 64, 128], "seq_len": [256, 512, 1024], **_NUM},
    },
    "noisy_in_context_recall": {
        "baseline": {"vocab_size": 32, "noise_vocab_size": 16, "seq_len": 128, "num_train_examples": 12800,
                     "multi_query": True, "frac_noise": 0.2},
        "changes": {"vocab_size": [48, 80, 144], "seq_len": [256, 512, 1024], **_NUM,
                    "frac_noise": [0.4, 0.6, 0.8]},
    },
    "selective_copying": {
        "baseline": {"vocab_size": 16, "seq_len": 256, "num_tokens_to_copy": 16, "num_train_examples": 12800},
        "changes": {"vocab_size": [32, 64, 128], "seq_len": [512, 1024], **_NUM,
                    "num_tokens_to_copy": [32, 64, 96]},
    },
    "compression": {
        "baseline": {"vocab_size": 16, "seq_len": 32, "num_train_examples": 12800},
        "changes": {"vocab_size": [32, 64, 128], "seq_len": [64, 128, 256], **_NUM},
    },
    "memorization": {
        "baseline": {"vocab_size": 256, "seq_len": 32, "num_train_examples": 256},
        "changes": {"vocab_size": [512, 1024, 2048, 4096, 8192]},
    },
}


def task_settings(task: str, variants: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """(label, settings) of a task's baseline and, with `variants`, each difficulty variant."""
    baseline = SETTINGS[task]["baseline"]
    out = [("baseline", dict(baseline))]
    if variants:
        for key, values in SETTINGS[task]["changes"].items():
            out += [(f"{key}={value}", {**baseline, key: value}) for value in values]
    return out


def canonical_task(name: str) -> str:
    task = name.replace("-", "_")
    require(task in TASKS, "task", f"unknown MAD task {name!r}; expected one of {', '.join(TASKS)}")
    return task


class MADTask(SyntheticTask):
    """One MAD task at one setting. Unset fields take the task's published baseline."""

    def __init__(self, task: str, seed: int = 0, **settings: Any):
        task = canonical_task(task)
        self.task = task
        self.name = f"mad:{task}"
        s = {"num_test_examples": 1280, "frac_noise": 0.0, "noise_vocab_size": 0, "k_motif_size": 1,
             "v_motif_size": 1, "num_tokens_to_copy": 0, "multi_query": True, **SETTINGS[task]["baseline"]}
        unknown = sorted(set(settings) - set(s))
        require(not unknown, unknown[0] if unknown else "", f"unknown setting for {self.name}; expected one of "
                f"{', '.join(sorted(s))}")
        s.update(settings)
        for field in ("vocab_size", "seq_len", "num_train_examples", "num_test_examples", "k_motif_size",
                      "v_motif_size"):
            positive_int(s, field)
        require(s["multi_query"] is True, "multi_query", "only multi_query=True (MAD's published setting) is "
                "supported")
        require(0 <= s["frac_noise"] < 1, "frac_noise", f"expected 0 <= frac_noise < 1, got {s['frac_noise']}")
        self.s = s
        self._check()
        super().__init__(seed, s["num_train_examples"], s["num_test_examples"])
        self.vocab_size = s["vocab_size"]
        self.seq_len = {"compression": 2 * (s["seq_len"] - 1), "in_context_recall": s["seq_len"] - 1,
                        "noisy_in_context_recall": s["seq_len"] - 1}.get(task, s["seq_len"])
        if task == "memorization":
            self._map = memorization_map(s["vocab_size"] - 1, generator(seed, "memorization-map"))

    def _check(self) -> None:
        s, task = self.s, self.task
        require(s["seq_len"] % 2 == 0, "seq_len", f"expected an even seq_len, got {s['seq_len']}")
        if task == "noisy_in_context_recall" or s["frac_noise"] > 0:
            require(task == "noisy_in_context_recall", "frac_noise", f"noise is not part of {self.name}")
            positive_int(s, "noise_vocab_size")
        symbols = s["vocab_size"] - s["noise_vocab_size"] - (1 if task == "fuzzy_in_context_recall" else 0)
        if task in ("in_context_recall", "noisy_in_context_recall", "fuzzy_in_context_recall"):
            require(symbols >= 4, "vocab_size", f"vocab_size leaves {symbols} key/value tokens; need at least 4")
        if task == "fuzzy_in_context_recall":
            need = 2 * (s["k_motif_size"] + s["v_motif_size"]) + 2
            require(s["seq_len"] > need, "seq_len", f"seq_len must exceed {need} for these motif sizes")
            require(symbols // 2 >= s["k_motif_size"], "k_motif_size", "k_motif_size exceeds the key vocabulary")
        if task == "selective_copying":
            positive_int(s, "num_tokens_to_copy")
            require(s["seq_len"] > 2 * s["num_tokens_to_copy"] + 1, "num_tokens_to_copy",
                    "seq_len must be > 2 * num_tokens_to_copy + 1")
            require(s["vocab_size"] >= 3, "vocab_size", "selective copying needs vocab_size >= 3")
        if task in ("compression", "memorization"):
            require(s["vocab_size"] >= 3, "vocab_size", f"{task} needs vocab_size >= 3")

    def params(self) -> dict[str, Any]:
        return {"task": self.task, **self.s, "seed": self.seed}

    def generate(self, n: int, gen: torch.Generator, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.s
        if self.task in ("in_context_recall", "noisy_in_context_recall"):
            return recall(n, gen, train, s["vocab_size"], s["seq_len"], s["noise_vocab_size"], s["frac_noise"])
        if self.task == "fuzzy_in_context_recall":
            return fuzzy_recall(n, gen, train, s["vocab_size"], s["seq_len"], s["k_motif_size"],
                                s["v_motif_size"])
        if self.task == "selective_copying":
            return selective_copying(n, gen, s["vocab_size"], s["seq_len"], s["num_tokens_to_copy"])
        if self.task == "compression":
            return compression(n, gen, s["vocab_size"], s["seq_len"])
        return memorization(n, gen, s["vocab_size"], s["seq_len"], self._map)


def recall(n: int, gen: torch.Generator, train: bool, vocab: int, seq_len: int, noise_vocab: int,
           frac_noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(Noisy) multi-query in-context recall, `seq_len // 2` pairs, the last one a probe of a presented key."""
    symbols = vocab - noise_vocab
    n_keys, n_values = symbols // 2, symbols - symbols // 2
    pairs = seq_len // 2 - 1                                        # random pairs before the probe
    keys = torch.randint(n_keys, (n, pairs), generator=gen)
    table = n_keys + torch.randint(n_values, (n, n_keys), generator=gen)
    values = table.gather(1, keys)
    noise = torch.rand(n, pairs, generator=gen) < frac_noise
    noise[torch.arange(n), torch.randint(pairs, (n,), generator=gen)] = False  # at least one real pair
    index = torch.arange(pairs).expand(n, pairs)
    first = torch.full((n, n_keys), pairs, dtype=torch.long)
    first.scatter_reduce_(1, keys, torch.where(noise, pairs, index), reduce="amin")
    seen_before = first.gather(1, keys) < index
    presented = first < pairs
    probe = (torch.where(presented, 0.0, float("-inf")) + gumbel((n, n_keys), gen)).argmax(1, keepdim=True)
    probe_value = table.gather(1, probe)

    tokens = torch.empty(n, 2 * pairs + 2, dtype=torch.long)
    tokens[:, 0:2 * pairs:2], tokens[:, 1:2 * pairs:2] = keys, values
    if frac_noise > 0:
        junk = symbols + torch.randint(noise_vocab, (n, pairs, 2), generator=gen)
        pair_tokens = tokens[:, :2 * pairs].view(n, pairs, 2)
        tokens[:, :2 * pairs] = torch.where(noise[..., None], junk, pair_tokens).view(n, 2 * pairs)
    tokens[:, -2:-1], tokens[:, -1:] = probe, probe_value
    labels = torch.full_like(tokens, IGNORE)
    labels[:, 1:2 * pairs:2] = torch.where(seen_before & ~noise, values, IGNORE)
    labels[:, -1:] = probe_value
    return tokens[:, :-1], (tokens if train else labels)[:, 1:].clone()


def fuzzy_recall(n: int, gen: torch.Generator, train: bool, vocab: int, seq_len: int, k_motif: int,
                 v_motif: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fuzzy recall: keys/values are motifs of distinct tokens. Variable-length motifs make a loop over pairs
    (per example, not per token) the clear way to write it; a chunk of 1024 examples takes about a second."""
    pad = vocab - 1
    symbols = vocab - 1
    key_vocab, value_vocab = range(symbols // 2), range(symbols // 2, symbols)
    rng = random.Random(int(torch.randint(2**62, (1,), generator=gen)))
    inputs = torch.full((n, seq_len + 1), pad, dtype=torch.long)
    labels = torch.full((n, seq_len + 1), IGNORE, dtype=torch.long)
    k_sizes = list(range(1, k_motif + 1)) if train else [k_motif]
    v_sizes = list(range(1, v_motif + 1))
    for row in range(n):
        k_probe = tuple(rng.sample(key_vocab, rng.choice(k_sizes)))
        v_probe = tuple(rng.sample(value_vocab, rng.choice(v_sizes)))
        probe_len = len(k_probe) + len(v_probe)
        probe_at = rng.randrange(seq_len - 2 * probe_len)
        toks: list[int] = []
        labs: list[int] = []
        table: dict[tuple[int, ...], tuple[int, ...]] = {k_probe: v_probe}
        presented: set[tuple[int, ...]] = set()
        probe_added = False
        while len(toks) < seq_len - probe_len - (k_motif + v_motif):
            k_size, v_size = rng.choice(k_sizes), rng.choice(v_sizes)
            if len(toks) >= probe_at and not probe_added:
                key, probe_added = k_probe, True
            else:
                key = tuple(rng.sample(key_vocab, k_size))
                probe_added = probe_added or key == k_probe
            value = table.setdefault(key, tuple(rng.sample(value_vocab, v_size)))
            toks += [*key, *value]
            labs += [IGNORE] * len(key) + (list(value) if key in presented else [IGNORE] * len(value))
            presented.add(key)
        toks += [*k_probe, *v_probe]
        labs += [IGNORE] * len(k_probe) + list(v_probe)
        start = seq_len + 1 - len(toks)
        inputs[row, start:] = torch.tensor(toks)
        labels[row, start:] = torch.tensor(labs)
    return inputs[:, :-1], (inputs if train else labels)[:, 1:].clone()


def selective_copying(n: int, gen: torch.Generator, vocab: int, seq_len: int,
                      to_copy: int) -> tuple[torch.Tensor, torch.Tensor]:
    copy_token, blank = vocab - 1, vocab - 2
    tokens = torch.randint(vocab - 2, (n, to_copy), generator=gen)
    n_blank = seq_len - 2 * to_copy - 1
    # as MAD: each blank goes before a uniformly chosen token, so the last token ends the prefix
    before = torch.zeros(n, to_copy, dtype=torch.long)
    before.scatter_add_(1, torch.randint(to_copy, (n, n_blank), generator=gen), torch.ones(n, n_blank,
                                                                                           dtype=torch.long))
    positions = torch.arange(to_copy) + before.cumsum(1)
    inputs = torch.full((n, seq_len), blank, dtype=torch.long)
    inputs.scatter_(1, positions, tokens)
    inputs[:, seq_len - to_copy - 1] = copy_token
    targets = torch.full_like(inputs, IGNORE)
    targets[:, seq_len - to_copy:] = tokens
    return inputs, targets


def compression(n: int, gen: torch.Generator, vocab: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`x_1 .. x_m C C .. C` (m = seq_len - 1, m compression tokens); target x_j at the j-th C."""
    m = seq_len - 1
    data = torch.randint(vocab - 1, (n, m), generator=gen)
    inputs = torch.cat([data, torch.full((n, m), vocab - 1, dtype=torch.long)], dim=1)
    targets = torch.cat([torch.full((n, m), IGNORE, dtype=torch.long), data], dim=1)
    return inputs, targets


def memorization_map(symbols: int, gen: torch.Generator) -> torch.Tensor:
    """A fixed random injection of keys `0 .. symbols//2 - 1` into values `symbols//2 .. symbols - 1`."""
    n_keys = symbols // 2
    table = torch.empty(n_keys, dtype=torch.long)
    table[torch.randperm(n_keys, generator=gen)] = n_keys + torch.randperm(symbols - n_keys, generator=gen)[:n_keys]
    return table


def memorization(n: int, gen: torch.Generator, vocab: int, seq_len: int,
                 table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    insert = vocab - 1
    keys = torch.randint(len(table), (n, seq_len // 2), generator=gen)
    inputs = torch.full((n, seq_len), insert, dtype=torch.long)
    inputs[:, 0::2] = keys
    targets = torch.full_like(inputs, IGNORE)
    targets[:, 1::2] = table[keys]
    return inputs, targets


def mad_suite(variants: bool = False, tasks: list[str] | tuple[str, ...] | None = None, seed: int = 0,
              **overrides: Any) -> TaskSuite:
    """The MAD suite: each task at its baseline (and, with `variants`, each difficulty variant). `overrides`
    (e.g. `num_train_examples=1280`) apply to every member, for cheaper runs than the published protocol."""
    names = [canonical_task(t) for t in (tasks or TASKS)]
    members = []
    for name in names:
        for label, settings in task_settings(name, variants):
            members.append((f"{name}/{label}", MADTask(name, seed=seed, **{**settings, **overrides})))
    return TaskSuite("mad", members)


register_task("mad", mad_suite)
register_family("mad", MADTask, TASKS)
