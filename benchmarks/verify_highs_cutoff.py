"""Benchmark: HiGHS with and without the objective cutoff, on a fixed set of MILP queries (issue 11).

    OMP_NUM_THREADS=1 python benchmarks/verify_highs_cutoff.py --model none=weights/double_mnist_thesis/model.pt \
        --model l0=weights/double_mnist_thesis_l0/model.pt --model pgd=weights/double_mnist_thesis_pgd/model.pt \
        --data outputs/reference/data/double_mnist/test.pt --time-limit 5 --time-limit 20

The verifier needs only the sign of max_x (second-max margin). Without a cutoff HiGHS searches for
the maximum itself and prunes a node only below its incumbent, which starts at the warm start's
(negative) margin; with ``objective_bound`` (``robex.verify.backends.HighsBackend(cutoff=True)``, the
default) every node whose bound is below -1e-6 is pruned at once. The queries are read from a
committed benchmark JSON (``--queries-from``, default the 30 queries of
``docs/benchmarks/verify_maxpool_relaxation.json``: MILP queries of CEGIS searches, i.e. boxes near
the robustness boundary), so old and new answer exactly the same boxes. Each query is answered as
the oracle does it: linear bounds first (a query they prove is skipped), then the MILP warm-started
with the completion of the best point of the oracle's own PGD attack, once per time limit by HiGHS
without and with the cutoff and, where the model fits gurobipy's pip license, by Gurobi (the
reference verdict). A robust verdict that meets a counterexample from another solver would be a
soundness failure and is counted (``contradictions``, must be 0).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit  # noqa: E402
from verify_fused_encoding import median  # noqa: E402


def verdict(solution) -> str | None:
    """The verdict of a decided solve (``MilpSolution.decided``), None otherwise."""
    return ("robust" if solution.proves_robust else "not_robust") if solution.decided else None


def answer(model, image, target, layers, eps, time_limits):
    from robex.verify.backends import GurobiBackend, HighsBackend, fits_gurobi_license, gurobi_available
    from robex.verify.bounds import linear_bounds, margin_bounds
    from robex.verify.layers import neighbourhood_box
    from robex.verify.milp import encode_query
    from robex.verify.network import parse_network
    from robex.verify.oracle import LayeredOracle, OracleSettings

    operations = parse_network(model, tuple(image.shape))
    lower, upper = neighbourhood_box(image.unsqueeze(0).double(), layers, torch.as_tensor(eps, dtype=torch.float64))
    bounds = linear_bounds(operations, lower, upper)
    margins = margin_bounds(operations, bounds, target)
    row = {"objective_upper": float(margins.objective_upper), "bounds_robust": bool(margins.objective_upper < 0)}
    if row["bounds_robust"]:
        return row
    oracle = LayeredOracle(model, image, target, layers, len(eps), OracleSettings())
    point, margin = oracle._attack(np.asarray(eps))
    row["attack_margin"] = float(margin)
    problem = encode_query(operations, bounds, target, margins)
    start = problem.complete(point.detach().double().cpu().numpy().ravel())
    row["binaries"] = problem.num_binaries
    solvers = {"highs": HighsBackend(cutoff=False), "highs_cutoff": HighsBackend(cutoff=True)}
    if fits_gurobi_license(problem) and gurobi_available():
        solvers["gurobi"] = GurobiBackend()
    for limit in time_limits:
        for name, solver in solvers.items():
            solution = solver.solve(problem, time_limit=limit, start=start)
            row[f"{name}@{limit:g}"] = {"status": solution.status, "seconds": solution.seconds,
                                        "verdict": verdict(solution)}
    return row


def summarise(rows, time_limits):
    open_rows = [r for r in rows if not r["bounds_robust"]]
    out = {"queries": len(rows), "milp_queries": len(open_rows)}
    for limit in time_limits:
        key = f"{limit:g}"
        entry = {}
        for name in ("highs", "highs_cutoff", "gurobi"):
            answered = [r[f"{name}@{key}"] for r in open_rows if f"{name}@{key}" in r]
            if answered:
                entry[name] = {"queries": len(answered), "decided_share": float(np.mean([a["verdict"] is not None for a in answered])),
                               "median_seconds_decided": median([a["seconds"] for a in answered if a["verdict"] is not None])}
        both = [r for r in open_rows if r[f"highs@{key}"]["verdict"] and r[f"highs_cutoff@{key}"]["verdict"]]
        entry["both_decided"] = len(both)
        entry["cutoff_over_plain_seconds_median"] = median([r[f"highs_cutoff@{key}"]["seconds"] / r[f"highs@{key}"]["seconds"] for r in both])
        out[f"time_limit_{key}"] = entry
    contradictions = 0
    for r in open_rows:
        verdicts = {v["verdict"] for k, v in r.items() if isinstance(v, dict) and v.get("verdict")}
        contradictions += len(verdicts) > 1
    out["contradictions"] = contradictions
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="NAME=PATH of a DOUBLE-MNIST model.pt (repeatable)")
    parser.add_argument("--data", default="outputs/data/double_mnist/test.pt")
    parser.add_argument("--queries-from", default="docs/benchmarks/verify_maxpool_relaxation.json",
                        help="a benchmark JSON whose rows hold model, image and eps")
    parser.add_argument("--time-limit", type=float, action="append", help="seconds per solver and query (repeatable; default 5)")
    parser.add_argument("--out", default="docs/benchmarks/verify_highs_cutoff.json")
    args = parser.parse_args()
    time_limits = args.time_limit or [5.0]

    from robex.data.double_mnist import DoubleMnistSplit
    from robex.models.io import load_model
    from robex.verify.layers import layer_map

    torch.set_num_threads(1)
    started = time.perf_counter()
    paths = dict(spec.split("=", 1) for spec in args.model)
    split = DoubleMnistSplit.load(args.data)
    images = split.float_images()
    models = {name: load_model(path, "cpu").requires_grad_(False) for name, path in paths.items()}
    rows = []
    for query in json.loads(Path(args.queries_from).read_text())["rows"]:
        if query["model"] not in models:
            continue
        index = query["image"]
        target, mask = int(split.digits[index, 0]), split.masks[index, 1]
        layers = layer_map(mask.unsqueeze(0), 8)[0]
        row = {"model": query["model"], "image": index, "eps": query["eps"],
               **answer(models[query["model"]], images[index], target, layers, query["eps"], time_limits)}
        rows.append(row)
        print({k: (v["status"], round(v["seconds"], 2)) if isinstance(v, dict) else v for k, v in row.items() if k != "eps"}, flush=True)
    emit({
        "command": "python benchmarks/verify_highs_cutoff.py " + " ".join(sys.argv[1:]),
        "settings": {"time_limits": time_limits, "threads": 1, "warm_start": "completion of the oracle's PGD best point", "stop_on_sign": True},
        "threads_env": os.environ.get("OMP_NUM_THREADS"),
        **summarise(rows, time_limits),
        "by_model": {name: summarise([r for r in rows if r["model"] == name], time_limits) for name in paths},
        "rows": rows,
        "seconds": time.perf_counter() - started,
    }, args.out)


if __name__ == "__main__":
    main()
