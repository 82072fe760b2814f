"""The whole loop on CPU: search a hybrid space on a cheap proxy, confirm the winners at two larger sizes on Tiny
Shakespeare against the transformer, and train the winner at nanoGPT's CPU "baby GPT" budget.

1. **Search** `search_spaces/discovery.yaml` (six slots, each attention / Mamba-2 / Gated DeltaNet / GLA / short
   convolution followed by an MLP; TPE, `trials` trials on the text proxy benchmarks/bench_proxies.py chose).
2. **Confirm** (the space's `confirm:` block, run by the search as a user's `composer search` runs it): the top
   trials, `spread` more over the rest of the ranking, the consensus and the transformer fitted to two sizes >= 10x
   the best trial, 3 seeds each, equal tokens; proxy -> target Spearman / Kendall with bootstrap intervals beside
   the seed noise floor, and paired differences with 95% intervals (composer/confirm, scaling/stats.py).
3. **Baby GPT budget**: nanoGPT's CPU recipe on this corpus (4 layers, width 128, context 64, 2000 steps x 12
   sequences, last 10% validating) reaches validation loss 1.886. The confirmed winner (the searched candidate
   with the lowest target loss at the largest size), its six slots widened to the widest multiple of 8 within the
   transformer's 0.82M parameters, and that same-shape transformer are trained by
   Composer with nanoGPT's optimiser settings (AdamW lr 1e-3, betas 0.9/0.99, weight decay 0.1, 100 warmup steps,
   cosine to 1e-4), `baby_seeds` seeds each, and evaluated on the whole validation split.

    .venv/bin/python benchmarks/bench_discovery.py [--tiny] [--out runs/bench_discovery] [--data FILE]
        [--trials N] [--sizes 10x 30x] [--confirm-tokens N] [--top-k K] [--spread N] [--baby-seeds N]

4. **Proxy noise**: the search trains each candidate once (seed 0); the top `top_k` trials are trained again at
   the proxy budget with `proxy_seeds` seeds (seed 0 reproduces the search's value), so the proxy's seed-to-seed
   spread can be set beside the gaps between the candidates it has to order.

Everything resumes: the search and the confirmation from their run folder (<out>/discovery), the baby-GPT runs
from <out>/baby.json; stage wall times add up over invocations in <out>/timings.json. `--tiny` checks the
plumbing with toy budgets (minutes; its result stays in <out>/tiny/). Results: benchmarks/results/discovery.json.
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

from benchmarks.common import REPO, Job, Timings, add_data_argument, run_jobs, text_task, write_result  # noqa: E402
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
    trials: int = 32
    sizes: tuple[str, ...] = ("10x", "30x")
    confirm_seeds: int = 3
    confirm_tokens: int = 128_000          # as the proxies benchmark's target
    top_k: int = 3
    spread: int = 4                        # more trials over the rest of the ranking, for the rank agreement
    proxy_tokens: int | None = None        # None: the space's own
    baby_steps: int = 2000
    baby_seeds: int = 2
    proxy_seeds: int = 3
    max_concurrent: int = 2                # search trials at once


FULL = Setting()
TINY = Setting(trials=3, sizes=("3x", "6x"), confirm_seeds=2, confirm_tokens=4096, top_k=2, spread=1, proxy_tokens=2048,
               baby_steps=5, baby_seeds=2, proxy_seeds=2,
               max_concurrent=1)


def space_data(s: Setting, data: str | None) -> dict[str, Any]:
    """discovery.yaml with this run's data file, trial count and confirmation settings."""
    space = yaml.safe_load(SPACE.read_text())
    space["task"] = {"name": "text", "params": {k: v for k, v in text_task(data, seq_len=64).items() if k != "name"}}
    space["trials"] = s.trials
    space["resources"] = {**space["resources"], "max_concurrent": s.max_concurrent}
    if s.proxy_tokens is not None:
        space["train"] = {**space["train"], "tokens": s.proxy_tokens}
    space["confirm"] = {**space["confirm"], "sizes": list(s.sizes), "seeds": s.confirm_seeds,
                        "tokens": s.confirm_tokens, "top_k": s.top_k, "spread": s.spread}
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
    task = text_task(data, seq_len=64, max_val_windows=100_000)      # the whole validation split
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
    keep = ("sizes", "tokens", "candidates", "sizing", "results", "transfer", "comparisons", "verdict", "verdicts",
            "missing", "notes", "statistics")
    out = {k: confirm.get(k) for k in keep}
    out["candidates"] = [{k: c[k] for k in ("name", "roles", "aliases", "stripe", "proxy", "trial")}
                         for c in confirm["candidates"]]
    out["sizing"] = [{k: s[k] for k in ("candidate", "size", "params", "d_model", "units", "description")}
                     for s in confirm["sizing"]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy budgets: a plumbing check of a few minutes")
    parser.add_argument("--out", default="runs/bench_discovery", help="folder for the run and per-run results")
    parser.add_argument("--trials", type=int)
    parser.add_argument("--sizes", nargs="+")
    parser.add_argument("--confirm-tokens", type=int)
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--spread", type=int)
    parser.add_argument("--baby-seeds", type=int)
    parser.add_argument("--workers", type=int, default=2, help="processes for the baby-GPT runs")
    add_data_argument(parser)
    args = parser.parse_args()
    s = TINY if args.tiny else FULL
    given = {"trials": args.trials, "sizes": tuple(args.sizes) if args.sizes else None,
             "confirm_tokens": args.confirm_tokens, "top_k": args.top_k, "spread": args.spread,
             "baby_seeds": args.baby_seeds}
    s = replace(s, **{k: v for k, v in given.items() if v is not None})
    out = Path(args.out).resolve() / ("tiny" if args.tiny else "full")
    out.mkdir(parents=True, exist_ok=True)
    timings = Timings(out / "timings.json")

    with timings.stage("search_and_confirm"):
        result, confirm = run_search(space_data(s, args.data), out / "discovery", s.trials)
    winner = winner_of(confirm)

    with timings.stage("proxy_noise"):
        noise = proxy_noise_summary(run_jobs(proxy_noise_jobs(s, out / "discovery", result),
                                             out / "proxy_noise.json", args.workers), result)

    jobs, shapes = baby_jobs(s, winner["spec"], args.data)
    with timings.stage("baby_gpt"):
        rows = run_jobs(jobs, out / "baby.json", args.workers)

    baby = {"recipe": {**NANOGPT_RECIPE, "steps": s.baby_steps, "seq_len": 64, "seeds": s.baby_seeds},
            "nanogpt_val_loss": NANOGPT_BABY_LOSS, "models": shapes, **baby_summary(rows)}
    data = {"benchmark": "discovery", "setting": asdict(s), "data": args.data or "the shipped sample",
            "space": space_data(s, args.data), "run_dir": str(out / "discovery"),
            "wall_s": timings.data["stages"], "wall_s_total": timings.total_s,
            "invocations": timings.data["runs"], "search": search_summary(result),
            "confirm": confirm_summary(confirm), "proxy_noise": noise,
            "winner": {k: winner[k] for k in ("name", "roles", "stripe")},
            "baby_gpt": baby, "provenance": provenance("cpu")}
    print(f"\nsearch: best {data['search']['best']}; confirmed winner {winner['name']} ({winner['stripe']})")
    for line in confirm.get("verdicts", []):
        print(f"  {line}")
    print(f"proxy seed-to-seed std {noise['mean_seed_std']:.4f} (top {s.top_k}, {s.proxy_seeds} seeds) vs the span "
          f"of the 5 best proxy scores {noise['top5_span']:.4f} and of the 8 best {noise['top8_span']:.4f}")
    w, t = baby["winner"], baby["transformer"]
    print(f"baby GPT budget: winner {w['mean']:.3f} [{w['ci'][0]:.3f}, {w['ci'][1]:.3f}], transformer "
          f"{t['mean']:.3f} [{t['ci'][0]:.3f}, {t['ci'][1]:.3f}], nanoGPT {NANOGPT_BABY_LOSS}")
    if args.tiny:
        write_json(out / "discovery.json", data)
        print(f"-> {out / 'discovery.json'}")
    else:
        print(f"-> {write_result('discovery', data)}")


if __name__ == "__main__":
    main()
