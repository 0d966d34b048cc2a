"""Benchmark: how often the verifier decides its queries, and whether its answers are maximal (issue 11).

    python benchmarks/verify_decided.py                                   # the issue's sizes (20 images per defense, wide CNN on 5)
    python benchmarks/verify_decided.py --images 3 --wide-images 0 --model none=PATH --max-queries 30

For each model, the first ``--images`` correctly classified test images (target = left digit):
CEGIS (sensitivity weights) and binary search with the SAME budget, each followed by the polish
phase and the maximality check (eps* + tolerance e_d for every layer d), then the final
re-verification. The MILP queries of the runs (auto backend: Gurobi within its license, else HiGHS)
are replayed with each license-free backend alone (``--license-free``: HiGHS MILP and the
branch and bound of ``robex.verify.bab``; ``--replay`` queries per image) for the license-free
decided share (the best backend's, and each one's under ``decided_share_license_free_by_backend``).
Writes JSON (medians over images; timings are wall clock on the shared CPUs) to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

DECIDED = ("optimal", "positive", "negative")


def median(values):
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(statistics.median(values)) if values else None


def run_model(name, path, split, args, oracle_settings, search_settings):
    from robex.models.io import load_model
    from robex.verify.layers import layer_map
    from robex.verify.oracle import LayeredOracle
    from robex.verify.runner import correctly_classified, verify_image
    from robex.verify.search import queries_to_reach

    model = load_model(path, "cpu").requires_grad_(False)
    images = split.float_images()
    chosen = correctly_classified(model, images[:2000], split.digits[:2000])[args.skip_images: args.skip_images + args.images].tolist()
    per_image, milp_rows, replay_rows = [], [], []
    for index in chosen:
        target, mask = int(split.digits[index, 0]), split.masks[index, 1]
        row = {"model": name, "image": index}
        outcomes = {}
        for strategy, cutting in (("cegis", "sensitivity"), ("binary", "fixed")):
            started = time.perf_counter()
            outcome = verify_image(model, images[index], target, mask, strategy, cutting, oracle_settings, search_settings, merge_from=8)
            result, final = outcome["result"], outcome["final"]
            outcomes[strategy] = outcome
            records = outcome["records"]
            milp = [r for r in records if r.milp_status is not None]
            milp_rows += [{"status": r.milp_status, "seconds": r.milp_seconds, "backend": r.backend, "eps": r.eps.tolist()} for r in milp]
            row[strategy] = {
                "size": result.size, "queries": result.queries, "search_size": result.search_size, "search_queries": result.search_queries,
                "queries_to_size": queries_to_reach(result.trace, result.size), "refuted_share": result.refuted_share,
                "maximality": result.maximality, "eps": [round(float(e), 5) for e in result.eps],
                "answered_by": result.counts, "milp_queries": len(milp), "milp_decided": sum(r.milp_status in DECIDED for r in milp),
                "attack_seconds": sum(r.details.get("attack_seconds", 0.0) for r in records),
                "bounds_seconds": sum(r.details.get("bounds_seconds", 0.0) for r in records),
                "milp_seconds": sum(r.milp_seconds or 0.0 for r in records),
                "final": None if final is None else {"verdict": final.verdict.value, "proved_by": final.proved_by, "status": final.milp_status, "seconds": final.seconds},
                "seconds": time.perf_counter() - started,
            }
            print(json.dumps({"model": name, "image": index, strategy: {k: row[strategy][k] for k in ("size", "search_size", "queries", "refuted_share", "milp_queries", "milp_decided")}}), flush=True)
        cegis, binary = row["cegis"], row["binary"]
        to_binary = queries_to_reach(outcomes["cegis"]["result"].trace, binary["size"])
        row["cegis_queries_to_binary_size"] = to_binary
        row["cegis_over_binary_queries"] = (to_binary / binary["queries_to_size"]) if to_binary and binary["queries_to_size"] else None
        row["cegis_zero_where_binary_positive"] = cegis["size"] == 0 and binary["size"] > 0
        # license-free replay of this image's MILP queries (a fresh oracle: no cache; attack, bounds, then HiGHS)
        layers = layer_map(mask.unsqueeze(0), 8)[0]
        queries = [r for o in outcomes.values() for r in o["records"] if r.milp_status is not None][: args.replay]
        for record in queries:
            for free_backend in args.license_free:
                oracle = LayeredOracle(model, images[index], target, layers, int(layers.max()) + 1, replace(oracle_settings, backend=free_backend, use_cache=False))
                replayed = oracle.query(record.eps)
                replay_rows.append({"status": replayed.milp_status or replayed.answered_by, "original": record.milp_status, "backend": record.backend,
                                    "replay_backend": free_backend, "seconds": replayed.milp_seconds, "original_seconds": record.milp_seconds})
        # HiGHS vs Gurobi on the same queries: queries Gurobi decided in the search, re-solved by HiGHS alone
        # (kept apart from the replay above, whose first-N choice is what the license-free share needs)
        gurobi_decided = [r for o in outcomes.values() for r in o["records"]
                          if r.backend == "gurobi" and r.milp_status in DECIDED and all(r is not q for q in queries)][: args.pair_gurobi]
        for record in gurobi_decided:
            oracle = LayeredOracle(model, images[index], target, layers, int(layers.max()) + 1, replace(oracle_settings, backend="highs", use_cache=False))
            replayed = oracle.query(record.eps)
            replay_rows.append({"status": replayed.milp_status or replayed.answered_by, "original": record.milp_status, "backend": record.backend,
                                "replay_backend": "highs", "seconds": replayed.milp_seconds, "original_seconds": record.milp_seconds,
                                "purpose": "pair"})
        per_image.append(row)
        if args.partial:  # survive a run cut short: every finished image, with its MILP/replay rows
            with open(args.partial, "a") as handle:
                handle.write(json.dumps({"row": row, "milp": milp_rows, "replay": replay_rows}, default=float) + "\n")
    return per_image, milp_rows, replay_rows


def summarise(per_image, milp_rows, replay_rows):
    from itertools import chain

    strategies = ("cegis", "binary")
    all_records = list(chain.from_iterable([row[s] for s in strategies] for row in per_image))
    decided = [m for m in milp_rows if m["status"] in DECIDED]
    undecided = ("timeout", "stopped", "incomplete")
    paired = [r for r in replay_rows if r["backend"] == "gurobi" and r.get("replay_backend", "highs") == "highs" and r["original"] in DECIDED]
    replay_rows = [r for r in replay_rows if r.get("purpose") != "pair"]  # the first-N replay alone decides the license-free share
    replay_milp = [r for r in replay_rows if r["status"] in DECIDED + undecided]

    free_counts = {b: {"decided": sum(r["status"] in DECIDED for r in replay_milp if r.get("replay_backend", "highs") == b),
                       "replayed": sum(r.get("replay_backend", "highs") == b for r in replay_milp)} for b in ("highs", "bab")}

    def free_share(backend):
        counts = free_counts[backend]
        return counts["decided"] / counts["replayed"] if counts["replayed"] else None

    time_split = {k: float(sum(r[f"{k}_seconds"] for r in all_records)) for k in ("attack", "bounds", "milp")}
    total_queries = sum(r["queries"] for r in all_records)
    gurobi = [m["seconds"] for m in decided if m["backend"] == "gurobi"]
    highs_replay = [r["seconds"] for r in replay_rows if r["status"] in DECIDED and r["seconds"] is not None and r.get("replay_backend", "highs") == "highs"]
    bab_replay = [r["seconds"] for r in replay_rows if r["status"] in DECIDED and r["seconds"] is not None and r.get("replay_backend") == "bab"]
    # HiGHS vs Gurobi on the same queries (Gurobi decided them in the search; HiGHS re-solved them alone)
    both = [r for r in paired if r["status"] in DECIDED and r["seconds"] and r["original_seconds"]]
    return {
        "images": len(per_image),
        "decided_share": (len(decided) / len(milp_rows)) if milp_rows else None,
        "highs_vs_gurobi_same_queries": {
            "queries_gurobi_decided": len(paired),
            "highs_decided": len(both),
            "highs_over_gurobi_seconds_median": median([r["seconds"] / r["original_seconds"] for r in both]),
            # where HiGHS hit the limit the ratio is at least limit / Gurobi's time
            "highs_timeouts_over_gurobi_seconds_at_least_median": median(
                [r["seconds"] / r["original_seconds"] for r in paired if r["status"] not in DECIDED and r["seconds"] and r["original_seconds"]]),
        },
        # the best license-free backend's share (each replayed query goes to every backend of --license-free)
        "decided_share_license_free": max((s for s in map(free_share, ("highs", "bab")) if s is not None), default=None),
        "decided_share_license_free_by_backend": {b: free_share(b) for b in ("highs", "bab")},
        "license_free_counts": free_counts,
        "license_free_replayed_queries": len(replay_milp),
        "license_free_answered_before_milp": sum(r["status"] not in DECIDED + undecided for r in replay_rows),
        "milp_queries": len(milp_rows),
        "milp_backends": {b: sum(m["backend"] == b for m in milp_rows) for b in {m["backend"] for m in milp_rows}},
        "median_seconds_per_decided_query": median([m["seconds"] for m in decided]),
        "median_seconds_decided_gurobi": median(gurobi),
        "median_seconds_decided_highs_replay": median(highs_replay),
        "median_seconds_decided_bab_replay": median(bab_replay),
        "share_queries_without_milp": 1.0 - len(milp_rows) / max(total_queries, 1),
        "time_split_seconds": time_split,
        "maximality_refuted_share": median([row[s]["refuted_share"] for row in per_image for s in strategies]),
        "maximality_refuted_share_by_strategy": {s: median([row[s]["refuted_share"] for row in per_image]) for s in strategies},
        # the target reads "100% refuted or unknown": an increment proven robust means eps* was not maximal
        "maximality_refuted_or_unknown_share": median([np.mean([v != "robust" for v in row[s]["maximality"]]) if row[s]["maximality"] else None
                                                        for row in per_image for s in strategies]),
        "maximality_increments": {s: {v: sum(row[s]["maximality"].count(v) for row in per_image) for v in ("refuted", "unknown", "robust")}
                                  for s in strategies},
        "answered_by": {s: {k: sum(row[s]["answered_by"].get(k, 0) for row in per_image) for k in ("cache", "attack", "bounds", "milp")}
                        for s in strategies},
        "cegis_over_binary_queries": median([row["cegis_over_binary_queries"] for row in per_image]),
        "cegis_reached_binary_size_share": float(np.mean([row["cegis_queries_to_binary_size"] is not None for row in per_image])) if per_image else None,
        "cegis_zero_where_binary_positive": int(sum(row["cegis_zero_where_binary_positive"] for row in per_image)),
        "size_mean": {s: float(np.mean([row[s]["size"] for row in per_image])) if per_image else None for s in strategies},
        "search_size_mean": {s: float(np.mean([row[s]["search_size"] for row in per_image])) if per_image else None for s in strategies},
        "queries_mean": {s: float(np.mean([row[s]["queries"] for row in per_image])) if per_image else None for s in strategies},
        "final_proved_by": {s: [row[s]["final"]["proved_by"] if row[s]["final"] else "eps=0" for row in per_image] for s in strategies},
    }


def read_partial(path: Path) -> dict[str, tuple[list, list, list]]:
    """Per model (per-image rows, MILP rows, replay rows) of a --partial file. Each line holds one
    finished image and its model's rows *so far in that process*, so within one process the last line
    of a model has them all; a file appended by several processes in turn (a run split with
    --skip-images) holds one such run of lines per process and model, and their rows add up. A line
    continues the run before it when it is of the same model and its rows extend that line's."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    runs: list[dict] = []  # per process and model: its last line so far
    for line in lines:
        last = runs[-1] if runs else None
        continues = (last is not None and last["row"]["model"] == line["row"]["model"]
                     and all(line[key][: len(last[key])] == last[key] for key in ("milp", "replay")))
        if continues:
            runs[-1] = line
        else:
            runs.append(line)
    models: dict[str, tuple[list, list, list]] = {}
    for line in lines:
        models.setdefault(line["row"]["model"], ([], [], []))[0].append(line["row"])
    for last in runs:
        _, milp, replay = models[last["row"]["model"]]
        milp.extend(last["milp"])
        replay.extend(last["replay"])
    return models


def summarise_partial(path: Path) -> dict:
    """The report of a run cut short (or split with --skip-images), from its --partial file."""
    models = read_partial(path)
    report = {"command": "python benchmarks/verify_decided.py " + " ".join(os.sys.argv[1:]),
              "summarised_from_partial": str(path), "models": {}}
    all_rows = ([], [], [])
    for name, rows in models.items():
        report["models"][name] = {**summarise(*rows), "per_image": rows[0]}
        for bucket, part in zip(all_rows, rows):
            bucket.extend(part)
    report.update(summarise(*all_rows))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=None, help="NAME=PATH of a model.pt (repeatable); default: outputs/train/double_mnist_{none,l0,pgd}")
    parser.add_argument("--wide-model", default="outputs/train/double_mnist_wide_none/model.pt")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--skip-images", type=int, default=0,
                        help="start after this many correctly classified images (split a long run over processes; see verify_decided_merge.py)")
    parser.add_argument("--wide-images", type=int, default=5)
    parser.add_argument("--data", default="outputs/data/double_mnist/test.pt")
    parser.add_argument("--max-queries", type=int, default=60)
    parser.add_argument("--polish-queries", type=int, default=60)
    parser.add_argument("--milp-time-limit", type=float, default=10.0)
    parser.add_argument("--final-time-limit", type=float, default=60.0)
    parser.add_argument("--replay", type=int, default=3, help="MILP queries per image replayed with each license-free backend alone")
    parser.add_argument("--pair-gurobi", type=int, default=2,
                        help="further queries per image that Gurobi decided, re-solved by HiGHS alone (HiGHS vs Gurobi time on the same queries)")
    parser.add_argument("--license-free", nargs="+", default=["highs", "bab"], help="license-free backends the replay compares")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="wall-clock budget of each search (and of each polish phase)")
    parser.add_argument("--out", default="docs/benchmarks/verify_decided.json")
    parser.add_argument("--partial", default=None, help="JSON-lines file that receives every finished image")
    parser.add_argument("--summarise-from", default=None,
                        help="write the report from a --partial file of a run cut short (its finished images only) instead of running")
    args = parser.parse_args()
    if args.summarise_from:
        report = summarise_partial(Path(args.summarise_from))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1, default=float) + "\n")
        print(json.dumps({k: report[k] for k in ("images", "decided_share", "decided_share_license_free", "maximality_refuted_share")}))
        return

    from robex.data.double_mnist import DoubleMnistSplit
    from robex.verify.oracle import OracleSettings
    from robex.verify.search import SearchSettings

    torch.set_num_threads(1)
    models = dict(m.split("=", 1) for m in args.model) if args.model else {d: f"outputs/train/double_mnist_{d}/model.pt" for d in ("none", "l0", "pgd")}
    split = DoubleMnistSplit.load(args.data)
    oracle_settings = OracleSettings(milp_time_limit=args.milp_time_limit, final_time_limit=args.final_time_limit)
    search_settings = SearchSettings(max_queries=args.max_queries, max_seconds=args.max_seconds, tolerance=0.005, step_size=0.05, max_shrinks=3,
                                     polish_max_queries=args.polish_queries, polish_max_seconds=args.max_seconds)
    started = time.perf_counter()
    report = {"command": "python benchmarks/verify_decided.py " + " ".join(os.sys.argv[1:]), "settings": {
        "images": args.images, "skip_images": args.skip_images, "max_queries": args.max_queries, "polish_queries": args.polish_queries, "milp_time_limit": args.milp_time_limit,
        "final_time_limit": args.final_time_limit, "max_seconds": args.max_seconds, "license_free": args.license_free, "tolerance": 0.005, "threads": 1},
        "models": {}}
    all_rows = ([], [], [])
    for name, path in models.items():
        rows = run_model(name, path, split, args, oracle_settings, search_settings)
        report["models"][name] = {"path": path, **summarise(*rows), "per_image": rows[0]}
        for bucket, part in zip(all_rows, rows):
            bucket.extend(part)
    if args.wide_images > 0 and Path(args.wide_model).is_file():
        wide_args = argparse.Namespace(**{**vars(args), "images": args.wide_images})
        rows = run_model("wide", args.wide_model, split, wide_args, oracle_settings, search_settings)
        report["wide"] = {"path": args.wide_model, **summarise(*rows), "per_image": rows[0]}
    report.update(summarise(*all_rows))  # the headline keys: over every thesis-CNN image
    report["seconds"] = time.perf_counter() - started
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1, default=float) + "\n")
    print(json.dumps({k: report[k] for k in ("decided_share", "decided_share_license_free", "maximality_refuted_share", "cegis_over_binary_queries", "seconds")}))


if __name__ == "__main__":
    main()
