"""Speed of every recurrent token mixer against softmax attention at the same d_model.

For each layer (default config): training step time (forward + backward on [batch, seq, d_model]) and
decoding time (one-token forward with the carried state), measured alternately in one run; reported as
tokens/s and as a ratio to attention. Also records each layer's analytic params and FLOPs/token.

    python benchmarks/bench_layers.py [--d-model 256 --seq 512 --batch 4 --rounds 3 --steps 3]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from common import alternate, write_result

from primitives.base import get_primitive

LAYERS = ["attention", "mamba", "mamba2", "linear_attention", "retnet", "gla", "hgrn2", "deltanet",
          "gated_deltanet", "mlstm", "mingru", "rglru", "short_conv"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--decode-steps", type=int, default=32)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.seq, args.d_model, device=device)
    token = x[:, :1]
    layers, train, decode = {}, {}, {}
    for name in LAYERS:
        cls = get_primitive(name)
        layer = cls(args.d_model, cls.Config()).to(device)
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
    for name in LAYERS:
        cost = get_primitive(name).cost(get_primitive(name).Config(), args.d_model, args.seq, 4)
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
    path = write_result("layers", {"config": vars(args), "device": device, "layers": results})
    for name, row in results.items():
        print(f"{name:18s} params {row['params']:>8d}  train {row['train_tokens_per_s']:>9.0f} tok/s "
              f"({row['train_speed_vs_attention']:.2f}x attn)  decode {row['decode_ms_per_token']:.2f} ms/tok "
              f"({row['decode_speed_vs_attention']:.2f}x attn)")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
