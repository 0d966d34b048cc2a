"""Thesis Tables 5.1 (LOTS targets), 5.2 (methods x metrics per model) and 5.3 (ms per image)."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from robex.explain.cam import DISPLAY_NAMES
from robex.explain.evaluate import METRIC_COLUMNS

TARGET_NAMES = {"zero": "Zero F_t", "class": "Class F_t", "mean": "Mean F_t"}


# columns beyond the thesis', filled where the summary has them (LOTS convergence, degenerate maps)
EXTRA_COLUMNS = {
    "lots_converged_pct": "LOTS converged %",
    "lots_mean_steps": "LOTS mean steps",
    "constant_map_pct": "constant maps %",
}


def _metric_row(summary: Mapping[str, float], digits: int) -> dict[str, float]:
    row = {column: round(summary[key], digits) for key, column in METRIC_COLUMNS.items()}
    row.update({column: round(summary[key], digits) for key, column in EXTRA_COLUMNS.items() if key in summary})
    return row


def lots_targets_table(
    summaries: Mapping[str, Mapping[str, float]], backbone: str, digits: int = 2, target_source: str | None = None
) -> pd.DataFrame:
    """Table 5.1: one row per LOTS target F_t, the five metrics in percent, on one backbone;
    ``target_source`` (e.g. "all 50000 train images") says where the class/mean F_t come from."""
    rows = []
    for target, summary in summaries.items():
        row = {"Model": backbone, "Target": TARGET_NAMES.get(target, target), **_metric_row(summary, digits)}
        if target_source is not None:
            row["F_t from"] = "-" if target == "zero" else target_source
        rows.append(row)
    return pd.DataFrame(rows)


def methods_table(summaries: Mapping[str, Mapping[str, Mapping[str, float]]], digits: int = 2) -> pd.DataFrame:
    """Table 5.2: per backbone, one row per method (thesis order, oldest first), metrics in percent."""
    rows = []
    for backbone, by_method in summaries.items():
        for method in sorted(by_method, key=_method_order):
            rows.append({"Model": backbone, "Method": DISPLAY_NAMES.get(method, method), **_metric_row(by_method[method], digits)})
    return pd.DataFrame(rows)


def timing_table(summaries: Mapping[str, Mapping[str, Mapping[str, float]]], digits: int = 2) -> pd.DataFrame:
    """Table 5.3: milliseconds per image, methods as rows and backbones as columns."""
    methods = sorted({m for by_method in summaries.values() for m in by_method}, key=_method_order)
    rows = []
    for method in methods:
        row = {"Method \\ Model": DISPLAY_NAMES.get(method, method)}
        for backbone, by_method in summaries.items():
            row[backbone] = round(by_method[method]["ms_per_image"], digits) if method in by_method else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def stage_tables(
    summaries: Mapping[str, Mapping[str, Mapping[str, float]]],
    targets: Mapping[str, Mapping[str, float]],
    per_image: list[dict],
    targets_backbone: str | None,
    target_source: str | None = None,
) -> dict[str, pd.DataFrame]:
    """The explain stage's tables by file name: Table 5.1 (only when LOTS targets were studied),
    Tables 5.2 and 5.3, and the per-image metric rows."""
    tables = {"table_5_1_lots_targets": lots_targets_table(targets, targets_backbone, target_source=target_source)} if targets else {}
    tables["table_5_2_methods"] = methods_table(summaries)
    tables["table_5_3_ms_per_image"] = timing_table(summaries)
    tables["per_image"] = pd.DataFrame(per_image)
    return tables


def _method_order(method: str) -> int:
    order = list(DISPLAY_NAMES)
    return order.index(method) if method in order else len(order)
