"""`composer eval`: lm-evaluation-harness tasks on a bundle, offline, with the small task definitions and data
file in tests/data/lm_eval/ (multiple choice, rolling perplexity, generation)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from composer import HybridLM, UserError, load_spec
from composer.export import export

pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (pip install -e '.[eval]')")

from lm_eval.api.instance import Instance  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "tests" / "data" / "lm_eval"
SPEC = {"d_model": 32, "vocab_size": 256, "max_seq_len": 24, "layers": ["attention", "mlp", "gated_deltanet", "mlp"]}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval") / "b"
    torch.manual_seed(0)
    model = HybridLM(load_spec(SPEC)).eval()
    for p in model.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    export(model, folder, tokenizer="byte", progress=lambda *_: None)
    return folder, model


def request(kind, *args):
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


def logprobs_of(model, tokens):
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([tokens])).logits.float(), -1)[0]


def test_loglikelihood_is_the_models_own(bundle):
    from composer.eval.lm import ComposerLM

    folder, model = bundle
    lm = ComposerLM(folder, batch_size=3)
    pairs = [("To be, or not to", " be"), ("abc", "de"), ("x", "y"), ("To be, or not to", " go"),
             ("a much longer context than the model's window of tokens", " ok")]
    results = lm.loglikelihood([request("loglikelihood", c, t) for c, t in pairs])
    for (context, continuation), (score, greedy) in zip(pairs, results):
        tokens = list((context + continuation).encode())[-(SPEC["max_seq_len"] + 1):]
        n = len(continuation.encode())
        lp = logprobs_of(model, tokens[:-1])[-n:]
        target = torch.tensor(tokens[-n:])
        assert score == pytest.approx(float(lp.gather(1, target[:, None]).sum()), abs=1e-4)
        assert greedy == bool(torch.equal(lp.argmax(-1), target))


def test_rolling_loglikelihood_covers_every_token_once(bundle):
    from composer.eval.lm import ComposerLM

    folder, model = bundle
    lm = ComposerLM(folder)
    short, long = "short text", "a document longer than one window of the model's context: " * 2
    scores = lm.loglikelihood_rolling([request("loglikelihood_rolling", short),
                                       request("loglikelihood_rolling", long)])
    end_of_text, L = 0, SPEC["max_seq_len"]      # the byte tokenizer's <|endoftext|> (the NUL byte's id)
    assert lm.prefix_token_id == end_of_text
    tokens = list(short.encode())
    lp = logprobs_of(model, [end_of_text] + tokens[:-1])
    assert scores[0] == pytest.approx(float(lp.gather(1, torch.tensor(tokens)[:, None]).sum()), abs=1e-4)
    tokens, total, done = list(long.encode()), 0.0, 0
    while done < len(tokens):   # windows of L predictions, each read with the L tokens before its last one
        end = min(done + L, len(tokens))
        inputs = ([end_of_text] + tokens)[max(0, end - L):end]
        lp = logprobs_of(model, inputs)[-(end - done):]
        total += float(lp.gather(1, torch.tensor(tokens[done:end])[:, None]).sum())
        done = end
    assert scores[1] == pytest.approx(total, abs=1e-3)


def test_generate_until_is_greedy_decoding_cut_at_the_stop(bundle):
    from composer.eval.lm import ComposerLM

    folder, model = bundle
    lm = ComposerLM(folder)
    prompt = "To be, or"
    full = model.generate(torch.tensor([list(prompt.encode())]), 10, temperature=0)[0, len(prompt):]
    text = bytes(full.tolist()).decode("utf-8", errors="replace")
    [free] = lm.generate_until([request("generate_until", prompt, {"until": ["\x00never"], "max_gen_toks": 10})])
    assert free == text
    stop = text[3:5]
    [cut] = lm.generate_until([request("generate_until", prompt, {"until": [stop], "max_gen_toks": 10})])
    assert cut == text[:text.index(stop)]


@pytest.mark.slow  # a fresh process importing lm-eval, datasets and torch: 10-30 s
def test_cli_runs_local_tasks_offline(bundle, tmp_path):
    """The real command in a fresh process: offline, tasks from tests/data/lm_eval (run from the repo root,
    where their data path points)."""
    folder, _ = bundle
    out = tmp_path / "results.json"
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(tmp_path / "hf"), "HF_HOME": str(tmp_path / "hf_home")}
    proc = subprocess.run([sys.executable, "-m", "composer", "eval", str(folder), "--tasks", "composer_tiny",
                           "--include", str(TASKS), "--out", str(out)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "composer_tiny_choice" in proc.stdout and f"wrote {out}" in proc.stdout
    report = json.loads(out.read_text())
    results = report["results"]
    assert set(results) == {"composer_tiny_choice", "composer_tiny_ppl", "composer_tiny_gen"}
    assert 0 <= results["composer_tiny_choice"]["acc,none"] <= 1
    assert results["composer_tiny_ppl"]["bits_per_byte,none"] > 0
    assert 0 <= results["composer_tiny_gen"]["exact_match,none"] <= 1
    assert report["n-samples"]["composer_tiny_choice"]["effective"] == 6
    assert report["provenance"]["device"].startswith("cpu")


@pytest.mark.slow  # an unknown name is looked up in lm-eval's full task index (~15 000 YAML files)
def test_unknown_task_names_a_close_one(bundle):
    from composer.eval import evaluate_bundle

    with pytest.raises(UserError, match="unknown lm-eval task 'composer_tiny_choise' \\(did you mean "
                                        "'composer_tiny_choice'\\?\\)"):
        evaluate_bundle(bundle[0], ["composer_tiny_choise"], include=[TASKS])


def test_user_errors(bundle, tmp_path, monkeypatch, capsys):
    from composer.cli import main
    from composer.eval import evaluate_bundle

    folder, _ = bundle
    assert main(["eval", str(tmp_path / "missing"), "--tasks", "x"]) == 2
    assert "no such bundle directory" in capsys.readouterr().err
    spec_only = tmp_path / "spec_only"
    export(load_spec(SPEC), spec_only, progress=lambda *_: None)
    with pytest.raises(UserError, match="has no weights"):
        evaluate_bundle(spec_only, [str(TASKS / "composer_tiny_choice.yaml")])
    monkeypatch.setitem(sys.modules, "lm_eval", None)   # as if the extra were not installed
    assert main(["eval", str(folder), "--tasks", "composer_tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: composer eval needs lm-evaluation-harness: pip install 'hybrid-composer[eval]' "
                   "(in a checkout: pip install -e '.[eval]')"]


@pytest.mark.slow  # lm-eval's own Hugging Face model loads the bundle's remote code: ~20 s
def test_lm_evals_own_hf_model_reads_a_bundle_offline(bundle, monkeypatch):
    """`lm_eval --model hf --model_args pretrained=BUNDLE,trust_remote_code=True`, in process and offline: it needs
    the tokenizer's end-of-text token (the first token of a document, the stop of a generation), and gives the
    numbers `composer eval` gives."""
    pytest.importorskip("accelerate", reason="lm-eval's hf model needs accelerate (pip install -e '.[eval]')")
    import lm_eval

    from composer.eval.harness import evaluate_bundle, task_manager

    folder, _ = bundle
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(REPO)                       # the task files name their data relative to the repository
    settings = dict(tasks=["composer_tiny"], bootstrap_iters=0, log_samples=False, random_seed=0,
                    numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)
    native = lm_eval.simple_evaluate(model="hf", model_args={"pretrained": str(folder), "trust_remote_code": True},
                                     device="cpu", batch_size=1, task_manager=task_manager(["composer_tiny"], [TASKS]),
                                     **settings)["results"]
    ours = evaluate_bundle(folder, ["composer_tiny"], include=[TASKS], batch_size=1, bootstrap_iters=0)["results"]
    for task, metric in (("composer_tiny_choice", "acc,none"), ("composer_tiny_ppl", "bits_per_byte,none"),
                         ("composer_tiny_ppl", "word_perplexity,none"), ("composer_tiny_gen", "exact_match,none")):
        assert native[task][metric] == pytest.approx(ours[task][metric], rel=1e-4), (task, metric)
