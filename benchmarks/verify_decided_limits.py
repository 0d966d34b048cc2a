"""The verify benchmark at two MILP time limits on the same images (issue 11 asks for the share of
queries decided "within the default limit"; the benchmark's big run used 5 s, the stage default
``verify.oracle.milp_time_limit`` is 10 s).

    python benchmarks/verify_decided_limits.py \
        --short docs/benchmarks/verify_decided_s9_parts/partA.jsonl --short docs/benchmarks/verify_decided_s9_parts/partB.jsonl \
        --long docs/benchmarks/verify_decided_limits_parts/t10.jsonl --out docs/benchmarks/verify_decided_limits.json

Both sides are ``--partial`` files of ``verify_decided.py``; only the (model, image) pairs present on
both sides are compared. Each side's search asks its own queries (a verdict that changes with the
limit changes the next box), so this compares the verifier as the issue's figure does: on the
queries its own search asks. The split by backend shows where the undecided queries are: a MILP
over gurobipy's pip-license size goes to HiGHS. Without ``--long`` it summarises the ``--short``
files alone, over all their images (the backend split of a run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit  # noqa: E402
from verify_decided import DECIDED  # noqa: E402

STRATEGIES = ("cegis", "binary")


def per_image_milp(path: Path) -> dict[tuple[str, int], tuple[dict, list]]:
    """(model, image) -> (the image's row, its own MILP rows, each tagged with its ``strategy``). A --partial line holds its model's MILP
    rows so far in its process, so an image's own rows are what its line adds to the line before it
    of the same run (a line continues a run when same model and its rows extend that line's, as in
    ``verify_decided.read_partial``)."""
    images, last = {}, None
    for text in path.read_text().splitlines():
        if not text.strip():
            continue
        line = json.loads(text)
        continues = (last is not None and last["row"]["model"] == line["row"]["model"]
                     and line["milp"][: len(last["milp"])] == last["milp"] and line["replay"][: len(last["replay"])] == last["replay"])
        own = line["milp"][len(last["milp"]):] if continues else line["milp"]
        # verify_decided.py runs CEGIS, then binary search, on each image: the first rows are CEGIS's
        cegis = line["row"]["cegis"]["milp_queries"]
        own = [{**query, "strategy": "cegis" if k < cegis else "binary"} for k, query in enumerate(own)]
        images[(line["row"]["model"], int(line["row"]["image"]))] = (line["row"], own)
        last = line
    return images


def read_parts(parts: list[Path]) -> dict[tuple[str, int], tuple[dict, list]]:
    """``per_image_milp`` of every --partial file of ``parts``, merged; a missing file is one sentence."""
    images = {}
    for part in parts:
        if not part.is_file():
            raise SystemExit(f"--part {part} is not a file; pass a --partial file of benchmarks/verify_decided.py")
        images.update(per_image_milp(part))
    return images


def side_summary(images: dict, keys: list) -> dict:
    rows = [images[key][0] for key in keys]
    milp = [m for key in keys for m in images[key][1]]
    backends = sorted({m["backend"] for m in milp})
    summary = {
        "milp_queries": len(milp),
        "decided": sum(m["status"] in DECIDED for m in milp),
        "decided_by_backend": {b: {"queries": sum(m["backend"] == b for m in milp),
                                   "decided": sum(m["backend"] == b and m["status"] in DECIDED for m in milp)} for b in backends},
        "decided_by_strategy": {s: {"queries": sum(r[s]["milp_queries"] for r in rows), "decided": sum(r[s]["milp_decided"] for r in rows)}
                                for s in STRATEGIES},
        "decided_by_strategy_and_backend": {s: {b: {"queries": sum(m["strategy"] == s and m["backend"] == b for m in milp),
                                                    "decided": sum(m["strategy"] == s and m["backend"] == b and m["status"] in DECIDED for m in milp)}
                                                for b in backends} for s in STRATEGIES},
        "size_mean": {s: sum(r[s]["size"] for r in rows) / len(rows) for s in STRATEGIES},
        "increments": {s: {v: sum(r[s]["maximality"].count(v) for r in rows) for v in ("refuted", "unknown", "robust")} for s in STRATEGIES},
        "milp_seconds": sum(r[s]["milp_seconds"] for r in rows for s in STRATEGIES),
    }
    summary["decided_share"] = summary["decided"] / summary["milp_queries"] if milp else None
    per_strategy = sum(c["queries"] for c in summary["decided_by_strategy"].values())
    tagged = {s: {"queries": sum(c["queries"] for c in summary["decided_by_strategy_and_backend"][s].values()),
                  "decided": sum(c["decided"] for c in summary["decided_by_strategy_and_backend"][s].values())} for s in STRATEGIES}
    if per_strategy != len(milp) or tagged != summary["decided_by_strategy"]:  # the per-image counts and the raw rows must tell the same story
        raise SystemExit(f"the rows of {len(keys)} images hold {len(milp)} MILP queries but their counts say {per_strategy}")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="append", required=True, type=Path, help="--partial file(s) run at the shorter limit")
    parser.add_argument("--long", action="append", default=[], type=Path, help="--partial file(s) run at the longer limit")
    parser.add_argument("--short-limit", type=float, default=5.0)
    parser.add_argument("--long-limit", type=float, default=10.0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    sides = {}
    for name, paths in (("short", args.short), ("long", args.long)):
        if not paths:
            continue
        sides[name] = {}
        for path in paths:
            if not path.is_file():
                raise SystemExit(f"--{name} {path} is not a file; pass a --partial file of benchmarks/verify_decided.py")
            sides[name].update(per_image_milp(path))
    common = sorted(set.intersection(*(set(images) for images in sides.values())))
    if not common:
        raise SystemExit("the --short and --long files share no (model, image); run both limits on the same images")
    report = {
        "command": "python benchmarks/verify_decided_limits.py " + " ".join(os.sys.argv[1:]),
        "images": [list(key) for key in common],
        "limits_seconds": {name: getattr(args, f"{name}_limit") for name in sides},
    }
    for name, images in sides.items():
        report[name] = side_summary(images, common)
        models = sorted({model for model, _ in common})
        report[name]["by_model"] = {model: side_summary(images, [key for key in common if key[0] == model]) for model in models}
    emit(report, args.out)


if __name__ == "__main__":
    main()
