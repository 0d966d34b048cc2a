"""Tables and headline metrics of the verify stage, from the per-image rows and oracle records."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

FINAL_ROBUST = ("robust", "trivial (eps = 0)")  # a re-verified eps*, or eps* = 0 (nothing to re-verify)


def query_rows(defense: str, image: int, variant: str, records: Sequence) -> list[dict]:
    """One row per oracle query of one search: who answered it, how long it took, the MILP size."""
    return [
        {
            "defense": defense, "image": image, "variant": variant, "query": number,
            "answered_by": record.answered_by, "verdict": record.verdict.value, "seconds": record.seconds,
            "milp_seconds": record.milp_seconds, "milp_status": record.milp_status, "backend": record.backend,
            "milp_variables": record.milp_variables, "milp_binaries": record.milp_binaries,
            "eps_max": float(record.eps.max()), "objective_upper": record.objective_upper, "proved_by": record.proved_by,
            "attack_seconds": record.details.get("attack_seconds", 0.0), "bounds_seconds": record.details.get("bounds_seconds", 0.0),
            "escalated": bool(record.details.get("escalated", False)),
        }
        for number, record in enumerate(records)
    ]


def eps_columns(per_image: pd.DataFrame) -> list[str]:
    """The ``eps_<d>`` columns in layer order (d = 0, 1, ...)."""
    return sorted([c for c in per_image.columns if c.startswith("eps_")], key=lambda c: int(c.split("_")[1]))


def per_model_table(per_image: pd.DataFrame) -> pd.DataFrame:
    """Per defense and search variant: neighbourhood size statistics, queries, share without MILP, time."""
    return (
        per_image.groupby(["defense", "variant"])
        .agg(images=("size", "size"), size_mean=("size", "mean"), size_median=("size", "median"), size_min=("size", "min"),
             size_max=("size", "max"), queries_mean=("queries", "mean"), share_without_milp=("share_without_milp", "mean"),
             seconds_mean=("seconds", "mean"))
        .reset_index()
    )


def summary_metrics(per_image: pd.DataFrame, queries: pd.DataFrame, per_model: pd.DataFrame) -> dict[str, float]:
    """Headline numbers: mean size and queries, share of queries answered without a MILP, MILP time
    quantiles, share of eps* confirmed by the exact MILP, and the mean size per defense and variant."""
    milp = queries["milp_seconds"].dropna() if len(queries) else pd.Series(dtype=float)
    metrics = {
        "images": float(len(per_image)),
        "size_mean": float(per_image["size"].mean()),
        "queries_mean": float(per_image["queries"].mean()),
        "share_without_milp": float((queries["answered_by"] != "milp").mean()) if len(queries) else 1.0,
        "milp_seconds_median": float(milp.median()) if len(milp) else 0.0,
        "milp_seconds_p95": float(milp.quantile(0.95)) if len(milp) else 0.0,
        "final_robust_share": float((per_image["final_verdict"].isin(list(FINAL_ROBUST))).mean()),
        # condition 2 of Sect. 2: share of single-layer increments eps* + tolerance e_d refuted (median over images)
        "refuted_share_median": float(per_image["refuted_share"].median()) if "refuted_share" in per_image else float("nan"),
    }
    if len(queries) and "milp_status" in queries:
        asked = queries["milp_status"].dropna()
        metrics["milp_decided_share"] = float(asked.isin(["optimal", "positive", "negative"]).mean()) if len(asked) else 1.0
    for _, entry in per_model.iterrows():
        metrics[f"size_mean.{entry.defense}.{entry.variant}"] = float(entry.size_mean)
    return metrics

