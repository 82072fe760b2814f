"""The whole loop on CPU, at the honest confirmation protocol of issue 21: search a hybrid space on a cheap proxy,
confirm the winners at 10x on Tiny Shakespeare against the transformer, and measure the proxy's seed noise.

1. **Search** `search_spaces/discovery.yaml` (six slots, each attention / Mamba-2 / Gated DeltaNet / GLA / short
   convolution followed by an MLP; TPE) for `trials` trials, at `proxy_d_model` (8, for the budget: the space's
   own is 16) on `proxy_tokens` tokens each.
2. **Confirm** (the space's `confirm:` block with this benchmark's sizes): the top `top_k` trials, `spread` more over
   the rest of the ranking, the consensus and the transformer, each fitted to 10x the best trial's counted
   parameters (within 1%: any two within 2%, refused otherwise), each with its own learning-rate sweep (0.5x 1x 2x,
   chosen on the validation split), trained on `tokens_per_param` (10) tokens per parameter, `seeds: auto` (2, the
   best trial and the transformer up to `max_seeds` while their difference is undecided); on the *test* split:
   the winner - transformer difference with its 95% interval, the proxy -> target Spearman / Kendall with bootstrap
   intervals beside the seed noise floor (`holdout_loss`, the last tenth as nanoGPT's split, beside).
3. **Proxy noise**: the top `top_k` trials again at the proxy budget with `proxy_seeds` seeds (seed 0 reproduces
   the search's value), so the proxy's seed-to-seed spread stands beside the gaps between the candidates it orders.
4. **Baby GPT budget** (`--baby`, outside the 30-minute budget): nanoGPT's CPU recipe (4 layers, width 128,
   context 64, 2000 steps x 12 sequences, last 10% validating: 1.886) against the confirmed winner widened to the
   same parameters and that transformer, trained by Composer with nanoGPT's optimiser settings.

    .venv/bin/python benchmarks/bench_discovery.py [--smoke] [--out runs/bench_discovery] [--data FILE]
        [--trials N] [--sizes 10x] [--tokens-per-param R] [--top-k K] [--spread N] [--baby]

Sized for about 30 minutes on 2 idle cores (16 proxy trials of 3-10K parameters; about 8 candidates of ~35K
parameters x 4 trials + the seeds auto adds, 350K tokens each: an estimate from measured throughput, not a
measurement). Everything resumes: the search and the confirmation from their run folder (<out>/full/discovery),
the other runs from their JSON files; stage wall times add up over invocations in <out>/full/timings.json; after
each stage the result so far is written to benchmarks/results/discovery.json (`complete`: false until the end).
`--smoke` checks the plumbing end to end in about a minute (its result stays in <out>/smoke/).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import NANOGPT_SPLIT, REPO, Job, Timings, add_data_argument, run_jobs, text_task, write_result  # noqa: E402
from composer.atomic import write_json  # noqa: E402
from composer.canonical_form import stripe  # noqa: E402
from composer.provenance import provenance  # noqa: E402
from composer.spec import ArchSpec  # noqa: E402
from composer.spec_parse import load_spec  # noqa: E402
from scaling.rules import param_count, widen  # noqa: E402
from scaling.stats import mean_interval, paired_difference  # noqa: E402

SPACE = REPO / "search_spaces" / "discovery.yaml"
NANOGPT_BABY_LOSS = 1.886          # nanoGPT's own CPU recipe on Tiny Shakespeare, last 10% validating
BABY_PARAMS_LIMIT = 830_000
BABY_TRANSFORMER = {"d_model": 128, "vocab_size": 256, "max_seq_len": 64, "defaults": {"attention": {"n_heads": 4}},
                    "layers": ["attention", "mlp"] * 4}
NANOGPT_RECIPE = {"lr": 1e-3, "betas": (0.9, 0.99), "weight_decay": 0.1, "warmup_steps": 100, "min_lr_ratio": 0.1,
                  "schedule": "cosine", "grad_clip": 1.0, "batch_size": 12, "eval_every": 1 << 40}


@dataclass(frozen=True)
class Setting:
    trials: int = 16
    proxy_d_model: int = 8                 # the search's width (the space's is 16; 8 keeps a 10x target in budget)
    proxy_tokens: int | None = 100_000     # each search trial (about 20-30 tokens per parameter at width 8)
    proxy_lr: float = 3e-3                 # the proxy lr the README's row was measured at (the space's is now 2.4e-2)
    sizes: tuple[str, ...] = ("10x",)
    confirm_seeds: int | str = "auto"
    max_seeds: int = 6
    tokens_per_param: float = 10           # the target: >= 10 (issue 21)
    lrs: tuple[str, ...] = ("0.5x", "1x", "2x")
    top_k: int = 2
    spread: int = 3                        # more trials over the rest of the ranking, for the rank agreement
    baby: bool = False                     # the baby-GPT stage (nanoGPT's budget): --baby; outside the 30-minute budget
    baby_steps: int = 2000
    baby_seeds: int = 2
    proxy_seeds: int = 3
    max_concurrent: int = 2                # search trials at once


FULL = Setting()
SMOKE = Setting(trials=2, sizes=("2x",), confirm_seeds="auto", max_seeds=3, tokens_per_param=0.5, top_k=1, spread=0,
                proxy_tokens=2048, baby_steps=5, baby_seeds=2, proxy_seeds=2, max_concurrent=2)


def space_data(s: Setting, data: str | None) -> dict[str, Any]:
    """discovery.yaml with this run's data file, trial count and confirmation settings."""
    space = yaml.safe_load(SPACE.read_text())
    space["task"] = {"name": "text", "params": {k: v for k, v in text_task(data, seq_len=64).items() if k != "name"}}
    space["trials"] = s.trials
    space["base"] = {**space["base"], "d_model": s.proxy_d_model}
    space["resources"] = {**space["resources"], "max_concurrent": s.max_concurrent}
    space["train"] = {**space["train"], "lr": s.proxy_lr}
    if s.proxy_tokens is not None:
        space["train"] = {**space["train"], "tokens": s.proxy_tokens}
    space["confirm"] = {**space["confirm"], "sizes": list(s.sizes), "seeds": s.confirm_seeds,
                        "tokens_per_param": s.tokens_per_param, "lrs": list(s.lrs), "top_k": s.top_k,
                        "spread": s.spread, "tolerance": 0.02}
    space["confirm"].pop("tokens", None)
    if s.confirm_seeds == "auto":
        space["confirm"]["max_seeds"] = s.max_seeds
    return space


def run_search(space: dict[str, Any], run_dir: Path, trials: int) -> tuple[Any, dict[str, Any]]:
    """The search and its confirmation, resumed when the folder exists: `search` alone (not `search_then_confirm`, which
    would run the `confirm:` block the search was started with), then the confirmation with this
    invocation's block, so a rerun with more sizes adds them and one with more trials adds those first."""
    from composer.confirm import confirm, parse_confirm
    from composer.search import search

    resume = (run_dir / "space.yaml").is_file()
    result = search(space, run_dir=run_dir, resume=resume, trials=trials)
    return result, confirm(run_dir, parse_confirm(space["confirm"]), threads=1, log=print)


def winner_of(confirm: dict[str, Any]) -> dict[str, Any]:
    """The searched candidate (not a baseline) with the lowest mean target loss at the largest size."""
    largest = confirm["sizes"][-1]["label"]
    results = confirm["results"][largest]
    searched = [c for c in confirm["candidates"] if "baseline" not in c["roles"] and c["name"] in results]
    return min(searched, key=lambda c: results[c["name"]]["mean"])


def widest_within(spec: ArchSpec, limit: int) -> ArchSpec:
    """The spec (its searched slots, depth unchanged) at the widest multiple of 8 with at most `limit` parameters."""
    best = None
    for width in range(8, 4096, 8):
        wide = widen(spec, width)
        if param_count(wide, "total") > limit:
            break
        best = wide
    if best is None:
        raise ValueError(f"no width of {stripe(spec)} fits {limit:,} parameters")
    return best


def baby_jobs(s: Setting, winner_spec: dict[str, Any], data: str | None) -> tuple[list[Job], dict[str, Any]]:
    """The winner's searched slots widened to fit the baby budget (<= 0.83M parameters, like the 4-layer width-128
    transformer: one stack, no stacking rule, which would make it 4x deeper and narrower) and that transformer."""
    transformer = load_spec(BABY_TRANSFORMER)
    limit = min(param_count(transformer, "total"), BABY_PARAMS_LIMIT)      # never more than the transformer
    winner = widest_within(load_spec({**winner_spec, "max_seq_len": 64}), limit)
    task = text_task(data, seq_len=64, max_val_windows=100_000, **NANOGPT_SPLIT)   # nanoGPT's split, all of it
    budget = {"steps": s.baby_steps}
    specs = {"winner": winner, "transformer": transformer}
    jobs = [Job("baby", name, seed, spec.to_dict(), task, budget, NANOGPT_RECIPE)
            for seed in range(s.baby_seeds) for name, spec in specs.items()]
    shapes = {name: {"params": param_count(spec, "total"), "non_embedding_params": param_count(spec),
                     "d_model": spec.d_model, "stripe": stripe(spec), "spec": spec.to_dict()}
              for name, spec in specs.items()}
    return jobs, shapes


def proxy_noise_jobs(s: Setting, run_dir: Path, result: Any) -> list[Job]:
    """The top `top_k` searched trials again at the proxy budget (the search's own task and training settings),
    seeds 0 .. proxy_seeds-1."""
    space = yaml.safe_load((run_dir / "space.yaml").read_text())
    rows = sorted((r for r in result.rows if r.get("status") == "completed" and not r.get("consensus")
                   and r.get("val_loss") is not None), key=lambda r: r["val_loss"])[:s.top_k]
    settings = {k: v for k, v in space["train"].items() if k not in ("steps", "tokens", "seconds")}
    budget = {k: space["train"][k] for k in ("steps", "tokens", "seconds") if k in space["train"]}
    task = {"name": space["task"]["name"], **space["task"]["params"]}
    return [Job("proxy", f"trial_{r['trial']}", seed, load_spec(str(run_dir / "trials" / str(r["trial"]) / "spec.yaml"))
                .to_dict(), task, budget, settings) for r in rows for seed in range(s.proxy_seeds)]


def proxy_noise_summary(rows: dict[str, dict[str, Any]], result: Any) -> dict[str, Any]:
    """Per trial: the proxy over seeds (mean, std) and the search's own value; the mean std beside the spread of
    the searched candidates' proxy scores."""
    searched = {f"trial_{r['trial']}": r["val_loss"] for r in result.rows if r.get("status") == "completed"
                and not r.get("consensus") and r.get("val_loss") is not None}
    by_arch: dict[str, dict[int, float]] = {}
    for row in rows.values():
        by_arch.setdefault(row["arch"], {})[row["seed"]] = row["metrics"]["val_loss"]
    trials = {arch: {"values": [v[k] for k in sorted(v)], "std": statistics.stdev(v.values()) if len(v) > 1 else None,
                     "search_value": searched.get(arch)} for arch, v in by_arch.items()}
    stds = [t["std"] for t in trials.values() if t["std"] is not None]
    ranked = sorted(searched.values())
    return {"trials": trials, "mean_seed_std": statistics.fmean(stds) if stds else None,
            "top5_span": ranked[min(4, len(ranked) - 1)] - ranked[0] if ranked else None,
            "top8_span": ranked[min(7, len(ranked) - 1)] - ranked[0] if ranked else None}


def baby_summary(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    losses = {name: {r["seed"]: r["metrics"]["val_loss"] for r in rows.values() if r["arch"] == name}
              for name in ("winner", "transformer")}
    out: dict[str, Any] = {name: mean_interval([v[k] for k in sorted(v)]).as_dict() for name, v in losses.items()}
    diff = paired_difference(losses["transformer"], losses["winner"])
    out["transformer_minus_winner"] = diff.as_dict()
    out["nanogpt_minus_winner"] = NANOGPT_BABY_LOSS - out["winner"]["mean"]
    out["cpu_s_per_run"] = {name: sum(r["metrics"]["cpu_s"] for r in rows.values() if r["arch"] == name)
                            / max(1, len(losses[name])) for name in losses}
    return out


def search_summary(result: Any) -> dict[str, Any]:
    rows = [r for r in result.rows if r.get("status") == "completed" and r.get("val_loss") is not None]
    rows.sort(key=lambda r: r["val_loss"])
    keep = ("trial", "stripe", "val_loss", "params", "train_time_s")
    return {"completed_trials": len(rows), "statuses": result.summary.get("counts"),
            "top": [{k: r.get(k) for k in keep} for r in rows[:8]],
            "best": stripe(result.best) if result.best is not None else None,
            "consensus": stripe(result.consensus) if result.consensus is not None else None}


def confirm_summary(confirm: dict[str, Any]) -> dict[str, Any]:
    keep = ("sizes", "tokens", "tokens_per_param", "lr_grid", "splits", "candidates", "sizing", "results", "transfer",
            "comparisons", "refused", "sweeps", "seeds_auto", "undertrained", "verdict", "verdicts", "missing",
            "notes", "statistics")
    out = {k: confirm.get(k) for k in keep}
    out["candidates"] = [{k: c[k] for k in ("name", "roles", "aliases", "stripe", "proxy", "trial")}
                         for c in confirm["candidates"]]
    out["sizing"] = [{k: s[k] for k in ("candidate", "size", "params", "d_model", "units", "description")}
                     for s in confirm["sizing"]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="toy budgets: the plumbing end to end in about a minute")
    parser.add_argument("--out", default="runs/bench_discovery", help="folder for the run and per-run results")
    parser.add_argument("--trials", type=int)
    parser.add_argument("--sizes", nargs="+")
    parser.add_argument("--tokens-per-param", type=float)
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--spread", type=int)
    parser.add_argument("--baby", action="store_true", help="also the baby-GPT stage (nanoGPT's CPU budget)")
    parser.add_argument("--baby-seeds", type=int)
    parser.add_argument("--workers", type=int, default=2, help="processes for the proxy-noise and baby-GPT runs")
    add_data_argument(parser)
    args = parser.parse_args()
    s = SMOKE if args.smoke else FULL
    given = {"trials": args.trials, "sizes": tuple(args.sizes) if args.sizes else None,
             "tokens_per_param": args.tokens_per_param, "top_k": args.top_k, "spread": args.spread,
             "baby_seeds": args.baby_seeds, "baby": args.baby or None}
    s = replace(s, **{k: v for k, v in given.items() if v is not None})
    out = Path(args.out).resolve() / ("smoke" if args.smoke else "full")
    out.mkdir(parents=True, exist_ok=True)
    timings = Timings(out / "timings.json")
    data: dict[str, Any] = {"benchmark": "discovery", "protocol": "issue 21: equal sizes (tolerance 0.02), each "
                            "candidate's and the transformer's lr swept on validation, verdict on the test split, "
                            f"{s.tokens_per_param:g} tokens/param at the target, seeds auto", "complete": False,
                            "setting": asdict(s), "data": args.data or "the shipped sample",
                            "space": space_data(s, args.data), "run_dir": str(out / "discovery"),
                            "provenance": provenance("cpu")}

    def save() -> Path:
        data.update(wall_s=timings.data["stages"], wall_s_total=timings.total_s, invocations=timings.data["runs"])
        if args.smoke:
            write_json(out / "discovery.json", data)
            return out / "discovery.json"
        return write_result("discovery", data)

    with timings.stage("search_and_confirm"):
        result, confirm = run_search(space_data(s, args.data), out / "discovery", s.trials)
    winner = winner_of(confirm)
    data.update(search=search_summary(result), confirm=confirm_summary(confirm),
                winner={k: winner[k] for k in ("name", "roles", "stripe")})
    save()

    with timings.stage("proxy_noise"):
        noise = proxy_noise_summary(run_jobs(proxy_noise_jobs(s, out / "discovery", result),
                                             out / "proxy_noise.json", args.workers), result)
    data["proxy_noise"] = noise
    save()

    if s.baby:
        jobs, shapes = baby_jobs(s, winner["spec"], args.data)
        with timings.stage("baby_gpt"):
            rows = run_jobs(jobs, out / "baby.json", args.workers)
        data["baby_gpt"] = {"recipe": {**NANOGPT_RECIPE, "steps": s.baby_steps, "seq_len": 64,
                                       "seeds": s.baby_seeds},
                            "nanogpt_val_loss": NANOGPT_BABY_LOSS, "models": shapes, **baby_summary(rows)}
    data["complete"] = True
    path = save()
    print(f"\nsearch: best {data['search']['best']}; confirmed winner {winner['name']} ({winner['stripe']})")
    for line in confirm.get("verdicts", []):
        print(f"  {line}")
    print(f"proxy seed-to-seed std {noise['mean_seed_std']:.4f} (top {s.top_k}, {s.proxy_seeds} seeds) vs the span "
          f"of the 5 best proxy scores {noise['top5_span']:.4f} and of the 8 best {noise['top8_span']:.4f}")
    if "baby_gpt" in data:
        w, t = data["baby_gpt"]["winner"], data["baby_gpt"]["transformer"]
        print(f"baby GPT budget: winner {w['mean']:.3f} [{w['ci'][0]:.3f}, {w['ci'][1]:.3f}], transformer "
              f"{t['mean']:.3f} [{t['ci'][0]:.3f}, {t['ci'][1]:.3f}], nanoGPT {NANOGPT_BABY_LOSS}")
    print(f"{timings.total_s:.0f} s wall in all -> {path}")


if __name__ == "__main__":
    main()
