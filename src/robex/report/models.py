"""Report section `train`: the trained models' test metrics, the accuracies the papers state, and the
learning curves from the MLflow metric history."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from robex.report.document import NOT_RUN, Section, shown
from robex.report.figures import training_curves_figure
from robex.report.tables import read_json
from robex.tracking.queries import latest_finished_runs, metric_histories, run_param

KEY = "train"
TITLE = "Trained models"
FAMILIES = (("cifar", "Table: CIFAR-10 classifiers, test accuracy (acc) and loss"),
            ("c2f", "Table: CIFAR-10 coarse-to-fine classifier, coarse (vehicle/animal) and fine test accuracy"),
            ("double_mnist", "Table: DOUBLE-MNIST multi-label CNNs, exact-set accuracy (both digits right) and per-label accuracy"))


def family_of(name: str, table: pd.DataFrame) -> str:
    """Which kind of model a row is, by the metrics it has (each kind has its own columns)."""
    row = table[table["model"] == name].iloc[0]
    if "test/exact_set_acc" in row and row["test/exact_set_acc"] == row["test/exact_set_acc"]:
        return "double_mnist"
    if "test/fine_acc" in row and row["test/fine_acc"] == row["test/fine_acc"]:
        return "c2f"
    return "double_mnist" if name.startswith("double_mnist") else "cifar"


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
            row[f"{paper['metric']} (paper)"] = paper["value"]
        rows.append(row)
    if not rows:
        section.not_run(train_dir / "<name>" / "metrics.json", spec.get("command", "python -m robex.train"))
        return section
    section.ran = any(row["status"] == "trained" for row in rows)
    table = pd.DataFrame(rows)
    paper_columns = [c for c in table.columns if str(c).endswith(" (paper)")]
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
    sources = "; ".join(f"{name}: {' '.join(paper['source'].split())}" for name, paper in papers.items() if name in names)
    section.tables["test_metrics"] = table  # one CSV with every model; shown as one narrow table per kind of model
    for family, heading in FAMILIES:
        rows_of = table["model"].map(lambda name: family_of(name, table)) == family
        if rows_of.any():
            part = table[rows_of].dropna(axis=1, how="all")
            if (part["status"] == "trained").all():
                part = part.drop(columns=["status"])
            ours = [c for c in part.columns if f"{c} (paper)" in part.columns]  # each paper value right after ours
            part = part[[c for c in part.columns if not str(c).endswith(" (paper)")]]
            for column in ours:
                position = list(part.columns).index(column) + 1
                part.insert(position, f"{column} (paper)", table.loc[rows_of, f"{column} (paper)"])
            section.add_table(f"test_metrics_{family}", part, heading, options.get("max_table_rows"),
                              note=f"From `{shown(train_dir)}/<model>/metrics.json`." + (f" Paper: {sources}" if sources and family == "cifar" else ""))
    for family, _ in FAMILIES:  # the per-kind parts are views of test_metrics.csv, not CSVs of their own
        section.tables.pop(f"test_metrics_{family}", None)
    if any(histories.values()):
        section.figures.append((training_curves_figure(histories, monitors), "Training curves of every model: the monitored validation metric (left) and the train and validation loss (right) per epoch, from the MLflow metric history"))
    return section
