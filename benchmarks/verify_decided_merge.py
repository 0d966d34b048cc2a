"""Merge runs of ``verify_decided.py`` over disjoint images into one report (issue 11).

    python benchmarks/verify_decided_merge.py --part docs/benchmarks/verify_decided.json \
        --part partA.jsonl --part partB.jsonl --out docs/benchmarks/verify_decided.json

A long run is split over processes with ``--skip-images`` (each writes a ``--partial`` JSON-lines
file), and runs of different sessions cover different images. A part is either a ``--partial``
file (raw MILP and replay rows: every key is recomputed exactly) or a finished report JSON (only
its per-image rows and per-model counts are kept). Pooled keys -- the decided shares, query
counts, the maximality and CEGIS-vs-binary medians over images -- are exact over all parts: they
come from the per-image rows and the per-model counts. Medians of solver seconds need the raw
rows, so they are taken over the JSON-lines parts only, and ``seconds_keys_cover`` says which
images that is. Parts must use the same settings (checked on the report parts' ``settings``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from verify_decided import read_partial, summarise  # noqa: E402

STRATEGIES = ("cegis", "binary")
FREE_BACKENDS = ("highs", "bab")
SECONDS_KEYS = ("highs_vs_gurobi_same_queries", "median_seconds_per_decided_query", "median_seconds_decided_gurobi",
                "median_seconds_decided_highs_replay", "median_seconds_decided_bab_replay")


def free_counts_from_summary(summary: dict) -> dict:
    """(decided, replayed) per license-free backend of a finished report's per-model summary. Reports
    before session 9 hold only the shares: each replayed query went to every backend of
    ``license_free``, so with none answered before the MILP each backend got an equal share."""
    if "license_free_counts" in summary:
        return {b: [c["decided"], c["replayed"]] for b, c in summary["license_free_counts"].items()}
    if summary["license_free_answered_before_milp"]:
        raise SystemExit("a report part has replayed queries answered before the MILP; merge its --partial file instead")
    shares = summary["decided_share_license_free_by_backend"]
    backends = [b for b in FREE_BACKENDS if shares.get(b) is not None]
    per_backend = summary["license_free_replayed_queries"] / max(len(backends), 1)
    counts = {b: [0, 0] for b in FREE_BACKENDS}
    for b in backends:
        decided = shares[b] * per_backend
        if abs(decided - round(decided)) > 1e-6:
            raise SystemExit(f"cannot recover the license-free counts of a report part (share {shares[b]} of {per_backend})")
        counts[b] = [round(decided), round(per_backend)]
    return counts


def new_entry() -> dict:
    return {"rows": [], "free": {b: [0, 0] for b in FREE_BACKENDS}, "backends": {}, "raw": ([], []), "raw_images": []}


def add_part(entry: dict, rows, free: dict, backends: dict, milp=(), replay=(), raw_images=()) -> None:
    """Add one part's rows and counts of a model (or one model's, for the pooled total) to ``entry``."""
    entry["rows"].extend(rows)
    for b, (d, n) in free.items():
        entry["free"][b][0] += d
        entry["free"][b][1] += n
    for b, count in backends.items():
        entry["backends"][b] = entry["backends"].get(b, 0) + count
    entry["raw"][0].extend(milp)
    entry["raw"][1].extend(replay)
    entry["raw_images"].extend(raw_images)


def load_parts(paths):
    """Per model: per-image rows, license-free counts, MILP backend counts, and raw rows where a part has them."""
    models: dict[str, dict] = {}
    sources = []
    for path in map(Path, paths):
        if not path.is_file():
            raise SystemExit(f"part {path} does not exist; pass a --partial file (.jsonl) or a report JSON of verify_decided.py")
        if path.suffix == ".jsonl":
            parts = read_partial(path)
            for name, (rows, milp, replay) in parts.items():
                counts = summarise([], [], replay)["license_free_counts"]
                backends = Counter(m["backend"] for m in milp)
                add_part(models.setdefault(name, new_entry()), rows, free_counts_from_summary({"license_free_counts": counts}), backends,
                         milp, replay, [row["image"] for row in rows])
            sources.append({"part": str(path), "kind": "partial", "images": sum(len(rows) for rows, _, _ in parts.values())})
        else:
            report = json.loads(path.read_text())
            for name, summary in report["models"].items():
                add_part(models.setdefault(name, new_entry()), summary["per_image"], free_counts_from_summary(summary), summary["milp_backends"])
            sources.append({"part": str(path), "kind": "report", "images": report["images"], "command": report.get("command"),
                            "settings": report.get("settings")})
    for name, entry in models.items():
        images = [row["image"] for row in entry["rows"]]
        if len(set(images)) != len(images):
            raise SystemExit(f"model {name}: parts overlap in images {sorted(i for i in set(images) if images.count(i) > 1)}")
    return models, sources


def pooled(rows, free, backends, raw) -> dict:
    """``summarise``'s keys, the pooled ones from per-image rows and counts, the seconds ones from raw rows."""
    report = summarise(rows, [], [])
    milp = sum(row[s]["milp_queries"] for row in rows for s in STRATEGIES)
    decided = sum(row[s]["milp_decided"] for row in rows for s in STRATEGIES)
    shares = {b: (d / n if n else None) for b, (d, n) in free.items()}
    report.update({
        "decided_share": decided / milp if milp else None,
        "milp_queries": milp,
        "milp_decided": decided,
        "share_queries_without_milp": 1.0 - milp / max(sum(row[s]["queries"] for row in rows for s in STRATEGIES), 1),
        "milp_backends": backends,
        "decided_share_license_free": max((s for s in shares.values() if s is not None), default=None),
        "decided_share_license_free_by_backend": shares,
        "license_free_counts": {b: {"decided": d, "replayed": n} for b, (d, n) in free.items()},
        "license_free_replayed_queries": sum(n for _, n in free.values()),
    })
    report.pop("license_free_answered_before_milp", None)
    seconds = summarise([], *raw) if raw[0] or raw[1] else {}
    for key in SECONDS_KEYS:
        report[key] = seconds.get(key)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", action="append", required=True, help="a --partial JSON-lines file or a report JSON of verify_decided.py (repeatable)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--apart", nargs="*", default=["wide"],
                        help="models summarised under their own key and left out of the headline keys (verify_decided.py's wide CNN)")
    args = parser.parse_args()
    models, sources = load_parts(args.part)
    settings = [s["settings"] for s in sources if s.get("settings")]
    keep = ("max_queries", "polish_queries", "milp_time_limit", "final_time_limit", "max_seconds", "tolerance")
    if any({k: s.get(k) for k in keep} != {k: settings[0].get(k) for k in keep} for s in settings):
        raise SystemExit("the report parts were run with different settings; merge only like with like")
    report = {"command": "python benchmarks/verify_decided_merge.py " + " ".join(os.sys.argv[1:]), "parts": sources, "models": {}}
    everything = new_entry()
    for name, entry in models.items():
        entry["rows"].sort(key=lambda row: row["image"])
        summary = {**pooled(entry["rows"], entry["free"], entry["backends"], entry["raw"]), "per_image": entry["rows"],
                   "seconds_keys_cover": sorted(entry["raw_images"])}
        if name in args.apart:
            report[name] = summary
            continue
        report["models"][name] = summary
        add_part(everything, entry["rows"], entry["free"], entry["backends"], *entry["raw"])
    report.update(pooled(everything["rows"], everything["free"], everything["backends"], everything["raw"]))
    report["seconds_keys_cover"] = {name: len(entry["raw_images"]) for name, entry in models.items() if name not in args.apart}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1, default=float) + "\n")
    print(json.dumps({k: report[k] for k in ("images", "decided_share", "decided_share_license_free", "maximality_refuted_share",
                                             "maximality_refuted_or_unknown_share", "cegis_over_binary_queries")}))


if __name__ == "__main__":
    main()
