"""Which cheap proxy ranks architectures the way an honestly trained target does?

Ten architectures spanning good and bad (pure attention; pure Mamba-2, Gated DeltaNet and GLA; hybrids of
attention with each at 3:1 and 1:1; and deliberately weak ones: pure short convolutions, and MLPs alone with no
token mixing) are written as one searched *block* of four slots (each a token mixer + an MLP).

The **proxy** is the block as a search trains it: at `proxy_d_model` (8; head counts each layer's default), scored
by its validation loss, in the variants the literature says rank better:

* `base`: `proxy_tokens_per_param` (20) tokens per parameter, the recipe's lr, seed 0;
* `long`: trained longer, `long_tokens_per_param` (75: within 50-100) tokens per parameter;
* `lr_swept`: the best of `proxy_lrs` x the recipe's lr (seed 0; costs their number of runs);
* `mean_seeds`: the mean over `proxy_seeds` (3) seeds at the recipe's lr;
* `small_lr`: `small_lr` (0.25) x the recipe's lr.

The **target** follows the confirmation protocol of issue 21, as `composer confirm` applies it to a searched trial:
the block fitted to `proxy_ratio` (10) times the median proxy's counted parameters by confirm's sizing
(composer/confirm/sizing.py: the Composer depth rule, hardware-friendly widths, the MLPs' d_ff as the fine knob;
every target within 1% of the size, so any two within 2%: `target_count_spread` in the JSON), trained on
`target_tokens_per_param` (10) tokens per parameter, with its own learning-rate sweep (`target_lrs` x the recipe's,
seed 0, chosen on the text's *validation* split), then `target_seeds` seeds at the chosen rate; its score is the
*test* loss (the last 5%, which nothing chose by; `holdout_loss`, the last tenth as nanoGPT's split, beside it).

Each variant's Spearman and Kendall (95% bootstrap resampling the target's seeds) and pairwise decision accuracy
(the fraction of architecture pairs it orders as the target's means; 95% bootstrap resampling architectures and the
target's seeds) stand beside the target's seed-to-seed floor (seed 0 against seed 1: Spearman, Kendall and pairwise
accuracy), with its cost in CPU-seconds per candidate (process CPU time of its training runs, one torch thread each).

    .venv/bin/python benchmarks/bench_proxies.py [--smoke] [--workers 2] [--out runs/bench_proxies] [--data FILE]

The full setting (about 35K-parameter targets, 347K tokens each; 3-10K-parameter proxies) needs about 1,250
CPU-seconds of training, estimated from a measured throughput: 10-20 minutes on 2 idle cores, within the 30-minute
budget (its sizes are in the JSON under `setting` and `architectures`). It runs in two phases (the target's sweeps;
its seeds and the proxies); every finished run is written at once to <out>/full/runs.json (a rerun skips those: kill
it and rerun to resume), and after each phase the analysis so far to benchmarks/results/proxies.json (`complete`:
false until the end). `--smoke` checks the plumbing end to
end in under a minute with toy budgets (its result stays in <out>/smoke/, never over the real one).
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from dataclasses import asdict, dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Job, Timings, add_data_argument, run_jobs, text_task, write_result  # noqa: E402
from composer.atomic import write_json  # noqa: E402
from composer.canonical_form import stripe  # noqa: E402
from composer.confirm.sizing import fit_hardware  # noqa: E402
from composer.provenance import provenance  # noqa: E402
from composer.spec import ArchSpec  # noqa: E402
from composer.spec_parse import load_spec  # noqa: E402
from scaling.rules import param_count, units  # noqa: E402
from scaling.stats import rank_agreement_interval, seed_noise_floor  # noqa: E402

LEGEND = {"A": "attention", "M": "mamba2", "D": "gated_deltanet", "G": "gla", "C": "short_conv", "-": None}
ARCHITECTURES = {                 # name -> the searched block: one token mixer per slot (- : none), each + an MLP
    "attention": "AAAA", "mamba2": "MMMM", "gated_deltanet": "DDDD", "gla": "GGGG",
    "gdn3_attn1": "DDDA", "gdn_attn_interleaved": "DADA", "mamba3_attn1": "MMMA", "gla3_attn1": "GGGA",
    "short_conv_only": "CCCC", "mlp_only": "----",            # deliberately weak: local mixing only; none at all
}
VARIANTS = ("base", "long", "lr_swept", "mean_seeds", "small_lr")


@dataclass(frozen=True)
class Setting:
    """The budgets of one benchmark run (tokens, never seconds)."""

    proxy_d_model: int = 8               # the proxy: the searched block at this width (a search's fixed d_model)
    proxy_ratio: int = 10                # the target: this many times the median proxy's counted parameters
    target_tokens_per_param: float = 10
    target_seeds: int = 2
    target_lrs: tuple[float, ...] = (0.5, 1.0, 2.0)
    proxy_tokens_per_param: float = 20
    long_tokens_per_param: float = 75
    proxy_lrs: tuple[float, ...] = (0.5, 1.0, 2.0)
    proxy_seeds: int = 3
    small_lr: float = 0.25
    seq_len: int = 64
    batch_size: int = 16
    lr: float = 3e-3
    warmup_steps: int = 20
    sizing_tolerance: float = 0.01       # each target within 1% of its size: any two within 2%
    architectures: tuple[str, ...] = tuple(ARCHITECTURES)


FULL = Setting()
SMOKE = Setting(target_tokens_per_param=0.5, proxy_ratio=3, proxy_tokens_per_param=1, long_tokens_per_param=2,
                proxy_seeds=2, seq_len=32, batch_size=8, warmup_steps=2, sizing_tolerance=0.05,
                architectures=("attention", "gla", "mlp_only"))


def proxy_spec(pattern: str, s: Setting) -> ArchSpec:
    """The searched block at the proxy's width (head counts: each layer's default), as a search trains it."""
    layers = [x for letter in pattern for x in ((LEGEND[letter], "mlp") if LEGEND[letter] else ("mlp",))]
    return load_spec({"d_model": s.proxy_d_model, "vocab_size": 256, "max_seq_len": s.seq_len, "layers": layers})


def target_params(s: Setting) -> int:
    """`proxy_ratio` times the median proxy's counted parameters (one size for every target)."""
    counts = sorted(param_count(proxy_spec(ARCHITECTURES[a], s)) for a in s.architectures)
    return s.proxy_ratio * counts[len(counts) // 2]


@functools.cache
def target_spec(pattern: str, s: Setting) -> ArchSpec:
    """The block fitted to the target size by confirm's sizing (the Composer rule, hardware-friendly widths, the
    hidden widths as the fine knob), as `composer confirm` fits a searched trial."""
    return fit_hardware(proxy_spec(pattern, s), target_params(s), method="stack", tolerance=s.sizing_tolerance,
                        what=f"the target of {pattern}").spec


def lr_kind(prefix: str, factor: float) -> str:
    return f"{prefix} lr={factor:g}x"


# ------------------------------------------------------------------------------------------------
# Running: one job per (target or proxy run, architecture, seed), two worker processes of one torch thread


def common_train(s: Setting, factor: float = 1.0) -> dict[str, Any]:
    return {"lr": s.lr * factor, "batch_size": s.batch_size, "warmup_steps": s.warmup_steps, "eval_every": 1 << 40,
            "final_splits": ("test", "holdout")}


def tokens(params: int, per_param: float, s: Setting) -> int:
    """`per_param` tokens per counted parameter, at least two batches."""
    return max(int(round(per_param * params)), 2 * s.batch_size * s.seq_len)


def target_sweep_jobs(s: Setting, data: str | None) -> list[Job]:
    task = text_task(data, seq_len=s.seq_len)
    jobs = []
    for arch in s.architectures:
        spec = target_spec(ARCHITECTURES[arch], s)
        budget = {"tokens": tokens(target_params(s), s.target_tokens_per_param, s)}
        jobs += [Job(lr_kind("target", f), arch, 0, spec.to_dict(), task, budget, common_train(s, f))
                 for f in s.target_lrs]
    return jobs


def chosen_lr(rows: dict[str, dict[str, Any]], prefix: str, arch: str, factors: tuple[float, ...]) -> float | None:
    """The lr factor with the lowest validation loss at seed 0 (None: none finished)."""
    losses = {f: finite(rows.get(f"{lr_kind(prefix, f)}|{arch}|0"), "val_loss") for f in factors}
    losses = {f: v for f, v in losses.items() if v is not None}
    return min(losses, key=losses.get) if losses else None


def target_seed_jobs(s: Setting, data: str | None, rows: dict[str, dict[str, Any]]) -> list[Job]:
    task = text_task(data, seq_len=s.seq_len)
    jobs = []
    for arch in s.architectures:
        f = chosen_lr(rows, "target", arch, s.target_lrs)
        if f is None:
            continue
        spec = target_spec(ARCHITECTURES[arch], s)
        budget = {"tokens": tokens(target_params(s), s.target_tokens_per_param, s)}
        jobs += [Job(lr_kind("target", f), arch, seed, spec.to_dict(), task, budget, common_train(s, f))
                 for seed in range(1, s.target_seeds)]
    return jobs


def proxy_jobs(s: Setting, data: str | None) -> list[Job]:
    task = text_task(data, seq_len=s.seq_len)
    jobs = []
    for arch in s.architectures:
        spec = proxy_spec(ARCHITECTURES[arch], s)
        n = param_count(spec)
        base = {"tokens": tokens(n, s.proxy_tokens_per_param, s)}
        jobs += [Job(lr_kind("proxy", f), arch, 0, spec.to_dict(), task, base, common_train(s, f))
                 for f in sorted({*s.proxy_lrs, 1.0})]
        jobs += [Job(lr_kind("proxy", 1.0), arch, seed, spec.to_dict(), task, base, common_train(s))
                 for seed in range(1, s.proxy_seeds)]
        jobs.append(Job("proxy long", arch, 0, spec.to_dict(), task,
                        {"tokens": tokens(n, s.long_tokens_per_param, s)}, common_train(s)))
        jobs.append(Job(lr_kind("proxy", s.small_lr), arch, 0, spec.to_dict(), task, base,
                        common_train(s, s.small_lr)))
    return jobs


# ------------------------------------------------------------------------------------------------
# Analysis


def finite(row: dict[str, Any] | None, metric: str) -> float | None:
    if row is None or row["metrics"].get("status") == "diverged":
        return None
    value = row["metrics"].get(metric)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def target_scores(s: Setting, rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per architecture with all its target seeds: the chosen lr factor and the test loss per seed."""
    out = {}
    for arch in s.architectures:
        f = chosen_lr(rows, "target", arch, s.target_lrs)
        if f is None:
            continue
        test = {seed: finite(rows.get(f"{lr_kind('target', f)}|{arch}|{seed}"), "test_loss")
                for seed in range(s.target_seeds)}
        if all(v is not None for v in test.values()):
            sweep = {f"{g:g}x": finite(rows.get(f"{lr_kind('target', g)}|{arch}|0"), "val_loss")
                     for g in s.target_lrs}
            holdout = [finite(rows.get(f"{lr_kind('target', f)}|{arch}|{seed}"), "holdout_loss")
                       for seed in range(s.target_seeds)]
            out[arch] = {"lr_factor": f, "lr": s.lr * f, "sweep_val_loss": sweep, "test_loss": test,
                         "mean": sum(test.values()) / len(test),
                         "holdout_loss": (sum(holdout) / len(holdout) if all(h is not None for h in holdout)
                                          else None),
                         "at_edge": len(s.target_lrs) > 1 and f in (min(s.target_lrs), max(s.target_lrs))}
    return out


def proxy_scores(s: Setting, rows: dict[str, dict[str, Any]], arch: str) -> dict[str, tuple[float, list[str]]]:
    """Per variant: the proxy's score (validation loss) and the keys of the runs it cost."""
    def key(kind: str, seed: int = 0) -> str:
        return f"{kind}|{arch}|{seed}"

    def val(k: str) -> float | None:
        return finite(rows.get(k), "val_loss")

    out: dict[str, tuple[float, list[str]]] = {}
    base = key(lr_kind("proxy", 1.0))
    if val(base) is not None:
        out["base"] = (val(base), [base])
    if val(key("proxy long")) is not None:
        out["long"] = (val(key("proxy long")), [key("proxy long")])
    swept = [key(lr_kind("proxy", f)) for f in sorted({*s.proxy_lrs, 1.0})]
    if all(val(k) is not None for k in swept):
        out["lr_swept"] = (min(val(k) for k in swept), swept)
    seeds = [key(lr_kind("proxy", 1.0), seed) for seed in range(s.proxy_seeds)]
    if all(val(k) is not None for k in seeds):
        out["mean_seeds"] = (sum(val(k) for k in seeds) / len(seeds), seeds)
    small = key(lr_kind("proxy", s.small_lr))
    if val(small) is not None:
        out["small_lr"] = (val(small), [small])
    return out


def pairwise_accuracy(proxy: list[float], target: list[float]) -> float:
    """The fraction of pairs the proxy orders as the target (a tie on either side counts one half)."""
    pairs = list(combinations(range(len(proxy)), 2))
    agree = sum(1.0 if (proxy[i] - proxy[j]) * (target[i] - target[j]) > 0 else
                0.5 if (proxy[i] - proxy[j]) * (target[i] - target[j]) == 0 else 0.0 for i, j in pairs)
    return agree / len(pairs)


def pairwise_interval(proxy: list[float], target_seeds: list[list[float]], level: float = 0.95,
                      n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Pairwise decision accuracy with a percentile bootstrap resampling architectures (pairs of one architecture
    with itself left out) and each architecture's target seeds."""
    rng = np.random.default_rng(seed)
    n = len(proxy)
    point = pairwise_accuracy(proxy, [float(np.mean(v)) for v in target_seeds])
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        means = [float(np.mean(rng.choice(target_seeds[i], len(target_seeds[i])))) for i in idx]
        pairs = [(a, b) for a, b in combinations(range(n), 2) if idx[a] != idx[b]]
        if not pairs:
            continue
        agree = [(proxy[idx[a]] - proxy[idx[b]]) * (means[a] - means[b]) for a, b in pairs]
        values.append(sum(1.0 if x > 0 else 0.5 if x == 0 else 0.0 for x in agree) / len(pairs))
    tail = (1 - level) / 2 * 100
    return {"value": point, "ci": [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))],
            "resamples": len(values)}


def cpu_per_candidate(rows: dict[str, dict[str, Any]], keys: list[list[str]]) -> float:
    return sum(rows[k]["metrics"]["cpu_s"] for ks in keys for k in ks) / len(keys)


def analyse(s: Setting, rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    target = target_scores(s, rows)
    archs = list(target)
    out: dict[str, Any] = {"target": {"architectures": target, "ranking": sorted(archs, key=lambda a:
                                                                                  target[a]["mean"])},
                           "proxies": {}}
    if len(archs) < 3:
        return out
    seeds = [[target[a]["test_loss"][k] for k in sorted(target[a]["test_loss"])] for a in archs]
    per_seed = [[target[a]["test_loss"][k] for a in archs] for k in range(s.target_seeds)]
    target_keys = [[k for k, r in rows.items() if r["arch"] == a and r["kind"].startswith("target")] for a in archs]
    floor = seed_noise_floor(per_seed)
    out["target"]["noise_floor"] = {**floor, "pairwise_accuracy": sum(
        pairwise_accuracy(per_seed[i], per_seed[j]) for i, j in combinations(range(len(per_seed)), 2))
        / max(1, math.comb(len(per_seed), 2))}
    out["target"]["cpu_s_per_candidate"] = cpu_per_candidate(rows, target_keys)
    scored = {a: proxy_scores(s, rows, a) for a in archs}
    for variant in VARIANTS:
        have = [a for a in archs if variant in scored[a]]
        if len(have) < 3:
            continue
        proxy = [scored[a][variant][0] for a in have]
        tseeds = [seeds[archs.index(a)] for a in have]
        agreement = rank_agreement_interval(proxy, tseeds)
        out["proxies"][variant] = {
            "scores": dict(zip(have, proxy)), "ranking": sorted(have, key=lambda a: scored[a][variant][0]),
            "spearman": agreement["spearman"], "kendall": agreement["kendall"],
            "pairwise_accuracy": pairwise_interval(proxy, tseeds), "n_archs": len(have),
            "runs_per_candidate": len(scored[have[0]][variant][1]),
            "cpu_s_per_candidate": cpu_per_candidate(rows, [scored[a][variant][1] for a in have])}
    return out


def describe_specs(s: Setting) -> dict[str, Any]:
    """Per architecture: the block, and the counted parameters, width, depth and stripe of the target and proxy."""
    def shape(spec: ArchSpec) -> dict[str, Any]:
        return {"non_embedding_params": param_count(spec), "params": param_count(spec, "total"),
                "d_model": spec.d_model, "units": len(units(spec)), "stripe": stripe(spec)}

    out = {arch: {"block": ARCHITECTURES[arch], "target": shape(target_spec(ARCHITECTURES[arch], s)),
                  "proxy": shape(proxy_spec(ARCHITECTURES[arch], s))} for arch in s.architectures}
    counts = [v["target"]["non_embedding_params"] for v in out.values()]
    return {"per_architecture": out, "target_count_spread": max(counts) / min(counts) - 1,
            "target_tokens": tokens(target_params(s), s.target_tokens_per_param, s)}


def print_table(result: dict[str, Any]) -> None:
    t = result["target"]
    print(f"\ntarget ranking (test loss, tuned lr): {', '.join(t['ranking'])}")
    if "noise_floor" not in t:
        return
    floor = t["noise_floor"]
    print(f"target seed floor: Spearman {floor['spearman']:+.2f}, Kendall {floor['kendall']:+.2f}, pairwise "
          f"{floor['pairwise_accuracy']:.2f}; {t['cpu_s_per_candidate']:.0f} CPU s per candidate")
    print(f"{'proxy':12s} {'Spearman [95% CI]':>22s} {'Kendall':>8s} {'pairwise [95% CI]':>20s} {'CPU s/cand':>11s}")
    for name, p in result["proxies"].items():
        rho, acc = p["spearman"], p["pairwise_accuracy"]
        print(f"{name:12s} {rho['value']:+.2f} [{rho['ci'][0]:+.2f}, {rho['ci'][1]:+.2f}]{'':5s} "
              f"{p['kendall']['value']:+8.2f}   {acc['value']:.2f} [{acc['ci'][0]:.2f}, {acc['ci'][1]:.2f}]"
              f"{p['cpu_s_per_candidate']:11.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="toy budgets: the plumbing end to end in under a minute")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="runs/bench_proxies", help="folder for the per-run results (resumable)")
    add_data_argument(parser)
    args = parser.parse_args()
    s = SMOKE if args.smoke else FULL
    out = Path(args.out) / ("smoke" if args.smoke else "full")
    out.mkdir(parents=True, exist_ok=True)
    timings = Timings(out / "timings.json")
    shapes = describe_specs(s)

    def save(rows: dict[str, dict[str, Any]], complete: bool) -> Path:
        result = {"benchmark": "proxies", "protocol": "issue 21: equal sizes, tuned lr on validation, test split, "
                  f">= {s.target_tokens_per_param:g} tokens/param at the target", "complete": complete,
                  "setting": asdict(s), "data": args.data or "the shipped sample", "workers": args.workers,
                  "torch_threads_per_run": 1, "wall_s": timings.data["stages"], "wall_s_total": timings.total_s,
                  "invocations": timings.data["runs"], "architectures": shapes, **analyse(s, rows),
                  "runs_file": str(out / "runs.json"), "provenance": provenance("cpu")}
        if complete:
            print_table(result)
        if args.smoke:
            write_json(out / "proxies.json", result)
            return out / "proxies.json"
        return write_result("proxies", result)

    runs = out / "runs.json"
    with timings.stage("target_sweep"):
        rows = run_jobs(target_sweep_jobs(s, args.data), runs, args.workers)
    save(rows, False)
    with timings.stage("target_seeds_and_proxies"):
        rows = run_jobs(target_seed_jobs(s, args.data, rows) + proxy_jobs(s, args.data), runs, args.workers)
    path = save(rows, True)
    print(f"{timings.total_s:.0f} s in all -> {path}")


if __name__ == "__main__":
    main()
