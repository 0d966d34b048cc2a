"""DVC outputs and MLflow artifacts of the verify stage: per-image heatmaps while the loop runs, then the
tables, summary figures and headline metrics from its rows (plain rows and a staging folder, no config)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch


def heatmap_logger(images: torch.Tensor, staging: Path) -> Callable:
    """The ``on_image`` callback of :func:`robex.verify.runner.verify_models`: one eps* heatmap per image,
    logged to MLflow and written to ``staging/figures/heatmap_<defense>_<index>.png``."""
    from robex.tracking import log_figure
    from robex.verify.figures import eps_heatmap

    def heatmap(defense, index, target, layers, eps_by_variant):
        figure = eps_heatmap(images[index, 0].numpy(), layers, eps_by_variant, f"{defense}: image {index}, target {target}")
        log_figure(figure, f"figures/heatmap_{defense}_{index}.png", staging / "figures" / f"heatmap_{defense}_{index}.png")

    return heatmap


def write_outputs(rows: list[dict], queries: list[dict], staging: Path) -> dict[str, float]:
    """Tables ``per_image``, ``per_model`` and ``queries``, the size distribution and eps* profile figures and
    ``metrics.json`` under ``staging``, all logged to the active MLflow run; returns the headline metrics."""
    import pandas as pd

    from robex.tracking import log_figure, log_metrics, log_table
    from robex.utils.io import atomic_write_json
    from robex.verify.figures import eps_profiles, size_distribution
    from robex.verify.tables import eps_columns, per_model_table, summary_metrics

    per_image, query_table = pd.DataFrame(rows), pd.DataFrame(queries)
    per_model = per_model_table(per_image)
    metrics = summary_metrics(per_image, query_table, per_model)
    log_metrics(metrics)
    for frame, name in ((per_image, "per_image"), (per_model, "per_model"), (query_table, "queries")):
        log_table(frame, f"tables/{name}", staging)
    log_figure(size_distribution(per_image), "figures/size_distribution.png", staging / "figures" / "size_distribution.png")
    log_figure(eps_profiles(per_image, eps_columns(per_image)), "figures/eps_profiles.png", staging / "figures" / "eps_profiles.png")
    atomic_write_json(metrics, staging / "metrics.json", sort_keys=False)
    return metrics
