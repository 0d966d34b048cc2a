"""Tables I (coarse) and II (fine) of Heidarizadeh et al. in the paper's layout, our columns beside
the paper's (read from ``src/robex/report/paper_reference.yaml``), and the failure summary."""

from __future__ import annotations

import pandas as pd

TABLE_ROWS = {
    "rho_2": "rho_adv^2",
    "rho_1": "rho_adv^1",
    "rho_inf": "rho_adv^inf",
    "fooling_pct": "Fooling(%)",
    "top_relevance_share": "perturbation share on top-10% relevance",
    "mean_iterations": "mean iterations",
    "seconds_per_image": "seconds / image",
    "images": "images",
}
PAPER_TABLES = {"coarse": "table1_coarse", "fine": "table2_fine"}


def paper_table(summaries: dict[str, dict[str, float]], paper: dict[str, dict[str, float]] | None = None) -> pd.DataFrame:
    """One row per metric, one column per attack (in the given order); with ``paper`` (the
    ``columns`` block of a paper_reference table) each attack whose base label the paper reports
    ("LRPC eps=10" for "LRPC eps=10 (working)") gets a "<label> [paper]" column before its first
    own column, blank where the paper has no such row."""
    columns: dict[str, dict[str, float]] = {}
    for label, summary in summaries.items():
        base = label.split(" (")[0]
        if paper and base in paper and f"{base} [paper]" not in columns:
            columns[f"{base} [paper]"] = {key: paper[base].get(title) for key, title in TABLE_ROWS.items()}
        columns[label] = {key: summary.get(key) for key in TABLE_ROWS}
    rows = [{"Algorithm": title, **{label: values[key] for label, values in columns.items()}} for key, title in TABLE_ROWS.items()]
    return pd.DataFrame(rows)


def load_paper_columns(level: str) -> dict[str, dict[str, float]]:
    """The paper's Table I (``level="coarse"``) or II (``"fine"``) columns from paper_reference.yaml."""
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parents[1] / "report" / "paper_reference.yaml"
    reference = yaml.safe_load(path.read_text())
    return reference["c2f"][PAPER_TABLES[level]]["columns"]


def failure_summary_rows(failures: dict[str, dict[str, int]]) -> pd.DataFrame:
    """One row per attack and failure reason (empty frame when nothing failed)."""
    rows = [{"attack": label, "reason": reason, "images": count} for label, reasons in failures.items() for reason, count in reasons.items()]
    return pd.DataFrame(rows, columns=["attack", "reason", "images"])
