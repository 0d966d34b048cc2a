"""Issue-11 figures read off finished verify-stage runs (``python -m robex.verify``); prints JSON.

    python benchmarks/verify_run_summary.py --run outputs/reference/verify --run outputs/reference/verify_binary \
        --command "..." > docs/benchmarks/verify_reference_run.json

Unlike ``verify_decided.py`` (which runs its own searches and replays queries on each backend), this
only reads the stage's ``queries.csv`` and ``per_image.csv``, so the figures describe exactly the run
whose numbers the reference report shows, at that run's budgets. Keys as in verify_decided.json:
``decided_share`` (MILP queries decided: optimal, positive or negative), ``maximality_refuted_share``
(median over image x variant of the single-layer increments refuted), CEGIS vs binary search (mean
size and mean queries ratios, and CEGIS zeros where binary search found > 0), plus sizes, the share of queries answered without a MILP and the time split.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

DECIDED = ("optimal", "positive", "negative")


def _read(runs: list[Path], name: str) -> pd.DataFrame:
    frames = [pd.read_csv(run / name) for run in runs if (run / name).is_file()]
    if not frames:
        raise SystemExit(f"error: no {name} under {', '.join(map(str, runs))}; run the verify stage first")
    return pd.concat(frames, ignore_index=True)


def _share(mask: pd.Series) -> float | None:
    return float(mask.mean()) if len(mask) else None


def summarize(queries: pd.DataFrame, per_image: pd.DataFrame) -> dict:
    milp = queries[queries["answered_by"] == "milp"]
    out: dict = {
        "images": int(per_image[["defense", "image"]].drop_duplicates().shape[0]),
        "queries": int(len(queries)),
        "milp_queries": int(len(milp)),
        "decided_share": _share(milp["milp_status"].isin(DECIDED)),
        "decided_share_by_backend": {str(b): _share(g["milp_status"].isin(DECIDED)) for b, g in milp.groupby("backend")},
        "milp_queries_by_backend": {str(b): int(len(g)) for b, g in milp.groupby("backend")},
        "median_seconds_per_decided_query": float(milp[milp["milp_status"].isin(DECIDED)]["milp_seconds"].median())
        if milp["milp_status"].isin(DECIDED).any() else None,
        "share_queries_without_milp": _share(queries["answered_by"] != "milp"),
        "answered_by": {str(k): int(v) for k, v in queries["answered_by"].value_counts().items()},
        "time_split_seconds": {"attack": float(queries["attack_seconds"].sum()), "bounds": float(queries["bounds_seconds"].sum()),
                               "milp": float(queries["milp_seconds"].fillna(0).sum())},
        "maximality_refuted_share": float(per_image["refuted_share"].median()),
        "maximality_refuted_share_by_variant": {str(v): float(g["refuted_share"].median()) for v, g in per_image.groupby("variant")},
        "size_mean": {str(v): float(g["size"].mean()) for v, g in per_image.groupby("variant")},
        "queries_mean": {str(v): float(g["queries"].mean()) for v, g in per_image.groupby("variant")},
        "final_proved_by": {str(v): {str(k): int(c) for k, c in g["final_proved_by"].fillna("unknown").value_counts().items()}
                            for v, g in per_image.groupby("variant")},
    }
    binary = per_image[per_image["variant"] == "binary"].set_index(["defense", "image"])
    zero_where_binary_positive, compared = 0, 0
    for variant in sorted(v for v in per_image["variant"].unique() if str(v).startswith("cegis")):
        cegis = per_image[per_image["variant"] == variant].set_index(["defense", "image"])
        for key in cegis.index.intersection(binary.index):
            compared += 1
            zero_where_binary_positive += int(cegis.loc[key, "size"] == 0 and binary.loc[key, "size"] > 0)
    out["cegis_binary_pairs_compared"] = compared
    out["cegis_zero_where_binary_positive"] = zero_where_binary_positive
    # whole-search ratios (the per-query sizes needed for "queries to reach binary's size" are not in queries.csv;
    # verify_decided.py measures that one)
    out["cegis_over_binary_size"] = {str(v): float(per_image[per_image["variant"] == v]["size"].mean() / binary["size"].mean())
                                     for v in per_image["variant"].unique() if str(v).startswith("cegis") and len(binary)}
    out["cegis_over_binary_total_queries"] = {str(v): float(per_image[per_image["variant"] == v]["queries"].mean() / binary["queries"].mean())
                                              for v in per_image["variant"].unique() if str(v).startswith("cegis") and len(binary)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", action="append", type=Path, required=True, help="a verify stage output folder (repeatable)")
    parser.add_argument("--command", default="", help="the command(s) that produced the runs (recorded verbatim)")
    args = parser.parse_args(argv)
    queries, per_image = _read(args.run, "queries.csv"), _read(args.run, "per_image.csv")
    result = {"runs": [str(r) for r in args.run], "command": args.command, "all": summarize(queries, per_image),
              "by_defense": {str(d): summarize(queries[queries["defense"] == d], per_image[per_image["defense"] == d])
                             for d in sorted(per_image["defense"].unique())}}
    json.dump(result, sys.stdout, indent=1, default=float)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
