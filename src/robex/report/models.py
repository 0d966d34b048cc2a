"""Report section `train`: the trained models' test metrics, the accuracies the papers state, and the
learning curves from the MLflow metric history."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from robex.report.document import NOT_RUN, Section
from robex.report.figures import training_curves_figure
from robex.report.tables import read_json
from robex.tracking.queries import latest_finished_runs, metric_histories, run_param

KEY = "train"
TITLE = "Trained models"


def build_section(spec: Mapping, reference: Mapping, options: Mapping, tracking_uri: str | None = None) -> Section:
    """Test metrics of every trained model (``<train_dir>/<name>/metrics.json``) next to the papers'."""
    section = Section(KEY, TITLE)
    train_dir = Path(spec["dir"])
    names = spec.get("models") or sorted(p.parent.name for p in train_dir.glob("*/metrics.json"))
    rows, histories, monitors = [], {}, {}
    papers = reference.get("training", {})
    for name in names:
        metrics = read_json(train_dir / name / "metrics.json")
        if metrics is None:
            section.missing.append(str(train_dir / name / "metrics.json"))
            section.complete = False
            rows.append({"model": name, "status": NOT_RUN})
            continue
        row = {"model": name, "status": "trained", **{k: v for k, v in sorted(metrics.items())}}
        paper = papers.get(name)
        if paper:
            row["paper metric"], row["paper value"] = paper["metric"], paper["value"]
        rows.append(row)
    if not rows:
        section.not_run(train_dir / "<name>" / "metrics.json", spec.get("command", "python -m robex.train"))
        return section
    section.ran = any(row["status"] == "trained" for row in rows)
    table = pd.DataFrame(rows)
    paper_columns = [c for c in ("paper metric", "paper value") if c in table.columns]
    table = table[[c for c in table.columns if c not in paper_columns] + paper_columns]
    if tracking_uri:
        trained = [row["model"] for row in rows if row["status"] == "trained"]
        section.runs = [run for name in trained for run in latest_finished_runs(tracking_uri, spec.get("experiment", "robex-train"), [name])
                        if run["run_name"] == name]
        for run in section.runs:
            try:
                monitor = run_param(tracking_uri, run["run_id"], "data.monitor") or "val/acc"
                histories[run["run_name"]] = metric_histories(tracking_uri, run["run_id"], [monitor, "train/loss", "val/loss"])
                monitors[run["run_name"]] = monitor
            except Exception as error:  # noqa: BLE001 - curves are optional
                section.warnings.append(f"no metric history for {run['run_name']}: {error}")
    sources = "; ".join(f"{name}: {paper['source'].strip()}" for name, paper in papers.items() if name in names)
    section.add_table("test_metrics", table, "Test metrics (`outputs/train/<name>/metrics.json`)", options.get("max_table_rows"),
                      note=f"Paper values: {sources}" if sources else "")
    if any(histories.values()):
        section.figures.append((training_curves_figure(histories, monitors), "training curves (MLflow metric history)"))
    return section
