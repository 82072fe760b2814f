"""Speed of every recurrent token mixer against softmax attention at the same d_model.

For each layer (default config): training step time (forward + backward on [batch, seq, d_model]) and
decoding time (one-token forward with the carried state), measured alternately in one run: every round times
attention and each layer back to back, so a layer's speed against attention is the median over rounds of the
paired ratio. Reported as tokens/s, ms/token for decoding and ratios to attention; also each layer's analytic
params and FLOPs/token, and the load average before and after (a shared machine's load shows in the ratios).

    python benchmarks/bench_layers.py [--d-model 256 --seq 512 --batch 4 --rounds 3 --steps 3]
                                      [--threads 1] [--clock process] [--layers mamba,deltanet] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from common import alternate, write_result

from primitives.base import get_primitive

LAYERS = ["attention", "mamba", "mamba2", "linear_attention", "retnet", "gla", "hgrn2", "deltanet",
          "gated_deltanet", "mlstm", "mingru", "rglru", "short_conv"]
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def paired_ratio(base: list[float], other: list[float]) -> float:
    """Median over rounds of base / other (the speed of `other` against `base`, round by round)."""
    return statistics.median(b / o for b, o in zip(base, other))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--decode-steps", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or this process's CPU time (steadier on a shared machine)")
    parser.add_argument("--layers", default=None, help="comma-separated subset (attention is always timed)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave results/layers.json alone")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = LAYERS if args.layers is None else ["attention"] + [n for n in args.layers.split(",") if n != "attention"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.seq, args.d_model, device=device)
    token = x[:, :1]
    train, decode = {}, {}
    for name in names:
        cls = get_primitive(name)
        layer = cls(args.d_model, cls.Config()).to(device)

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
    load_after = os.getloadavg()
    results = {}
    for name in names:
        cost = get_primitive(name).cost(get_primitive(name).Config(), args.d_model, args.seq, 4)
        t_train = statistics.median(train_times[name])
        t_decode = statistics.median(decode_times[name]) / args.decode_steps
        results[name] = {
            "params": cost.params, "flops_per_token": cost.flops_per_token, "state_bytes_fp32": cost.state_bytes,
            "train_tokens_per_s": args.batch * args.seq / t_train,
            "decode_ms_per_token": 1000 * t_decode,
            "train_speed_vs_attention": paired_ratio(train_times["attention"], train_times[name]),
            "decode_speed_vs_attention": paired_ratio(decode_times["attention"], decode_times[name]),
        }
    for name, row in results.items():
        print(f"{name:18s} params {row['params']:>8d}  train {row['train_tokens_per_s']:>9.0f} tok/s "
              f"({row['train_speed_vs_attention']:.2f}x attn)  decode {row['decode_ms_per_token']:.3f} ms/tok "
              f"({row['decode_speed_vs_attention']:.2f}x attn)")
    print(f"load average (1, 5, 15 min) before {load_before}, after {load_after}")
    if not args.no_write:
        path = write_result("layers", {"config": vars(args), "device": device,
                                       "load_average": {"before": load_before, "after": load_after},
                                       "layers": results})
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
