"""Measured inference costs (composer/measure): the protocol's deterministic facts (state bytes against the analytic
cost model, a window's cap, a recurrent state's independence of the context), the ordering of decode costs (a
sliding window stays flat while full attention grows: ratios of minima over interleaved rounds, never a wall-clock
limit), the child process (its reply, its timeout, its failure as one line), the run-folder cache, and
`composer bench`'s errors as one line."""

import json

import pytest

from composer.cli import main
from composer.costs import model_cost
from composer.errors import UserError
from composer.measure import MeasureCache, MeasureError, MeasureSettings, measure, measure_in_child, parse_context
from composer.measure.cache import cache_name
from composer.measure.protocol import measure_context
from composer.spec_parse import load_spec

QUICK = MeasureSettings(warmup=0, repeats=1, prefill_repeats=1, decode_tokens=1)
HEADS = {op: {"n_heads": 2} for op in ("attention", "gla", "mamba2", "gated_deltanet", "retnet")}


def small(*layers, max_seq_len=1024, d_model=32):
    return load_spec({"d_model": d_model, "vocab_size": 64, "max_seq_len": max_seq_len, "layers": list(layers),
                      "defaults": HEADS})


# -- deterministic: the state ------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["gla", "mamba2", "gated_deltanet", "retnet", "hgrn2", "mingru"])
def test_a_recurrent_state_is_independent_of_the_context_and_is_what_the_cost_model_counts(op):
    spec = small(op, "mlp")
    held = [measure_context(spec, context, QUICK)["state_bytes"] for context in (16, 512)]
    assert held[0] == held[1] == model_cost(spec, 512, dtype_bytes=4).state_bytes > 0


def test_the_kv_cache_grows_with_the_context_and_a_window_caps_it():
    full, window = small("attention", "mlp"), small({"op": "attention", "window": 16}, "mlp")
    position = 8        # attention's position counter (an int64) beside its keys and values
    for context in (16, 64, 512):
        assert measure_context(full, context, QUICK)["state_bytes"] == (
            model_cost(full, context, dtype_bytes=4).state_bytes + position)
    capped = [measure_context(window, context, QUICK)["state_bytes"] for context in (16, 64, 512)]
    assert capped == [model_cost(window, 16, dtype_bytes=4).state_bytes + position] * 3


def test_measuring_in_this_process_leaves_the_thread_count_as_it_found_it():
    import torch

    before = torch.get_num_threads()
    settings = MeasureSettings(**{**QUICK.__dict__, "threads": before + 1})
    measure_context(small("gla", "mlp"), 16, settings)
    assert torch.get_num_threads() == before


def test_bfloat16_halves_the_state():
    spec = small("gla", "mlp")
    fp32 = measure_context(spec, 64, QUICK)["state_bytes"]
    assert measure_context(spec, 64, MeasureSettings(**{**QUICK.__dict__, "dtype": "bfloat16"}))["state_bytes"] \
        == fp32 // 2


# -- ordering: decode cost against the context -------------------------------------------------------------------
def test_decode_cost_of_a_sliding_window_stays_flat_while_full_attention_grows():
    # Wide attention layers so that the KV cache (copied and read at every step) dominates the fixed per-step cost;
    # contexts 16x apart; rounds interleaved so that a busy spell of the machine falls on every configuration, and
    # the minimum over runs (interference only ever adds time). Only orderings of ratios are asserted; on a machine
    # busy enough to inflate every run of a configuration in two rounds, up to four are taken (the minima only fall,
    # so a window that grew like full attention still fails).
    def spec(window):
        layer = {"op": "attention", "n_heads": 8, **({"window": window} if window else {})}
        return load_spec({"d_model": 512, "vocab_size": 64, "max_seq_len": 4096, "layers": [layer] * 2})

    models = {"full": spec(None), "window": spec(64)}
    settings = MeasureSettings(warmup=1, repeats=5, prefill_repeats=1, decode_tokens=8, prefill_chunk=512)
    best: dict[tuple[str, int], float] = {}

    def ordered() -> bool:
        full_growth = best["full", 4096] / best["full", 256]
        window_growth = best["window", 4096] / best["window", 256]
        return full_growth > 2 * window_growth and best["full", 4096] > 2 * best["window", 4096]

    for rounds in range(1, 5):
        for context in (256, 4096):
            for name, model in models.items():
                got = measure_context(model, context, settings)["decode_ms_per_token"]["min"]
                best[name, context] = min(got, best.get((name, context), got))
        if rounds >= 2 and ordered():
            break
    assert ordered(), best


# -- the child process -------------------------------------------------------------------------------------------
def test_the_child_process_runs_the_protocol_and_its_timeout_stops_it():
    spec = small("gla", "mlp")
    got = measure_in_child(spec, 32, QUICK)
    assert got["context"] == 32 and got["device"] == "cpu" and got["threads"] == 1
    assert got["state_bytes"] == model_cost(spec, 32, dtype_bytes=4).state_bytes
    assert got["peak_memory_bytes"] >= got["baseline_memory_bytes"] > got["state_bytes"]
    assert got["decode_ms_per_token"]["n"] == 1 and got["prefill_tokens_per_s"]["median"] > 0
    with pytest.raises(MeasureError, match="took longer than timeout_s 0.05 s"):
        measure_in_child(spec, 32, MeasureSettings(**{**QUICK.__dict__, "timeout_s": 0.05}))


def test_a_failing_child_is_one_error_line():
    spec = small("gla", "mlp")
    with pytest.raises(MeasureError) as failed:
        measure_in_child(spec, 32, MeasureSettings(**{**QUICK.__dict__, "device": "nodevice"}))
    assert str(failed.value).startswith("measuring context 32 failed: ") and "\n" not in str(failed.value)


# -- the cache ---------------------------------------------------------------------------------------------------
def test_measure_reuses_the_run_folder_cache_by_arch_device_threads_and_context(tmp_path):
    spec = small("gla", "mlp")
    calls = []

    def runner(s, context, settings):
        calls.append((context, settings.threads))
        return {"arch_id": __import__("composer").arch_id(s), "context": context, "state_bytes": 1}

    cache = MeasureCache(tmp_path / "measure")
    measure(spec, [64, 128], QUICK, cache, runner)
    measure(spec, [64, 128], QUICK, cache, runner)
    assert calls == [(64, 1), (128, 1)]
    two = MeasureSettings(**{**QUICK.__dict__, "threads": 2})
    measure(spec, [64], two, cache, runner)
    assert calls[-1] == (64, 2) and len(list((tmp_path / "measure").iterdir())) == 3
    assert cache_name("abc", 64, two).startswith("abc-cpu-t2-64-")
    assert [m["context"] for m in cache.of_arch(__import__("composer").arch_id(spec))] == [64, 64, 128]
    # the timeout is not part of what a number depends on
    assert cache_name("abc", 64, QUICK) == cache_name("abc", 64, MeasureSettings(**{**QUICK.__dict__,
                                                                                    "timeout_s": 5.0}))


# -- contexts and the command line -------------------------------------------------------------------------------
def test_contexts_read_as_numbers_or_with_k():
    assert [parse_context(v) for v in ("1K", "8k", "32K", 4096, "2048", "1M")] == [1024, 8192, 32768, 4096, 2048,
                                                                                  1 << 20]
    for bad in ("0", "-1", "2M", "1.5", "abc", True, None):
        with pytest.raises(UserError):
            parse_context(bad)


@pytest.mark.parametrize("flags, message", [
    (["--context", "0"], "error: --context: expected a context length in [1, 1,048,576]"),
    (["--context", "8K", "lots"], "error: --context: expected a context length (an integer such as 8192, or 8K), "
                                  "got 'lots'"),
    (["--context", "64K"], "error: --context: context 65,536 is beyond the model's max_seq_len 1,024 (the longest "
                           "context it declares); give --extend"),
    (["--device", "tpu"], "error: --device: expected cpu, cuda or cuda:N, got 'tpu'"),
    (["--device", "cuda:x"], "error: --device: expected cpu, cuda or cuda:N, got 'cuda:x'"),
    (["--threads", "0"], "error: --threads: expected an integer >= 1"),
    (["--repeats", "two"], "error: --repeats: expected an integer >= 1"),
    (["--dtype", "int8"], "error: --dtype: expected one of float32, bfloat16, float16, got 'int8'"),
    (["--timeout", "-1"], "error: --timeout: expected a positive number"),
])
def test_bench_refuses_bad_contexts_and_devices_in_one_line(flags, message, capsys):
    assert main(["bench", "search_spaces/architectures/hybrid_pattern.yaml", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


def test_bench_without_cuda_says_so_in_one_line(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["bench", "search_spaces/architectures/hybrid_pattern.yaml", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --device: 'cuda': CUDA is not available") and err.count("\n") == 1


def test_bench_measures_each_context_and_prints_json(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("d_model: 32\nvocab_size: 64\nmax_seq_len: 128\nlayers: [gla, mlp, {op: attention, window: 8}]\n"
                    "defaults: {gla: {n_heads: 2}, attention: {n_heads: 2}}\n")
    assert main(["bench", str(spec), "--context", "32", "128", "--repeats", "2", "--prefill-repeats", "1",
                 "--decode-tokens", "2", "--warmup", "0", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = data["measurements"]
    assert [r["context"] for r in rows] == [32, 128] and data["settings"]["repeats"] == 2
    assert rows[0]["state_bytes"] == rows[1]["state_bytes"]           # a window and a recurrent state: flat
    assert all(r["decode_ms_per_token"]["n"] == 2 and r["prefill_tokens_per_s"]["n"] == 1 for r in rows)
    assert list(tmp_path.iterdir()) == [spec]                          # nothing written
