"""Speed of every recurrent token mixer against softmax attention at the same d_model.

For each layer (default config): training step time (forward + backward on [batch, seq, d_model]) and
decoding time (one-token forward with the carried state), measured alternately in one run: every round times
attention and each layer back to back, so a layer's speed against attention is the median over rounds of the
paired ratio. Reported as tokens/s, ms/token for decoding and ratios to attention; also each layer's analytic
params and FLOPs/token, and the load average before and after (a shared machine's load shows in the ratios).

    python benchmarks/bench_layers.py [--d-model 256 --seq 512 --batch 4 --rounds 3 --steps 3]
        [--layers attention kda ...] [--threads 1] [--clock process] [--name layers] [--before NAME] [--no-write]

A row name is a primitive at its defaults, or one of VARIANTS (a primitive with settings, e.g. LFM2's gated
short convolution). Attention is always measured (the ratios' base); `--name` names the result file.

Before/after: run once with another checkout's primitives and composer (`python -S` skips the editable
install's finder, so PYTHONPATH=BEFORE_TREE:VENV_SITE_PACKAGES decides what is imported; `--name layers_before`),
then as usual with `--before layers_before`: each row gains its speed against the earlier
run, both sides normalised by the attention timed beside them (attention's code is the same in both), so the
two processes need not see the same machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from common import RESULTS, alternate, write_result

import primitives
from primitives.base import get_primitive

LAYERS = ["attention", "mamba", "mamba2", "linear_attention", "retnet", "gla", "hgrn2", "deltanet",
          "gated_deltanet", "mlstm", "mingru", "rglru", "short_conv", "kda", "lightning_attention", "rwkv7",
          "hyena", "slstm", "short_conv/lfm2"]
VARIANTS = {"short_conv/lfm2": ("short_conv", {"gating": "bcx", "expand": 1.0, "kernel_size": 3})}
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def layer_config(name: str):
    """(primitive class, Config) of a row: a primitive at its defaults, or a named variant."""
    op, params = VARIANTS.get(name, (name, {}))
    cls = get_primitive(op)
    return cls, cls.Config(**params)


def paired_ratio(base: list[float], other: list[float]) -> float:
    """Median over rounds of base / other (the speed of `other` against `base`, round by round)."""
    return statistics.median(b / o for b, o in zip(base, other))


def compare(results: dict, before_name: str) -> None:
    """Add each row's speed against the run saved as `before_name` (ratios to attention, after / before)."""
    before = json.loads((RESULTS / f"{before_name}.json").read_text())["layers"]
    for name, row in results.items():
        if name in before:
            for what in ("train", "decode"):
                key = f"{what}_speed_vs_attention"
                row[f"{what}_speed_vs_before"] = row[key] / before[name][key]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--decode-steps", type=int, default=32)
    parser.add_argument("--layers", nargs="+", default=LAYERS, help="rows to measure (attention is always included)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or this process's CPU time (steadier on a shared machine)")
    parser.add_argument("--name", default="layers", help="result file benchmarks/results/NAME.json")
    parser.add_argument("--before", default=None, metavar="NAME",
                        help="an earlier result file benchmarks/results/NAME.json to compare each row with")
    parser.add_argument("--no-write", action="store_true", help="print only; leave the result file alone")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = ["attention", *(n for n in args.layers if n != "attention")]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.seq, args.d_model, device=device)
    token = x[:, :1]
    train, decode = {}, {}
    for name in names:
        cls, cfg = layer_config(name)
        layer = cls(args.d_model, cfg).to(device)

        def train_step(layer=layer):
            y, _ = layer(x)
            y.float().pow(2).mean().backward()

        def decode_steps(layer=layer):
            with torch.no_grad():
                state = layer.init_state(args.batch, device, torch.float32)
                for _ in range(args.decode_steps):
                    _, state = layer(token, state)

        train[name], decode[name] = train_step, decode_steps
    load_before = os.getloadavg()
    clock = CLOCKS[args.clock]
    train_times = alternate(train, args.rounds, args.steps, clock=clock)
    decode_times = alternate(decode, args.rounds, 1, warmup=1, clock=clock)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    load = {"before": load_before, "after": os.getloadavg()}  # 1, 5, 15 min: a shared machine makes rows indicative
    results = {}
    for name in names:
        cls, cfg = layer_config(name)
        cost = cls.cost(cfg, args.d_model, args.seq, 4)
        t_train = statistics.median(train_times[name])
        t_decode = statistics.median(decode_times[name]) / args.decode_steps
        results[name] = {
            "params": cost.params, "flops_per_token": cost.flops_per_token, "state_bytes_fp32": cost.state_bytes,
            "train_tokens_per_s": args.batch * args.seq / t_train,
            "decode_ms_per_token": 1000 * t_decode,
            "train_speed_vs_attention": paired_ratio(train_times["attention"], train_times[name]),
            "decode_speed_vs_attention": paired_ratio(decode_times["attention"], decode_times[name]),
        }
    if args.before:
        compare(results, args.before)
    for name, row in results.items():
        against = (f"  vs before: train {row['train_speed_vs_before']:.2f}x decode {row['decode_speed_vs_before']:.2f}x"
                   if "train_speed_vs_before" in row else "")
        print(f"{name:18s} params {row['params']:>8d}  train {row['train_tokens_per_s']:>9.0f} tok/s "
              f"({row['train_speed_vs_attention']:.2f}x attn)  decode {row['decode_ms_per_token']:.3f} ms/tok "
              f"({row['decode_speed_vs_attention']:.2f}x attn){against}")
    print(f"load average (1, 5, 15 min) before {load['before']}, after {load['after']}")
    if not args.no_write:
        path = write_result(args.name, {"config": vars(args), "device": device, "threads": torch.get_num_threads(),
                                        "primitives": os.path.dirname(primitives.__file__),
                                        "load_average": load, "layers": results})
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
