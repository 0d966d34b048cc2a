"""Benchmark: the fused ReLU + max-pool MILP encoding against the separate one, on the same queries (issue 11).

    OMP_NUM_THREADS=1 python benchmarks/verify_fused_encoding.py --model none=weights/double_mnist_thesis/model.pt \
        --model l0=weights/double_mnist_thesis_l0/model.pt --model pgd=weights/double_mnist_thesis_pgd/model.pt

maxpool(relu(z)) = max(0, max_i z_i), so the MILP can encode a ReLU layer that feeds a max-pool as
one max over the pre-activations and a constant 0 (``robex.verify.milp._encode_max``) instead of a
big-M ReLU per unstable neuron followed by the pool's max. Both encodings are exact; this measures
what the fused one buys. For each model, the first ``--images`` correctly classified test images
(target = left digit) run one short CEGIS search (sensitivity weights) to collect the queries that
reach the MILP -- the search's own, near-boundary queries. Up to ``--queries`` of them per image are
then solved by each encoding with HiGHS and, where that encoding fits gurobipy's restricted
license, with Gurobi: same time limit, stop on sign, no warm start. Writes JSON to --out.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit  # noqa: E402

DECIDED = ("optimal", "positive", "negative")


def median(values):
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(statistics.median(values)) if values else None


def collect_queries(model, image, target, mask, args):
    """The eps vectors of every MILP query of one short CEGIS search (fused encoding, auto backend,
    no escalation attack: the queries that the cheap attack and the bounds leave to the MILP)."""
    from robex.verify.oracle import OracleSettings
    from robex.verify.runner import verify_image
    from robex.verify.search import SearchSettings

    oracle = OracleSettings(milp_time_limit=args.time_limit, final_time_limit=args.time_limit, escalation_steps=0)
    search = SearchSettings(max_queries=args.search_queries, max_seconds=args.search_seconds, tolerance=0.005, step_size=0.05,
                            max_shrinks=3, polish=False)
    outcome = verify_image(model, image, target, mask, "cegis", "sensitivity", oracle, search, merge_from=8, reverify=False)
    return [record.eps for record in outcome["records"] if record.milp_status is not None]


def add_query_arguments(parser, queries: int, time_limit: float, time_limit_help: str | None = None) -> None:
    """The command line shared with ``verify_escalation.py``: models, data, images and the query sample."""
    parser.add_argument("--model", action="append", required=True, help="NAME=PATH of a DOUBLE-MNIST model.pt (repeatable)")
    parser.add_argument("--data", default="outputs/data/double_mnist/test.pt")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--queries", type=int, default=queries, help="MILP queries per image (a seeded sample)")
    parser.add_argument("--search-queries", type=int, default=20)
    parser.add_argument("--search-seconds", type=float, default=120.0)
    parser.add_argument("--time-limit", type=float, default=time_limit, help=time_limit_help)


def open_queries(args):
    """Yield every sampled query as a dict (model name and module, image index and tensor, target,
    operations, layers, eps, and the query's linear bounds and margin bounds): for each model, the
    first ``--images`` correctly classified test images, ``--queries`` of each one's MILP queries."""
    from robex.data.double_mnist import DoubleMnistSplit
    from robex.models.io import load_model
    from robex.verify.bounds import linear_bounds, margin_bounds
    from robex.verify.layers import layer_map, neighbourhood_box
    from robex.verify.network import parse_network
    from robex.verify.runner import correctly_classified

    split = DoubleMnistSplit.load(args.data)
    images = split.float_images()
    rng = random.Random(0)
    for spec in args.model:
        name, path = spec.split("=", 1)
        model = load_model(path, "cpu").requires_grad_(False)
        for index in correctly_classified(model, images[:2000], split.digits[:2000])[: args.images].tolist():
            target, mask = int(split.digits[index, 0]), split.masks[index, 1]
            queries = collect_queries(model, images[index], target, mask, args)
            operations = parse_network(model, tuple(images[index].shape))
            layers = layer_map(mask.unsqueeze(0), 8)[0]
            for eps in rng.sample(queries, min(args.queries, len(queries))):
                lower, upper = neighbourhood_box(images[index].unsqueeze(0).double(), layers, torch.as_tensor(eps, dtype=torch.float64))
                bounds = linear_bounds(operations, lower, upper)
                yield {"name": name, "model": model, "index": index, "image": images[index], "target": target, "operations": operations,
                       "layers": layers, "eps": eps, "bounds": bounds, "margins": margin_bounds(operations, bounds, target)}


def solve_both(operations, bounds, target, margins, time_limit):
    from robex.verify.backends import GurobiBackend, HighsBackend, fits_gurobi_license, gurobi_available
    from robex.verify.milp import encode_query

    row = {}
    for name, fuse in (("separate", False), ("fused", True)):
        problem = encode_query(operations, bounds, target, margins, fuse_relu_maxpool=fuse)
        fits = bool(fits_gurobi_license(problem))
        entry = {"variables": problem.num_variables, "constraints": problem.num_constraints, "binaries": problem.num_binaries, "fits_gurobi": fits}
        solution = HighsBackend().solve(problem, time_limit=time_limit)
        entry["highs"] = {"status": solution.status, "seconds": solution.seconds}
        if fits and gurobi_available():
            solution = GurobiBackend().solve(problem, time_limit=time_limit)
            entry["gurobi"] = {"status": solution.status, "seconds": solution.seconds}
        row[name] = entry
    return row


def summarise(rows):
    out = {"queries": len(rows)}
    for name in ("separate", "fused"):
        entries = [r[name] for r in rows]
        out[name] = {
            "highs_decided_share": float(np.mean([e["highs"]["status"] in DECIDED for e in entries])) if entries else None,
            "fits_gurobi_share": float(np.mean([e["fits_gurobi"] for e in entries])) if entries else None,
            "gurobi_decided_share_of_all": float(np.mean([e.get("gurobi", {}).get("status") in DECIDED for e in entries])) if entries else None,
            "median_binaries": median([e["binaries"] for e in entries]),
            "median_variables": median([e["variables"] for e in entries]),
            "median_constraints": median([e["constraints"] for e in entries]),
        }
    # the license-aware backend choice of verify.oracle.backend=auto: Gurobi if the model fits, else HiGHS
    for name in ("separate", "fused"):
        auto = [r[name].get("gurobi", r[name]["highs"])["status"] in DECIDED for r in rows]
        out[name]["auto_decided_share"] = float(np.mean(auto)) if auto else None
    for backend in ("highs", "gurobi"):
        both = [(r["separate"][backend]["seconds"], r["fused"][backend]["seconds"]) for r in rows
                if backend in r["separate"] and backend in r["fused"]
                and r["separate"][backend]["status"] in DECIDED and r["fused"][backend]["status"] in DECIDED]
        out[f"{backend}_both_decided"] = len(both)
        out[f"{backend}_separate_over_fused_seconds_median"] = median([s / f for s, f in both if f > 0])
    out["binaries_fused_over_separate_median"] = median([r["fused"]["binaries"] / r["separate"]["binaries"] for r in rows if r["separate"]["binaries"]])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_query_arguments(parser, queries=6, time_limit=5.0)
    parser.add_argument("--out", default="docs/benchmarks/verify_fused_encoding.json")
    args = parser.parse_args()

    torch.set_num_threads(1)
    started = time.perf_counter()
    rows = []
    for q in open_queries(args):
        row = {"model": q["name"], "image": q["index"], "eps": [round(float(e), 5) for e in q["eps"]],
               **solve_both(q["operations"], q["bounds"], q["target"], q["margins"], args.time_limit)}
        rows.append(row)
        print({"model": q["name"], "image": q["index"], "separate": row["separate"]["highs"]["status"], "fused": row["fused"]["highs"]["status"]}, flush=True)
    emit(query_report("verify_fused_encoding.py", args, rows, summarise, started, warm_start=False, stop_on_sign=True), args.out)


def query_report(script: str, args, rows: list[dict], summarise, started: float, **settings) -> dict:
    """The JSON of a benchmark over ``open_queries``: command, settings, the summary of all rows and
    of each model's rows, the rows themselves and the run's seconds (shared with
    ``verify_maxpool_relaxation.py``)."""
    names = [spec.split("=", 1)[0] for spec in args.model]
    return {
        "command": f"python benchmarks/{script} " + " ".join(sys.argv[1:]),
        "settings": {"time_limit": args.time_limit, "images": args.images, "queries_per_image": args.queries, "threads": 1, **settings},
        "threads_env": os.environ.get("OMP_NUM_THREADS"),
        **summarise(rows),
        "by_model": {name: summarise([r for r in rows if r["model"] == name]) for name in names},
        "rows": rows,
        "seconds": time.perf_counter() - started,
    }


if __name__ == "__main__":
    main()
