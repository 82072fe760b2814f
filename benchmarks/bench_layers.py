"""Speed of every recurrent token mixer against softmax attention at the same d_model.

For each layer (default config): training step time (forward + backward on [batch, seq, d_model]) and
decoding time (one-token forward with the carried state), measured alternately in one run; reported as
tokens/s and as a ratio to attention. Also records each layer's analytic params and FLOPs/token.

    python benchmarks/bench_layers.py [--d-model 256 --seq 512 --batch 4 --rounds 3 --steps 3]
        [--layers attention kda ...] [--threads 1] [--name layers]

A row name is a primitive at its defaults, or one of VARIANTS (a primitive with settings, e.g. LFM2's gated
short convolution). Attention is always measured (the ratios' base); `--name` names the result file.
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch
from common import alternate, write_result

from primitives.base import get_primitive

LAYERS = ["attention", "mamba", "mamba2", "linear_attention", "retnet", "gla", "hgrn2", "deltanet",
          "gated_deltanet", "mlstm", "mingru", "rglru", "short_conv", "kda", "lightning_attention", "rwkv7",
          "hyena", "slstm", "short_conv/lfm2"]
VARIANTS = {"short_conv/lfm2": ("short_conv", {"gating": "bcx", "expand": 1.0, "kernel_size": 3})}


def layer_config(name: str):
    """(primitive class, Config) of a row: a primitive at its defaults, or a named variant."""
    op, params = VARIANTS.get(name, (name, {}))
    cls = get_primitive(op)
    return cls, cls.Config(**params)


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
    parser.add_argument("--name", default="layers", help="result file benchmarks/results/NAME.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = ["attention", *(n for n in args.layers if n != "attention")]
    load_before = os.getloadavg()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.seq, args.d_model, device=device)
    token = x[:, :1]
    layers, train, decode = {}, {}, {}
    for name in names:
        cls, cfg = layer_config(name)
        layer = cls(args.d_model, cfg).to(device)
        layers[name] = layer

        def train_step(layer=layer):
            y, _ = layer(x)
            y.float().pow(2).mean().backward()

        def decode_steps(layer=layer):
            with torch.no_grad():
                state = layer.init_state(args.batch, device, torch.float32)
                for _ in range(args.decode_steps):
                    _, state = layer(token, state)

        train[name], decode[name] = train_step, decode_steps
    train_times = alternate(train, args.rounds, args.steps)
    decode_times = alternate(decode, args.rounds, 1, warmup=1)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
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
        }
    base = results["attention"]
    for row in results.values():
        row["train_speed_vs_attention"] = row["train_tokens_per_s"] / base["train_tokens_per_s"]
        row["decode_speed_vs_attention"] = base["decode_ms_per_token"] / row["decode_ms_per_token"]
    load = {"before": load_before, "after": os.getloadavg()}  # 1, 5, 15 min: a shared machine makes rows indicative
    path = write_result(args.name, {"config": vars(args), "device": device, "threads": torch.get_num_threads(),
                                    "load_average": load, "layers": results})
    for name, row in results.items():
        print(f"{name:18s} params {row['params']:>8d}  train {row['train_tokens_per_s']:>9.0f} tok/s "
              f"({row['train_speed_vs_attention']:.2f}x attn)  decode {row['decode_ms_per_token']:.2f} ms/tok "
              f"({row['decode_speed_vs_attention']:.2f}x attn)")
    print(f"load average before {load['before']}, after {load['after']}; wrote {path}")


if __name__ == "__main__":
    main()
