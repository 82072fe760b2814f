"""Which cheap proxy ranks architectures the way real text at a larger size does?

Eleven architectures (pure attention, pure Mamba-2 / Gated DeltaNet / GLA, and hybrids of different ratios and
orders, each token mixer followed by an MLP) are written as one searched *block* of four slots at d_model 32.
The **target** is each block stacked twice (8 mixer layers) and widened to `target_params` non-embedding
parameters (`scaling.rules.fit_to_params`), trained on text (`--data`, default Tiny Shakespeare, last tenth
validating) with 3 seeds; its score is the validation loss. The **proxies** rank the same architectures more
cheaply:

* `mqar`: multi-query associative recall (the quickstart space's setting) on the block at d_model 32; accuracy.
* `mad`: the reduced MAD suite (six tasks at their baselines, a few steps each, as bench_mad.py) on the block
  at d_model 32; mean accuracy.
* `text/R narrow`: text at 1/R of the target's parameters with the target's depth kept (8 mixer layers) and
  only the width shrunk: `fit_to_params(target, N / R, method="stack")` (the stack factor cannot go below 1).
* `text/R shallow`: text at 1/R with the Composer rule applied to the searched block
  (`fit_to_params(block, N / R, method="stack")`): one block (4 mixer layers), so the width shrinks less.
* each on `proxy_tokens` (half the target's tokens) and, as `... long`, on `long_proxy_tokens` (4x the target's:
  a model 1/R the size trains faster per token, and a few dozen steps leave it at the unigram plateau).

Each proxy's Spearman (and Kendall) to the target ranking comes with its 95% bootstrap interval resampling the
target's seeds (scaling.stats.rank_agreement_interval; a proxy's own score is the mean over its seeds), beside
the target's seed-to-seed noise floor, and its cost in CPU-seconds per candidate (process CPU time of the
training calls, one torch thread each, so it depends less on the machine's load than wall time).

    .venv/bin/python benchmarks/bench_proxies.py [--tiny] [--workers 2] [--out runs/bench_proxies] [--data FILE]

Every finished run is written at once to <out>/runs.json; a rerun skips those (kill it and rerun to resume).
`--tiny` checks the plumbing in a few minutes with toy budgets (its result stays in <out>/tiny/, never over the
real one). Results: benchmarks/results/proxies.json.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Job, Timings, add_data_argument, run_jobs, text_task, write_result  # noqa: E402
from composer.atomic import write_json  # noqa: E402
from composer.canonical_form import stripe  # noqa: E402
from composer.provenance import provenance  # noqa: E402
from composer.spec import ArchSpec  # noqa: E402
from composer.spec_parse import load_spec  # noqa: E402
from scaling.rules import fit_to_params, param_count, stack, units  # noqa: E402
from scaling.stats import rank_agreement_interval, seed_noise_floor  # noqa: E402

LEGEND = {"A": "attention", "M": "mamba2", "D": "gated_deltanet", "G": "gla", "C": "short_conv"}
ARCHITECTURES = {                 # name -> the searched block: one token mixer per slot, each followed by an MLP
    "attention": "AAAA", "mamba2": "MMMM", "gated_deltanet": "DDDD", "gla": "GGGG",
    "gdn3_attn1_last": "DDDA", "gdn3_attn1_first": "ADDD", "gdn_attn_interleaved": "DADA",
    "gdn_attn_grouped": "DDAA", "mamba3_attn1": "MMMA", "gla3_attn1": "GGGA", "conv_attn_interleaved": "CACA",
}
HEADED = ("attention", "mamba2", "gated_deltanet", "gla")


@dataclass(frozen=True)
class Setting:
    """The budgets of one benchmark run (every budget in steps or tokens, never seconds)."""

    target_params: int = 200_000         # non-embedding parameters of the target
    target_tokens: int = 128_000
    target_seeds: int = 3
    proxy_tokens: int = 64_000           # each text proxy run
    long_proxy_tokens: int = 512_000     # the `long` text proxies
    proxy_seeds: int = 1
    ratios: tuple[int, ...] = (10, 30)
    mqar_steps: int = 150                # at batch 32, as the quickstart space
    mad_steps: int = 20                  # per MAD task, at `batch_size`
    mad_seeds: int = 1
    seq_len: int = 64
    batch_size: int = 16
    lr: float = 3e-3
    warmup_steps: int = 20
    tolerance: float = 0.1


FULL = Setting()
TINY = Setting(target_params=60_000, ratios=(3, 6), target_tokens=4_096, target_seeds=2, proxy_tokens=2_048,
               long_proxy_tokens=8_192, mqar_steps=4, mad_steps=2)
MQAR = {"name": "mqar", "vocab_size": 256, "seq_len": 64, "kv_pairs": 8, "num_train": 20000, "num_test": 500}
MAD = {"name": "mad", "num_test_examples": 256}


def block(pattern: str, seq_len: int) -> ArchSpec:
    layers = [x for letter in pattern for x in (LEGEND[letter], "mlp")]
    return load_spec({"d_model": 32, "vocab_size": 256, "max_seq_len": seq_len,
                      "defaults": {op: {"n_heads": 2} for op in HEADED}, "layers": layers})


def target_spec(pattern: str, s: Setting) -> ArchSpec:
    """The block stacked twice, widened to the target size."""
    return fit_to_params(stack(block(pattern, s.seq_len), 2), s.target_params, s.tolerance, method="stack")


@dataclass(frozen=True)
class Proxy:
    name: str
    description: str
    task: dict[str, Any]
    budget: dict[str, int]
    seeds: int
    metric: str                        # the score read from the run's metrics
    mode: str                          # min | max
    train: dict[str, Any] = field(default_factory=dict)   # settings replacing the common ones

    def spec(self, pattern: str, s: Setting) -> ArchSpec:
        if not self.name.startswith("text/"):
            return block(pattern, s.seq_len)
        n, shape = self.target_fraction(s)
        base = target_spec(pattern, s) if shape == "narrow" else block(pattern, s.seq_len)
        return fit_to_params(base, n, s.tolerance, method="stack")

    def target_fraction(self, s: Setting) -> tuple[int, str]:
        ratio, shape = self.name.split("/")[1].split(" ")[:2]
        return s.target_params // int(ratio), shape


def proxies(s: Setting, data: str | None) -> list[Proxy]:
    text = text_task(data, seq_len=s.seq_len)
    out = []
    for ratio in s.ratios:          # short and long token budgets; the long ones of the first ratio first
        for long in ((True, False) if ratio == s.ratios[0] else (False, True)):
            for shape, what in (("shallow", "the Composer rule on the searched block (one block, width shrunk less)"),
                                ("narrow", "the target's 8 mixer layers kept, only the width shrunk")):
                tokens = s.long_proxy_tokens if long else s.proxy_tokens
                out.append(Proxy(f"text/{ratio} {shape}" + (" long" if long else ""),
                                 f"text at 1/{ratio} of the target's parameters, {tokens:,} tokens: {what}",
                                 text, {"tokens": tokens}, s.proxy_seeds, "val_loss", "min"))
    out.append(Proxy("mqar", "MQAR (vocab 256, seq 64, 8 pairs) on the block at d_model 32", MQAR,
                     {"steps": s.mqar_steps}, s.proxy_seeds, "accuracy", "max", {"batch_size": 32}))
    out.append(Proxy("mad", f"reduced MAD suite (6 tasks at their baselines, {s.mad_steps} steps each, 256 test "
                     "examples) on the block at d_model 32", MAD, {"steps": s.mad_steps}, s.mad_seeds, "accuracy",
                     "max"))
    return out


# ------------------------------------------------------------------------------------------------
# Running: one job per (proxy or target, architecture, seed), two worker processes of one torch thread


def plan_jobs(s: Setting, data: str | None) -> list[Job]:
    train = {"lr": s.lr, "batch_size": s.batch_size, "warmup_steps": s.warmup_steps, "eval_every": 1 << 40}
    jobs = []
    for arch, pattern in ARCHITECTURES.items():
        spec = target_spec(pattern, s).to_dict()
        jobs += [Job("target", arch, seed, spec, text_task(data, seq_len=s.seq_len), {"tokens": s.target_tokens},
                     train) for seed in range(s.target_seeds)]
    for proxy in proxies(s, data):
        for arch, pattern in ARCHITECTURES.items():
            spec = proxy.spec(pattern, s).to_dict()
            jobs += [Job(proxy.name, arch, seed, spec, proxy.task, proxy.budget, {**train, **proxy.train})
                     for seed in range(proxy.seeds)]
    return jobs


# ------------------------------------------------------------------------------------------------
# Analysis


def scores(rows: dict[str, dict[str, Any]], kind: str, metric: str) -> dict[str, dict[int, float]]:
    """{arch: {seed: value}} of one proxy (or the target); diverged or missing values are left out."""
    out: dict[str, dict[int, float]] = {}
    for row in rows.values():
        value = row["metrics"].get(metric)
        if row["kind"] == kind and row["metrics"]["status"] != "diverged" and isinstance(value, (int, float)) \
                and math.isfinite(value):
            out.setdefault(row["arch"], {})[row["seed"]] = float(value)
    return out


def per_seed(values: dict[str, dict[int, float]], archs: list[str]) -> list[list[float]]:
    """Score vectors per seed (`[seed][arch]`) over the seeds every architecture has."""
    common = sorted(set.intersection(*(set(values[a]) for a in archs)))
    return [[values[a][seed] for a in archs] for seed in common]


def cpu_seconds(rows: dict[str, dict[str, Any]], kind: str) -> dict[str, float]:
    runs = [r["metrics"]["cpu_s"] for r in rows.values() if r["kind"] == kind]
    archs = {r["arch"] for r in rows.values() if r["kind"] == kind}
    return {"per_run": sum(runs) / len(runs), "per_candidate": sum(runs) / len(archs),
            "wall_per_run": sum(r["metrics"]["wall_s"] for r in rows.values() if r["kind"] == kind) / len(runs)}


def analyse(s: Setting, data: str | None, rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    target = scores(rows, "target", "val_loss")
    archs = [a for a in ARCHITECTURES if a in target]
    target_seeds = [[target[a][k] for k in sorted(target[a])] for a in archs]
    means = {a: sum(v) / len(v) for a, v in zip(archs, target_seeds)}
    out: dict[str, Any] = {
        "target": {"val_loss": {a: target[a] for a in archs}, "mean": means,
                   "ranking": sorted(archs, key=means.get),
                   "noise_floor": seed_noise_floor(per_seed(target, archs)),
                   "cost_cpu_s": cpu_seconds(rows, "target")},
        "proxies": {},
    }
    for proxy in proxies(s, data):
        values = scores(rows, proxy.name, proxy.metric)
        have = [a for a in archs if a in values]
        if len(have) < 3:
            continue
        mean = {a: sum(values[a].values()) / len(values[a]) for a in have}
        as_loss = [mean[a] if proxy.mode == "min" else -mean[a] for a in have]
        agreement = rank_agreement_interval(as_loss, [target_seeds[archs.index(a)] for a in have])
        entry = {"description": proxy.description, "metric": proxy.metric, "mode": proxy.mode,
                 "budget": proxy.budget, "seeds": proxy.seeds, "scores": {a: values[a] for a in have},
                 "mean": mean, "ranking": sorted(have, key=lambda a: as_loss[have.index(a)]),
                 "spearman": agreement["spearman"], "kendall": agreement["kendall"], "n_archs": len(have),
                 "cost_cpu_s": cpu_seconds(rows, proxy.name)}
        if proxy.seeds > 1:
            entry["proxy_seed_agreement"] = seed_noise_floor(per_seed(values, have))
        out["proxies"][proxy.name] = entry
    return out


def describe_specs(s: Setting, data: str | None) -> dict[str, Any]:
    """Per architecture: the block and the size, width and depth of the target and each proxy model."""
    def shape(spec: ArchSpec) -> dict[str, Any]:
        return {"non_embedding_params": param_count(spec), "d_model": spec.d_model, "units": len(units(spec)),
                "stripe": stripe(spec)}

    return {arch: {"block": pattern, "target": shape(target_spec(pattern, s)),
                   **{p.name: shape(p.spec(pattern, s)) for p in proxies(s, data)}}
            for arch, pattern in ARCHITECTURES.items()}


def print_table(result: dict[str, Any]) -> None:
    t = result["target"]
    floor = t["noise_floor"]
    print(f"\ntarget ranking: {', '.join(t['ranking'])}")
    print(f"target seed-to-seed noise floor: Spearman {floor['spearman']:.2f}, Kendall {floor['kendall']:.2f}; "
          f"{t['cost_cpu_s']['per_candidate']:.0f} CPU s per candidate")
    print(f"{'proxy':22s} {'Spearman [95% CI]':>24s} {'Kendall':>8s} {'CPU s/cand':>11s}")
    for name, p in result["proxies"].items():
        rho = p["spearman"]
        print(f"{name:22s} {rho['value']:+.2f} [{rho['ci'][0]:+.2f}, {rho['ci'][1]:+.2f}]{'':7s} "
              f"{p['kendall']['value']:+8.2f} {p['cost_cpu_s']['per_candidate']:11.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy budgets: a plumbing check of a few minutes")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="runs/bench_proxies", help="folder for the per-run results (resumable)")
    add_data_argument(parser)
    args = parser.parse_args()
    s = TINY if args.tiny else FULL
    out = Path(args.out) / ("tiny" if args.tiny else "full")
    out.mkdir(parents=True, exist_ok=True)
    timings = Timings(out / "timings.json")
    with timings.stage("runs"):
        rows = run_jobs(plan_jobs(s, args.data), out / "runs.json", args.workers)
    result = {"benchmark": "proxies", "setting": asdict(s), "data": args.data or "the shipped sample",
              "workers": args.workers, "torch_threads_per_run": 1,
              "wall_s_total": timings.total_s, "invocations": timings.data["runs"],
              "architectures": describe_specs(s, args.data), **analyse(s, args.data, rows),
              "runs_file": str(out / "runs.json"), "provenance": provenance("cpu")}
    print_table(result)
    if args.tiny:
        path = out / "proxies.json"
        write_json(path, result)
    else:
        path = write_result("proxies", result)
    print(f"{timings.data['runs'][-1]['wall_s']:.0f} s -> {path}")


if __name__ == "__main__":
    main()
