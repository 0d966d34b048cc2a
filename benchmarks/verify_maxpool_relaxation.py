"""Benchmark: the max-pool upper line of the linear bounds, DeepPoly's constant vs the chord (issue 11).

    OMP_NUM_THREADS=1 python benchmarks/verify_maxpool_relaxation.py --model none=weights/double_mnist_thesis/model.pt \
        --model l0=weights/double_mnist_thesis_l0/model.pt --model pgd=weights/double_mnist_thesis_pgd/model.pt \
        --data outputs/reference/data/double_mnist/test.pt

Before: a max-pool window that no input dominates got the constant upper bound max_i u_i, so no
upper bound depended on anything before the pool, and the BaB optimiser's gradient was zero at every
zero coefficient (clamp_min/clamp_max), so its slopes never moved on the thesis CNN. After: the
chord of max(x_top, u2) (``robex.verify.bounds.maxpool_upper_chord``; the smaller of both passes is
kept) and a gradient that is the right derivative at 0 (``robex.verify.bab._split_signs``).

The queries are the MILP queries of short CEGIS searches run with the *old* relaxation (those its
bounds could not decide), as in ``verify_fused_encoding.py``. Each is then answered by both
relaxations in one run: bounds alone, HiGHS and (where the model fits the pip license) Gurobi on the
MILP whose big-M constants come from those bounds, and the license-free BaB, each with the same time
limit. "Old" is the library with the two functions put back as they were (``old_relaxation``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit  # noqa: E402
from verify_fused_encoding import add_query_arguments, median, open_queries, query_report  # noqa: E402

DECIDED = ("optimal", "positive", "negative")


class old_relaxation:
    """Puts the constant max-pool line and the clamp sign split back into the library while active."""

    def __init__(self) -> None:
        from robex.verify import bab, bounds

        self.bab, self.bounds = bab, bounds
        self.saved = (bounds.maxpool_upper_chord, bab.maxpool_upper_chord, bab._split_signs)

    def __enter__(self):
        self.bounds.maxpool_upper_chord = self.bounds.maxpool_upper_constant
        self.bab.maxpool_upper_chord = self.bounds.maxpool_upper_constant
        self.bab._split_signs = lambda c: (c.clamp_min(0), c.clamp_max(0))
        return self

    def __exit__(self, *exc) -> None:
        self.bounds.maxpool_upper_chord, self.bab.maxpool_upper_chord, self.bab._split_signs = self.saved


def answer(q, lower, upper, time_limit):
    """Bounds, HiGHS, Gurobi (if it fits) and BaB on one box with the relaxation now in the library."""
    from robex.attacks.multilabel import multilabel_margin
    from robex.verify.bab import branch_and_bound
    from robex.verify.backends import GurobiBackend, HighsBackend, fits_gurobi_license, gurobi_available
    from robex.verify.bounds import linear_bounds, margin_bounds
    from robex.verify.milp import encode_query

    operations, target, model = q["operations"], q["target"], q["model"]
    started = time.perf_counter()
    bounds = linear_bounds(operations, lower, upper)
    margins = margin_bounds(operations, bounds, target)
    entry = {"unstable": bounds.unstable_count(operations), "objective_upper": float(margins.objective_upper),
             "bounds_seconds": time.perf_counter() - started}
    entry["bounds_robust"] = bool(margins.objective_upper < 0)
    if entry["bounds_robust"]:
        return entry
    problem = encode_query(operations, bounds, target, margins)
    entry["binaries"] = problem.num_binaries
    solution = HighsBackend().solve(problem, time_limit=time_limit)
    entry["highs"] = {"status": solution.status, "seconds": solution.seconds}
    if fits_gurobi_license(problem) and gurobi_available():
        solution = GurobiBackend().solve(problem, time_limit=time_limit)
        entry["gurobi"] = {"status": solution.status, "seconds": solution.seconds}

    def margin_of(points):
        with torch.no_grad():
            return multilabel_margin(model(points.float()), torch.full((len(points),), target), 2)

    result = branch_and_bound(operations, bounds, target, margin_of, time_limit)
    entry["bab"] = {"status": result.status, "seconds": result.seconds, "nodes": result.nodes}
    return entry


def decided(entry, backends):
    if entry["bounds_robust"]:
        return True
    return any(entry.get(b, {}).get("status") in DECIDED for b in backends)


def summarise(rows):
    out = {"queries": len(rows)}
    if not rows:
        return out
    for name in ("old", "new"):
        entries = [r[name] for r in rows]
        out[name] = {
            "robust_by_bounds_share": float(np.mean([e["bounds_robust"] for e in entries])),
            "decided_share": float(np.mean([decided(e, ("gurobi", "highs", "bab")) for e in entries])),
            "decided_share_license_free": float(np.mean([decided(e, ("highs", "bab")) for e in entries])),
            "decided_share_bab": float(np.mean([decided(e, ("bab",)) for e in entries])),
            "decided_share_highs": float(np.mean([decided(e, ("highs",)) for e in entries])),
            "median_unstable": median([e["unstable"] for e in entries]),
            "median_objective_upper": median([e["objective_upper"] for e in entries]),
            "median_bounds_seconds": median([e["bounds_seconds"] for e in entries]),
        }
    out["objective_upper_new_minus_old_median"] = median([r["new"]["objective_upper"] - r["old"]["objective_upper"] for r in rows])
    out["objective_upper_new_above_old"] = int(sum(r["new"]["objective_upper"] > r["old"]["objective_upper"] + 1e-9 for r in rows))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_query_arguments(parser, queries=6, time_limit=5.0, time_limit_help="seconds for each of HiGHS, Gurobi and BaB on each query")
    parser.add_argument("--out", default="docs/benchmarks/verify_maxpool_relaxation.json")
    args = parser.parse_args()

    from robex.verify.layers import neighbourhood_box

    torch.set_num_threads(1)
    started = time.perf_counter()
    old = old_relaxation()
    with old:  # the searches that sample the queries run with the old relaxation
        queries = list(open_queries(args))
    rows = []
    for q in queries:
        lower, upper = neighbourhood_box(q["image"].unsqueeze(0).double(), q["layers"], torch.as_tensor(q["eps"], dtype=torch.float64))
        row = {"model": q["name"], "image": q["index"], "eps": [round(float(e), 5) for e in q["eps"]]}
        with old:
            row["old"] = answer(q, lower, upper, args.time_limit)
        row["new"] = answer(q, lower, upper, args.time_limit)
        rows.append(row)
        print({"model": q["name"], "image": q["index"], **{n: (row[n]["objective_upper"], row[n]["bounds_robust"], row[n].get("bab", {}).get("status"),
                                                             row[n].get("highs", {}).get("status")) for n in ("old", "new")}}, flush=True)
    emit(query_report("verify_maxpool_relaxation.py", args, rows, summarise, started,
                      search_queries=args.search_queries, search_seconds=args.search_seconds), args.out)

if __name__ == "__main__":
    main()
