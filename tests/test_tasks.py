"""Task generators: exact structure, determinism (in-process and across processes), errors."""

import subprocess
import sys

import pytest
import torch

from composer.errors import UserError
from composer.tasks import IGNORE, MADTask, get_task, mad_suite
from composer.tasks.mad import SETTINGS, TASKS

SMALL_MQAR = dict(vocab_size=128, seq_len=64, kv_pairs=8, num_train=2500, num_test=50)


def test_mqar_structure():
    task = get_task("mqar", **SMALL_MQAR)
    x, y = task.test_set()
    assert x.shape == y.shape == (50, 64)
    K, half = 8, 64
    keys, values = x[:, 0:2 * K:2], x[:, 1:2 * K:2]
    assert ((keys >= 1) & (keys < half)).all() and ((values >= half) & (values < 128)).all()
    assert all(len(set(row.tolist())) == K for row in keys)             # distinct keys per example
    labelled = y != IGNORE
    assert (labelled.sum(1) == K).all()                                 # one answer per key
    assert not labelled[:, :2 * K].any()                                # no loss on the pairs
    for row in range(50):
        mapping = dict(zip(keys[row].tolist(), values[row].tolist()))
        positions = labelled[row].nonzero().flatten()
        assert sorted(x[row, positions].tolist()) == sorted(mapping)     # queried token is a key
        assert [mapping[k] for k in x[row, positions].tolist()] == y[row, positions].tolist()


def test_mqar_gaps_favour_short_distances():
    x, y = get_task("mqar", vocab_size=512, seq_len=256, kv_pairs=16, num_train=10, num_test=400).test_set()
    positions = (y != IGNORE).nonzero()[:, 1] - 32
    assert (positions < 112).float().mean() > 0.6                       # power law: mass near the pairs


def test_mqar_batches_are_deterministic_and_lazy():
    a, b = get_task("mqar", **SMALL_MQAR), get_task("mqar", **SMALL_MQAR)
    xa, ya = a.train_batch(7, 16)
    xb, yb = b.train_batch(7, 16)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert len(b._chunks) <= 3                                          # a step touches few chunks
    assert not torch.equal(a.train_batch(8, 16)[0], xa)
    other_seed = get_task("mqar", **SMALL_MQAR, seed=1).train_batch(7, 16)[0]
    assert not torch.equal(other_seed, xa)


def test_test_set_size_does_not_move_the_training_data():
    a = get_task("mqar", **SMALL_MQAR).chunk(0)[0]
    b = get_task("mqar", **{**SMALL_MQAR, "num_test": 7, "num_train": 100_000}).chunk(0)[0]
    assert torch.equal(a, b)


def test_mqar_epoch_visits_every_example_once():
    task = get_task("mqar", vocab_size=128, seq_len=32, kv_pairs=4, num_train=100, num_test=10)
    seen = torch.cat([task.train_batch(s, 10)[0] for s in range(10)])
    assert len({tuple(r) for r in seen.tolist()}) == 100


def test_same_data_in_another_process():
    code = ("from composer.tasks import get_task;"
            "x, y = get_task('mqar', vocab_size=128, seq_len=64, kv_pairs=8, num_train=2500).train_batch(3, 4);"
            "print(int(x.sum()), int((x * torch.arange(64)).sum()))")
    out = subprocess.run([sys.executable, "-c", "import torch;" + code], capture_output=True, text=True,
                         check=True).stdout.split()
    x, _ = get_task("mqar", **SMALL_MQAR).train_batch(3, 4)
    assert [int(v) for v in out] == [int(x.sum()), int((x * torch.arange(64)).sum())]


@pytest.mark.parametrize("params, field", [
    (dict(vocab_size=64, seq_len=64), "vocab_size"),
    (dict(vocab_size=512, seq_len=64, kv_pairs=17), "kv_pairs"),
    (dict(seq_len=0), "seq_len"),
    (dict(seq_len=63, vocab_size=512, kv_pairs=4), "seq_len"),
])
def test_mqar_rejects_impossible_settings(params, field):
    with pytest.raises(UserError) as e:
        get_task("mqar", **params)
    assert e.value.path == field


def test_unknown_task_and_parameter():
    with pytest.raises(UserError, match="unknown task 'nope'"):
        get_task("nope")
    with pytest.raises(UserError, match="bad parameters"):
        get_task("mqar", kv=3)
    with pytest.raises(UserError, match="unknown MAD task"):
        get_task("mad:recall")
    with pytest.raises(UserError) as e:
        get_task("mad:compression", colour=3)
    assert e.value.path == "colour"


def test_mad_recall_structure():
    task = MADTask("in_context_recall", num_test_examples=32)
    x, y = task.test_set()
    assert task.seq_len == 127 and x.shape == (32, 127)
    tokens = torch.cat([x, y[:, -1:]], dim=1)                           # the full sequence of 64 pairs
    keys, values = tokens[:, 0::2], tokens[:, 1::2]
    assert ((keys >= 0) & (keys < 8)).all() and ((values >= 8) & (values < 16)).all()
    for row in range(32):
        mapping, expected = {}, []
        for k, v in zip(keys[row].tolist(), values[row].tolist()):
            assert mapping.setdefault(k, v) == v                        # one value per key in a sequence
            expected.append(v if len(expected) and k in [kk for kk in keys[row, :len(expected)].tolist()]
                            else IGNORE)
        assert y[row, 0::2].tolist() == expected[:64]                   # labels: values of repeated keys
        assert y[row, -1] != IGNORE and keys[row, -1].item() in keys[row, :-1].tolist()
    xt, yt = task.train_batch(0, 4)
    assert torch.equal(xt[:, 1:], yt[:, :-1])                           # training: next-token everywhere


def test_mad_noisy_recall_noise_is_unlabelled():
    task = MADTask("noisy_in_context_recall", num_test_examples=64, frac_noise=0.6)
    x, y = task.test_set()
    noise = x >= 16
    assert 0.4 < noise.float().mean() < 0.8
    assert not (y[:, :-1][noise[:, 1:]] != IGNORE).any()                # never a label on a noise token


def test_mad_selective_copying_structure():
    task = MADTask("selective_copying", num_test_examples=16)
    x, y = task.test_set()
    L, n = 256, 16
    assert (x[:, L - n - 1] == 15).all() and (x[:, L - n:] == 14).all()
    for row in range(16):
        prefix = x[row, :L - n - 1]
        copied = prefix[prefix != 14]
        assert len(copied) == n and prefix[-1] != 14                    # last token ends the prefix
        assert y[row, L - n:].tolist() == copied.tolist()
        assert (y[row, :L - n] == IGNORE).all()


def test_mad_compression_and_memorization_structure():
    x, y = MADTask("compression", num_test_examples=8).test_set()
    assert x.shape == (8, 62) and (x[:, 31:] == 15).all() and (x[:, :31] < 15).all()
    assert torch.equal(y[:, 31:], x[:, :31]) and (y[:, :31] == IGNORE).all()
    task = MADTask("memorization", num_test_examples=64)
    x, y = task.test_set()
    assert (x[:, 1::2] == 255).all() and (y[:, 0::2] == IGNORE).all()
    mapping = {}
    for k, v in zip(x[:, 0::2].flatten().tolist(), y[:, 1::2].flatten().tolist()):
        assert mapping.setdefault(k, v) == v                            # one fixed map across examples
    xt, yt = task.train_batch(0, 64)
    assert all(mapping.get(k, v) == v for k, v in zip(xt[:, 0::2].flatten().tolist(), yt[:, 1::2].flatten().tolist()))


def test_mad_fuzzy_recall_labels_follow_repeated_keys():
    task = MADTask("fuzzy_in_context_recall", num_test_examples=16)
    x, y = task.test_set()
    assert x.shape == (16, 128) and ((x >= 0) & (x <= 15)).all()
    assert ((y == IGNORE) | ((y >= 7) & (y < 15))).all()                # labels are value tokens
    assert ((y != IGNORE).sum(1) >= 1).all()                            # the final probe at least


@pytest.mark.parametrize("task", TASKS)
def test_mad_every_task_generates_deterministically(task):
    a, b = MADTask(task, num_test_examples=8), MADTask(task, num_test_examples=8)
    assert torch.equal(a.train_batch(2, 4)[0], b.train_batch(2, 4)[0])
    x, y = a.test_set()
    assert x.shape[1] == a.seq_len and x.max() < a.vocab_size and (y != IGNORE).any()


def test_mad_suite_members():
    assert [label for label, _ in mad_suite().members] == [f"{t}/baseline" for t in TASKS]
    suite = mad_suite(variants=True, tasks=["memorization"])
    assert len(suite.members) == 1 + len(SETTINGS["memorization"]["changes"]["vocab_size"])
    assert suite.members[-1][1].vocab_size == 8192


def test_text_task_bytes(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("hello world\nsecond line\n" * 200)
    task = get_task("text", data=str(path), seq_len=32)
    assert task.vocab_size == 256
    x, y = task.train_batch(0, 4)
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert "\n" in task.tokenizer.decode(x.flatten())                   # line breaks are kept
    vx, vy = task.test_set()
    assert vx.shape[1] == 32 and torch.equal(vx.flatten()[1:], vy.flatten()[:-1])


def test_text_task_errors(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        get_task("text", data=str(tmp_path / "missing" / "x.txt"))
    (tmp_path / "tiny.txt").write_text("short")
    with pytest.raises(UserError) as e:
        get_task("text", data=str(tmp_path / "tiny.txt"), seq_len=64)
    assert e.value.path == "seq_len"


def test_text_task_bpe_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPOSER_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "a.jsonl"
    path.write_text("".join(f'{{"text": "the cat sat on mat number {i}"}}\n' for i in range(300)))
    task = get_task("text", data=str(path), tokenizer="bpe", bpe_vocab_size=300, seq_len=16)
    assert 256 < task.vocab_size <= 300
    assert len(list((tmp_path / "cache").glob("bpe-300-*.json"))) == 1
    again = get_task("text", data=str(path), tokenizer="bpe", bpe_vocab_size=300, seq_len=16)
    assert torch.equal(again.train_tokens, task.train_tokens)
    assert task.tokenizer.decode(task.train_tokens[:20]).startswith("the cat sat")
