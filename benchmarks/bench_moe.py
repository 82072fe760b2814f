"""Training throughput of the `moe` layer (8 experts, top-2) vs a dense SwiGLU MLP of equal active parameters.

Shape: d_model 256, B*T = 16*256 tokens, fp32. The dense MLP's hidden size is top_k * h, so its parameters
equal the active expert parameters of the MoE (the router's d*E extra is 0.4%). One step is forward +
backward of a mean-square loss (plus the MoE's auxiliary losses), measured alternately in one run, for both
grouped-matmul implementations (`torch._grouped_mm` and the per-expert loop) where available.
Target: MoE >= 0.5x the dense tokens/s on CPU.

    python benchmarks/bench_moe.py [--rounds 7 --steps 3]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from common import alternate, write_result

from primitives.mlp import MLP, MLPConfig
from primitives.moe import MoE, MoEConfig, expert_hidden
from primitives.ops.grouped_mm import grouped_mm_usable

D, BATCH, SEQ = 256, 16, 256


def train_step(layer, x):
    def step():
        y, _ = layer(x)
        loss = y.square().mean() + sum(layer.aux_losses().values(), torch.zeros(()))
        layer.zero_grad(set_to_none=True)
        loss.backward()
    return step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(BATCH, SEQ, D)
    cfg = MoEConfig()
    h = expert_hidden(cfg, D)
    dense = MLP(D, MLPConfig(kind="swiglu", d_ff=cfg.top_k * h))
    impls = ["loop"]
    if grouped_mm_usable(x.view(-1, D), torch.empty(1, D, 2 * h)):
        impls.insert(0, "grouped")
    layers: dict[str, torch.nn.Module] = {"dense": dense}
    for impl in impls:
        moe = MoE(D, cfg)
        moe.impl = impl
        layers[f"moe_{impl}"] = moe
    times = alternate({name: train_step(layer, x) for name, layer in layers.items()},
                      rounds=args.rounds, steps=args.steps)
    tokens = BATCH * SEQ
    med = {k: statistics.median(v) for k, v in times.items()}
    moe_cost = MoE.cost(cfg, D, SEQ)
    result = {
        "shape": {"d_model": D, "batch": BATCH, "seq": SEQ, "n_experts": cfg.n_experts, "top_k": cfg.top_k,
                  "expert_hidden": h, "dense_hidden": cfg.top_k * h},
        "params": {"moe": moe_cost.params, "moe_active": moe_cost.active_params,
                   "dense": sum(p.numel() for p in dense.parameters())},
        "tokens_per_s": {k: tokens / v for k, v in med.items()},
        "seconds_per_step": times,
        "ratio_over_dense": {k: med["dense"] / v for k, v in med.items() if k != "dense"},
        "target": "moe >= 0.5x dense",
    }
    if "moe_grouped" in med:
        result["grouped_over_loop_speed"] = med["moe_loop"] / med["moe_grouped"]
    path = write_result("moe", result)
    summary = ", ".join(f"{k} {v:.0f} tok/s" for k, v in result["tokens_per_s"].items())
    ratios = ", ".join(f"{k} {v:.2f}x" for k, v in result["ratio_over_dense"].items())
    print(f"{summary}; over dense: {ratios} -> {path}")


if __name__ == "__main__":
    main()
