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
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit  # noqa: E402
from verify_fused_encoding import DECIDED, add_query_arguments, open_queries  # noqa: E402

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
    add_query_arguments(parser, queries=8, time_limit=10.0, time_limit_help="MILP limit of the ground truth (the stage default)")
    parser.add_argument("--out", default="docs/benchmarks/verify_escalation.json")
    args = parser.parse_args()

    from robex.verify.backends import choose_backend
    from robex.verify.milp import encode_query

    torch.set_num_threads(1)
    started = time.perf_counter()
    rows = []
    for q in open_queries(args):
        row = {"model": q["name"], "image": q["index"], "eps": [round(float(e), 5) for e in q["eps"]],
               **attack_query(q["model"], q["image"], q["layers"], q["eps"], q["target"])}
        problem = encode_query(q["operations"], q["bounds"], q["target"], q["margins"])
        solution = choose_backend("auto", problem).solve(problem, time_limit=args.time_limit)
        row["milp"] = {"status": solution.status, "backend": solution.backend, "seconds": solution.seconds}
        rows.append(row)
        print({"model": q["name"], "image": q["index"], "milp": solution.status, **{a: row[a]["refuted"] for a in ATTACKS}}, flush=True)

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
