"""Benchmark: the final re-verification with and without the warm start (the attack's best point
completed into a MILP solution), on a CEGIS eps* from docs/benchmarks/verify_decided.json.

    python benchmarks/verify_final_warm_start.py --model PATH --data PATH --image 4
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from robex.data.double_mnist import DoubleMnistSplit
from robex.models.io import load_model
from robex.verify.layers import layer_map
from robex.verify.oracle import LayeredOracle, OracleSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--image", type=int, default=4)
    parser.add_argument("--source", default="docs/benchmarks/verify_decided.json")
    parser.add_argument("--time-limit", type=float, default=20.0)
    parser.add_argument("--out", default="docs/benchmarks/verify_final_warm_start.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    source = json.load(open(args.source))
    row = next(x for m in source["models"].values() for x in m["per_image"] if x["image"] == args.image)
    eps = np.floor(np.array(row["cegis"]["eps"]) * 1e5) / 1e5  # never larger than the box the search proved
    model = load_model(args.model, "cpu").requires_grad_(False)
    split = DoubleMnistSplit.load(args.data)
    image, target = split.float_images()[args.image], int(split.digits[args.image, 0])
    layers = layer_map(split.masks[args.image, 1].unsqueeze(0), 8)[0]
    results = []
    for warm in (False, True):
        oracle = LayeredOracle(model, image, target, layers, int(layers.max()) + 1, OracleSettings(final_time_limit=args.time_limit, warm_start=warm))
        final = oracle.verify_exact(eps)
        results.append({"warm_start": warm, "verdict": final.verdict.value, "proved_by": final.proved_by, "status": final.milp_status,
                        "backend": final.backend, "seconds": final.seconds, "milp_variables": final.milp_variables})
        print(json.dumps(results[-1]), flush=True)
    with open(args.out, "w") as handle:
        json.dump({"command": "python benchmarks/verify_final_warm_start.py " + " ".join(sys.argv[1:]), "eps": eps.tolist(), "results": results}, handle, indent=1)


if __name__ == "__main__":
    main()
