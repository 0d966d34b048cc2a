"""Would a longer limit, or another complete method, decide the queries the verify benchmark left
undecided? (issue 11: ">= 90% of MILP queries decided within the default limit", ">= 70% license-free")

    OMP_NUM_THREADS=1 python benchmarks/verify_longer_limits.py \
        --part docs/benchmarks/verify_decided_s9_parts/partA.jsonl --part docs/benchmarks/verify_decided_s9_parts/partB.jsonl \
        --model none=weights/double_mnist_thesis/model.pt --model l0=weights/double_mnist_thesis_l0/model.pt \
        --model pgd=weights/double_mnist_thesis_pgd/model.pt --data outputs/data/double_mnist/test.pt \
        --from highs --queries 6 --methods highs,bab --seconds 60 --out docs/benchmarks/verify_longer_limits_highs.json

It samples ``--queries`` of the MILP queries that timed out in the benchmark's search on backend
``--from`` (seeded, over all images and models of the parts), and asks each one again through the
stage's own oracle (``LayeredOracle.query``: attack, linear bounds, escalation attack, then the
complete method, warm-started from the attack's best point as in the stage) with
``milp_time_limit = --seconds``, once per method of ``--methods``:

- ``highs`` / ``gurobi``: the MILP on that solver alone (Gurobi only where the model fits its pip
  license; a bigger model is reported as ``over_license``, never solved);
- ``bab``: the license-free branch and bound of ``robex.verify.bab``.

Per method it reports how many of the sample are decided, how (robust / counterexample), the
seconds, and for the undecided ones the gap they ended with: the highest margin any point reached
(attack or the solver's incumbent; > 0 would be a counterexample) and the solver's upper bound on it
(< 0 would be a proof). The verdicts are the oracle's,
so a "robust" here is as sound as the stage's.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit  # noqa: E402
from verify_decided_limits import read_parts  # noqa: E402

METHODS = ("highs", "gurobi", "bab")


def finite(value) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def undecided_sample(images: dict, backend: str, count: int, seed: int) -> list[dict]:
    """``count`` time-outs on ``backend``, drawn with ``seed`` from every image of the parts, in a
    stable order (model, image, position), each with its model, image and strategy."""
    pool = [{"model": model, "image": index, "position": k, **query}
            for (model, index), (_, milp) in sorted(images.items())
            for k, query in enumerate(milp) if query["backend"] == backend and query["status"] == "timeout"]
    return sorted(random.Random(seed).sample(pool, min(count, len(pool))), key=lambda q: (q["model"], q["image"], q["position"]))


def summarise(rows: list[dict], methods: list[str]) -> dict:
    summary = {}
    for method in methods:
        own = [r for r in rows if r["method"] == method]
        asked = [r for r in own if r["outcome"] != "over_license"]
        decided = [r for r in asked if r["outcome"] in ("robust", "not_robust")]
        summary[method] = {
            "queries": len(own), "over_license": len(own) - len(asked), "decided": len(decided),
            "robust": sum(r["outcome"] == "robust" for r in asked), "not_robust": sum(r["outcome"] == "not_robust" for r in asked),
            "answered_before_the_solver": sum(r["answered_by"] in ("attack", "bounds") for r in asked),
            "median_seconds_decided": float(np.median([r["seconds"] for r in decided])) if decided else None,
            "undecided_solver_bounds": sorted(r["bound"] for r in asked if r["outcome"] == "unknown" and r["bound"] is not None),
            "undecided_gaps": sorted(([r.get("best_found"), r["bound"]] for r in asked if r["outcome"] == "unknown" and r["bound"] is not None),
                                     key=lambda gap: gap[1]),
        }
    return summary


def main() -> None:
    from robex.data.double_mnist import DoubleMnistSplit
    from robex.models.io import load_model
    from robex.utils.errors import RobexError
    from robex.verify.layers import layer_map
    from robex.verify.oracle import LayeredOracle, OracleSettings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", action="append", required=True, type=Path, help="a --partial file of verify_decided.py (repeatable)")
    parser.add_argument("--model", action="append", required=True, help="NAME=PATH for each model named in the parts")
    parser.add_argument("--data", default="outputs/data/double_mnist/test.pt")
    parser.add_argument("--from", dest="source", default="highs", choices=("highs", "gurobi", "bab"), help="the backend whose time-outs are sampled")
    parser.add_argument("--queries", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default="highs,bab", help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--seconds", type=float, default=60.0, help="milp_time_limit of every re-asked query")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"--methods {args.methods}: {unknown} unknown; pass a comma-separated list of {', '.join(METHODS)}")
    if args.queries < 1 or args.seconds <= 0:
        raise SystemExit(f"--queries {args.queries} and --seconds {args.seconds} must be positive")
    torch.set_num_threads(1)
    paths = dict(entry.split("=", 1) for entry in args.model)
    images = read_parts(args.part)
    sample = undecided_sample(images, args.source, args.queries, args.seed)
    missing = sorted({q["model"] for q in sample} - set(paths))
    if missing:
        raise SystemExit(f"the sampled queries use models {missing} without a --model NAME=PATH; add one for each")
    split = DoubleMnistSplit.load(args.data)
    pixels = split.float_images()
    models = {name: load_model(path, "cpu").requires_grad_(False) for name, path in paths.items()}
    settings = OracleSettings(milp_time_limit=args.seconds, use_cache=False)
    rows = []
    started = time.perf_counter()
    with tqdm(total=len(sample) * len(methods), desc="re-asked queries") as progress:
        for query in sample:
            index = query["image"]
            layers = layer_map(split.masks[index, 1].unsqueeze(0), 8)[0]
            for method in methods:
                oracle = LayeredOracle(models[query["model"]], pixels[index], int(split.digits[index, 0]), layers, int(layers.max()) + 1,
                                       replace(settings, backend=method))
                base = {"model": query["model"], "image": index, "strategy": query["strategy"], "method": method,
                        "original_seconds": query.get("seconds")}
                try:
                    record = oracle.query(query["eps"])
                except RobexError as error:  # backend=gurobi on a model over its pip license
                    rows.append({**base, "outcome": "over_license", "answered_by": None, "status": None, "seconds": None, "bound": None, "note": str(error)})
                    progress.update()
                    continue
                outcome = "robust" if record.robust else ("not_robust" if record.verdict.value == "not_robust" else "unknown")
                rows.append({**base, "outcome": outcome, "answered_by": record.answered_by, "proved_by": record.proved_by,
                             "status": record.milp_status, "seconds": record.seconds, "milp_seconds": record.milp_seconds,
                             "variables": record.milp_variables, "bab_nodes": record.details.get("bab_nodes"),
                             "linear_bound": finite(record.objective_upper),
                             "bound": finite(record.details.get("solver_bound")),
                             "best_found": finite(record.weakest_margin)})  # the highest margin any point reached: the gap is [best_found, bound]
                progress.update()
    report = {"command": "python benchmarks/verify_longer_limits.py " + " ".join(sys.argv[1:]),
              "from_backend": args.source, "seconds": args.seconds, "sampled": len(sample), "methods": methods,
              "wall_seconds": time.perf_counter() - started, "summary": summarise(rows, methods), "rows": rows}
    emit(report, args.out)


if __name__ == "__main__":
    main()
