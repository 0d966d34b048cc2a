"""Benchmark: the oracle's escalation attack on the queries the bounds leave to the MILP (issue 11).

    OMP_NUM_THREADS=1 python benchmarks/verify_escalation.py --model none=weights/double_mnist_thesis/model.pt \
        --model l0=weights/double_mnist_thesis_l0/model.pt --model pgd=weights/double_mnist_thesis_pgd/model.pt

The queries are collected as in ``verify_fused_encoding.py`` (one short CEGIS search per image with
the escalation off: exactly what the cheap 20 x 4 attack and the linear bounds used to pass to the
MILP). Each sampled query is then attacked three ways -- the cheap attack, a plain PGD with the
escalation's budget (uniform starts, constant step) and the escalation itself (box-vertex starts,
cosine step, stop at the first success) -- and solved by the MILP the oracle would use (fused
encoding, Gurobi within its license, else HiGHS; stop on sign) for the ground truth. An attack that
"refutes" a query the MILP proved robust would be a bug; the JSON counts such cases (must be 0).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit  # noqa: E402
from verify_fused_encoding import DECIDED, collect_queries  # noqa: E402

ATTACKS = {
    "cheap": dict(steps=20, restarts=4),
    "plain_same_budget": dict(steps=100, restarts=32),
    "escalation": dict(steps=100, restarts=32, corner_starts=True, step_schedule="cosine", stop_at_first_success=True),
}


def median(values):
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(statistics.median(values)) if values else None


def attack_query(model, image, layers, eps, target):
    from robex.attacks.multilabel import MultiLabelPGD
    from robex.verify.layers import pixel_eps

    radius = pixel_eps(layers, torch.as_tensor(eps)).float().unsqueeze(0)
    out = {}
    for name, options in ATTACKS.items():
        started = time.perf_counter()
        result = MultiLabelPGD(model, eps=radius, step_fraction=0.25, k=2, generator=torch.Generator().manual_seed(0), **options)(
            image.unsqueeze(0), torch.tensor([target]))
        out[name] = {"margin": float(result.margin[0]), "refuted": bool(result.success[0]), "seconds": time.perf_counter() - started}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="NAME=PATH of a DOUBLE-MNIST model.pt (repeatable)")
    parser.add_argument("--data", default="outputs/data/double_mnist/test.pt")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--queries", type=int, default=8, help="MILP queries per image (a seeded sample)")
    parser.add_argument("--search-queries", type=int, default=20)
    parser.add_argument("--search-seconds", type=float, default=120.0)
    parser.add_argument("--time-limit", type=float, default=10.0, help="MILP limit of the ground truth (the stage default)")
    parser.add_argument("--out", default="docs/benchmarks/verify_escalation.json")
    args = parser.parse_args()

    from robex.data.double_mnist import DoubleMnistSplit
    from robex.models.io import load_model
    from robex.verify.backends import choose_backend
    from robex.verify.bounds import linear_bounds, margin_bounds
    from robex.verify.layers import layer_map, neighbourhood_box
    from robex.verify.milp import encode_query
    from robex.verify.network import parse_network
    from robex.verify.runner import correctly_classified

    torch.set_num_threads(1)
    split = DoubleMnistSplit.load(args.data)
    images = split.float_images()
    rng = random.Random(0)
    started = time.perf_counter()
    rows = []
    for spec in args.model:
        name, path = spec.split("=", 1)
        model = load_model(path, "cpu").requires_grad_(False)
        for index in correctly_classified(model, images[:2000], split.digits[:2000])[: args.images].tolist():
            target, mask = int(split.digits[index, 0]), split.masks[index, 1]
            queries = collect_queries(model, images[index], target, mask, args)
            operations = parse_network(model, tuple(images[index].shape))
            layers = layer_map(mask.unsqueeze(0), 8)[0]
            for eps in rng.sample(queries, min(args.queries, len(queries))):
                row = {"model": name, "image": index, "eps": [round(float(e), 5) for e in eps], **attack_query(model, images[index], layers, eps, target)}
                lower, upper = neighbourhood_box(images[index].unsqueeze(0).double(), layers, torch.as_tensor(eps, dtype=torch.float64))
                bounds = linear_bounds(operations, lower, upper)
                margins = margin_bounds(operations, bounds, target)
                problem = encode_query(operations, bounds, target, margins)
                solution = choose_backend("auto", problem).solve(problem, time_limit=args.time_limit)
                row["milp"] = {"status": solution.status, "backend": solution.backend, "seconds": solution.seconds}
                rows.append(row)
                print({"model": name, "image": index, "milp": solution.status, **{a: row[a]["refuted"] for a in ATTACKS}}, flush=True)

    def share(selected, attack):
        return (sum(r[attack]["refuted"] for r in selected) / len(selected)) if selected else None

    by_truth = {status: [r for r in rows if r["milp"]["status"] == status] for status in ("positive", "negative", "optimal", "timeout")}
    undecided = [r for r in rows if r["milp"]["status"] not in DECIDED]
    report = {
        "command": "python benchmarks/verify_escalation.py " + " ".join(sys.argv[1:]),
        "settings": {"time_limit": args.time_limit, "images": args.images, "queries_per_image": args.queries, "attacks": ATTACKS, "threads": 1},
        "queries": len(rows),
        "milp_status_counts": {s: len(v) for s, v in by_truth.items()},
        "refuted_share": {a: share(rows, a) for a in ATTACKS},
        "refuted_share_of_milp_positive": {a: share(by_truth["positive"], a) for a in ATTACKS},
        "refuted_share_of_milp_undecided": {a: share(undecided, a) for a in ATTACKS},
        "refuted_where_milp_proved_robust": {a: sum(r[a]["refuted"] for r in by_truth["negative"]) for a in ATTACKS},
        "median_attack_seconds": {a: median([r[a]["seconds"] for r in rows]) for a in ATTACKS},
        "median_milp_seconds": median([r["milp"]["seconds"] for r in rows]),
        "milp_decided_share_without_escalation": (sum(r["milp"]["status"] in DECIDED for r in rows) / len(rows)) if rows else None,
        # the MILP queries left once the escalation runs first: those it does not refute
        "milp_decided_share_after_escalation": (lambda left: (sum(r["milp"]["status"] in DECIDED for r in left) / len(left)) if left else None)(
            [r for r in rows if not r["escalation"]["refuted"]]),
        "rows": rows,
        "seconds": time.perf_counter() - started,
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
