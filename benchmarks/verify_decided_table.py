"""Markdown tables of ``verify_decided.py`` reports, for docs/verify.md (every number read from the JSON).

    python benchmarks/verify_decided_table.py docs/benchmarks/verify_decided.json            # all images and each model
    python benchmarks/verify_decided_table.py docs/benchmarks/verify_decided.json --key wide  # the report's wide-CNN part
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def figures(summary: dict) -> dict[str, str]:
    """The issue's benchmark figures of one summary (all images, or one model)."""
    counts = summary.get("license_free_counts")
    if counts:
        free = ", ".join(f"{b} {c['decided']} of {c['replayed']}" for b, c in counts.items() if c["replayed"])
    else:
        free = ", ".join(f"{b} {_fmt(s)}" for b, s in summary["decided_share_license_free_by_backend"].items() if s is not None)
    increments = summary["maximality_increments"]
    split = summary["time_split_seconds"]
    sizes, queries = summary["size_mean"], summary["queries_mean"]
    decided = summary.get("milp_decided", round(summary["decided_share"] * summary["milp_queries"]) if summary["decided_share"] is not None else None)
    pairs = summary.get("highs_vs_gurobi_same_queries") or {}
    return {
        "images": _fmt(summary["images"]),
        "MILP queries decided (`decided_share`)": f'{_fmt(summary["decided_share"])} ({decided} of {summary["milp_queries"]})',
        "MILP queries by backend": ", ".join(f"{b} {n}" for b, n in sorted(summary["milp_backends"].items())),
        "license-free replay decided (`decided_share_license_free`)": f'{_fmt(summary["decided_share_license_free"])} ({free})',
        "HiGHS alone on queries Gurobi decided": (f'{pairs["highs_decided"]} of {pairs["queries_gurobi_decided"]}, '
                                                  f'median time HiGHS/Gurobi {_fmt(pairs["highs_over_gurobi_seconds_median"])}')
        if pairs.get("queries_gurobi_decided") else "-",
        "median s per decided MILP query (Gurobi / HiGHS replay / BaB replay)": " / ".join(
            _fmt(summary.get(k)) for k in ("median_seconds_decided_gurobi", "median_seconds_decided_highs_replay", "median_seconds_decided_bab_replay")),
        "share of queries answered without a MILP": _fmt(summary["share_queries_without_milp"]),
        "time attack / bounds / MILP (s)": " / ".join(f"{split[k]:.0f}" for k in ("attack", "bounds", "milp")),
        "increments refuted (`maximality_refuted_share`, median image)": (
            f'{_fmt(summary["maximality_refuted_share"])} (cegis {_fmt(summary["maximality_refuted_share_by_strategy"]["cegis"])}, '
            f'binary {_fmt(summary["maximality_refuted_share_by_strategy"]["binary"])})'),
        "increments refuted or unknown (median image)": _fmt(summary["maximality_refuted_or_unknown_share"]),
        "increments refuted / unknown / robust (all, cegis + binary)": " / ".join(
            str(sum(increments[s][v] for s in ("cegis", "binary"))) for v in ("refuted", "unknown", "robust")),
        "mean size CEGIS / binary": f'{_fmt(sizes["cegis"])} / {_fmt(sizes["binary"])}',
        "mean queries CEGIS / binary": f'{_fmt(queries["cegis"])} / {_fmt(queries["binary"])}',
        "CEGIS queries to binary's size / binary's (`cegis_over_binary_queries`, median)": (
            f'{_fmt(summary["cegis_over_binary_queries"])} (reached on {_fmt(summary["cegis_reached_binary_size_share"])} of images)'),
        "CEGIS returned 0 where binary > 0": _fmt(summary["cegis_zero_where_binary_positive"]),
    }


def table(report: dict, key: str | None) -> str:
    columns = {"all": report} if key is None else {key: report[key]}
    if key is None:
        columns.update(report.get("models", {}))
    rows = {name: figures(summary) for name, summary in columns.items()}
    names = list(rows)
    lines = ["| figure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label in rows[names[0]]:
        lines.append(f"| {label} | " + " | ".join(rows[n][label] for n in names) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report")
    parser.add_argument("--key", default=None, help="a part of the report summarised on its own (e.g. wide)")
    args = parser.parse_args()
    print(table(json.loads(Path(args.report).read_text()), args.key))


if __name__ == "__main__":
    main()
