"""Benchmark: does LP tightening (MIPVerify's per-neuron LP, layer by layer, intersected with the
earlier bounds) pay for itself on the thesis CNN? For boxes eps = c * 1 (every layer open) around
correctly classified test images: unstable ReLUs and the objective bound before/after, and seconds.

    python benchmarks/verify_tightening.py --model PATH --data PATH --images 2 --budgets 0.5 5
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from robex.data.double_mnist import DoubleMnistSplit
from robex.models.io import load_model
from robex.verify.bounds import linear_bounds, margin_bounds
from robex.verify.layers import layer_map, neighbourhood_box
from robex.verify.milp import tighten_with_lp
from robex.verify.network import parse_network
from robex.verify.runner import correctly_classified


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.01, 0.02, 0.03])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5, 5.0])
    parser.add_argument("--out", default="docs/benchmarks/verify_tightening.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model, "cpu").requires_grad_(False)
    split = DoubleMnistSplit.load(args.data)
    images = split.float_images()
    operations = parse_network(model, (1, 64, 64))
    rows = []
    for index in correctly_classified(model, images[:500], split.digits[:500])[: args.images].tolist():
        target = int(split.digits[index, 0])
        layers = layer_map(split.masks[index, 1].unsqueeze(0), 8)[0]
        for scale in args.scales:
            lower, upper = neighbourhood_box(images[index : index + 1], layers, torch.full((9,), scale))
            started = time.perf_counter()
            base = linear_bounds(operations, lower, upper)
            row = {"image": index, "eps": scale, "crown_seconds": time.perf_counter() - started, "unstable": base.unstable_count(operations),
                   "objective_upper": margin_bounds(operations, base, target).objective_upper}
            for budget in args.budgets:
                bounds = linear_bounds(operations, lower, upper)
                stats = tighten_with_lp(operations, bounds, budget)
                row[f"lp{budget}"] = {"seconds": stats["lp_seconds"], "neurons": stats["lp_tightened"], "unstable": bounds.unstable_count(operations),
                                      "objective_upper": margin_bounds(operations, bounds, target).objective_upper}
            print(json.dumps(row), flush=True)
            rows.append(row)
    with open(args.out, "w") as handle:
        json.dump({"command": "python benchmarks/verify_tightening.py " + " ".join(__import__("sys").argv[1:]), "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
