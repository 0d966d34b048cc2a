"""How big the verify benchmark's MILP queries are, by backend and outcome (issue 11): rebuilt from
the eps that ``verify_decided.py`` records for every MILP query in its ``--partial`` files.

    OMP_NUM_THREADS=1 python benchmarks/verify_query_sizes.py \
        --part docs/benchmarks/verify_decided_s9_parts/partA.jsonl --part docs/benchmarks/verify_decided_s9_parts/partB.jsonl \
        --model none=weights/double_mnist_thesis/model.pt --model l0=weights/double_mnist_thesis_l0/model.pt \
        --model pgd=weights/double_mnist_thesis_pgd/model.pt --data outputs/data/double_mnist/test.pt \
        --out docs/benchmarks/verify_query_sizes.json

Per query it rebuilds the box N_eps (same layer map as the benchmark: merged from distance 8), the
root linear bounds and the MILP encoding the oracle passes to the solver (fused ReLU + max-pool), and
counts: pixels with a non-zero interval, unstable ReLUs, MILP variables, constraints and binaries.
Reported as medians and quartiles per (backend, decided or not), pooled, per model and per search strategy: which
queries go to HiGHS because they exceed gurobipy's pip license (2,000 variables or constraints),
and how they differ from those Gurobi gets. The rebuilt bounds use no LP tightening
(``lp_budget_seconds`` 0, the benchmark's setting).

``--resolve-seconds S --resolve-queries N`` also re-solves, per model, the first N queries that
timed out on HiGHS with HiGHS alone at S seconds (no warm start, so a stricter test than the
search's) and reports the status and the dual bound beside the root linear bound: whether a
longer limit would decide them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit  # noqa: E402
from verify_decided import DECIDED  # noqa: E402
from verify_decided_limits import read_parts  # noqa: E402

FIELDS = ("open_pixels", "unstable_relus", "variables", "constraints", "binaries")


def quartiles(values) -> dict:
    q1, q2, q3 = np.percentile(np.asarray(values, dtype=float), [25, 50, 75])
    return {"q1": float(q1), "median": float(q2), "q3": float(q3)}


def main() -> None:
    from robex.data.double_mnist import DoubleMnistSplit
    from robex.models.io import load_model
    from robex.verify.backends import HighsBackend
    from robex.verify.bounds import linear_bounds, margin_bounds
    from robex.verify.layers import layer_map, neighbourhood_box
    from robex.verify.milp import encode_query
    from robex.verify.network import parse_network

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", action="append", required=True, type=Path, help="a --partial file of verify_decided.py (repeatable)")
    parser.add_argument("--model", action="append", required=True, help="NAME=PATH for each model named in the parts")
    parser.add_argument("--data", default="outputs/data/double_mnist/test.pt")
    parser.add_argument("--resolve-seconds", type=float, default=0.0, help="re-solve timed-out HiGHS queries at this limit (0: off)")
    parser.add_argument("--resolve-queries", type=int, default=2, help="how many per model")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    paths = dict(entry.split("=", 1) for entry in args.model)
    images = read_parts(args.part)
    missing = sorted({model for model, _ in images} - set(paths))
    if missing:
        raise SystemExit(f"the parts hold models {missing} without a --model NAME=PATH; add one for each")
    split = DoubleMnistSplit.load(args.data)
    pixels = split.float_images()
    models = {name: load_model(path, "cpu").requires_grad_(False) for name, path in paths.items()}
    operations = {name: parse_network(model, tuple(pixels[0].shape)) for name, model in models.items()}
    groups: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    resolved: list[dict] = []
    total = sum(len(rows) for _, rows in images.values())
    with tqdm(total=total, desc="queries", mininterval=5) as progress:
        for (name, index), (row, milp) in sorted(images.items()):
            target = int(split.digits[index, 0])
            layers = layer_map(split.masks[index, 1].unsqueeze(0), 8)[0]
            image = pixels[index].unsqueeze(0)
            for query in milp:
                lower, upper = neighbourhood_box(image, layers, torch.as_tensor(query["eps"]))
                bounds = linear_bounds(operations[name], lower, upper)
                margins = margin_bounds(operations[name], bounds, target)
                problem = encode_query(operations[name], bounds, target, margins, fuse_relu_maxpool=True)
                sizes = {"open_pixels": int(((upper - lower) > 0).sum()), "unstable_relus": int(bounds.unstable_count(operations[name])),
                         "variables": problem.num_variables, "constraints": problem.num_constraints, "binaries": problem.num_binaries}
                outcome = "decided" if query["status"] in DECIDED else "undecided"
                for key in (f"{query['backend']}:{outcome}", f"model:{name}:{query['backend']}:{outcome}", f"strategy:{query['strategy']}:{query['backend']}:{outcome}"):
                    for field in FIELDS:
                        groups[key][field].append(sizes[field])
                progress.update()
                if (args.resolve_seconds > 0 and query["backend"] == "highs" and query["status"] == "timeout"
                        and sum(r["model"] == name for r in resolved) < args.resolve_queries):
                    solution = HighsBackend(1).solve(problem, time_limit=args.resolve_seconds)
                    resolved.append({"model": name, "image": index, **sizes, "linear_bound": float(margins.objective_upper),
                                     "status": solution.status, "seconds": solution.seconds, "dual_bound": float(solution.bound)})
    report = {"command": "python benchmarks/verify_query_sizes.py " + " ".join(os.sys.argv[1:]), "images": len(images), "queries": total,
              "groups": {key: {"queries": len(values["variables"]), **{field: quartiles(values[field]) for field in FIELDS}}
                         for key, values in sorted(groups.items())},
              "resolved_with_highs": {"seconds": args.resolve_seconds, "queries": resolved}}
    emit(report, args.out)


if __name__ == "__main__":
    main()
