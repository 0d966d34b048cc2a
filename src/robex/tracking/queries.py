"""Read-only MLflow queries (the report's): which runs produced a stage's outputs, their metric histories.

Not exempt from the DVC deps (unlike the logging helpers in ``mlflow_utils``): what these return is
written into the report.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

log = logging.getLogger("robex.tracking")


def latest_finished_runs(tracking_uri: str, experiment: str, run_names: Iterable[str] | None = None) -> list[dict[str, str]]:
    """The newest FINISHED run of ``experiment`` (or, with ``run_names``, the newest of each name;
    if none of the names exists, the newest run of the experiment). Sweep parent runs are skipped.
    Returns [] when the experiment does not exist or the store cannot be read."""
    import mlflow
    import pandas as pd

    try:
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return []
        runs = client.search_runs([found.experiment_id], filter_string="attributes.status = 'FINISHED'",
                                  order_by=["attributes.start_time DESC"], max_results=1000)
    except Exception as error:  # noqa: BLE001 - a broken store must not stop the report
        log.warning("could not read MLflow runs of %s from %s: %s", experiment, tracking_uri, error)
        return []
    runs = [run for run in runs if run.data.tags.get("robex.sweep_parent") != "true"]
    chosen = []
    if run_names:
        for name in run_names:
            newest = next((run for run in runs if run.info.run_name == name), None)
            if newest is not None:
                chosen.append(newest)
    if not chosen and runs:
        chosen = [runs[0]]
    return [
        {"experiment": experiment, "run_name": run.info.run_name or "", "run_id": run.info.run_id,
         "git_commit": run.data.tags.get("git_commit", ""),
         "started": pd.Timestamp(run.info.start_time, unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M UTC")}
        for run in chosen
    ]


def metric_histories(tracking_uri: str, run_id: str, keys: Iterable[str]) -> dict[str, list[tuple[int, float]]]:
    """Per metric key, the (step, value) history logged in one run (missing keys are left out)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    histories = {}
    for key in keys:
        points = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        if points:
            histories[key] = points
    return histories


def run_param(tracking_uri: str, run_id: str, name: str) -> str | None:
    """One logged parameter of a run (None if it was not logged)."""
    import mlflow

    return mlflow.MlflowClient(tracking_uri=tracking_uri).get_run(run_id).data.params.get(name)
