"""MLflow helpers: explicit tracking URI, flattened params, tags, FAILED on errors."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from robex.utils.errors import RobexError, StageStopped

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
_MAX_PARAM_LENGTH = 6000


def resolve_tracking_uri(configured: str | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` wins, then the config value, then ``sqlite:///mlflow.db``.

    Always explicit: MLflow's own fallback (``file:./mlruns``) is refused by MLflow >= 3.13.
    """
    return os.environ.get("MLFLOW_TRACKING_URI") or configured or DEFAULT_TRACKING_URI


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}, 'c': [2, 3]} -> {'a.b': 1, 'c': '[2, 3]'}; lists stay one param."""
    if isinstance(tree, Mapping):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: str(tree)[:_MAX_PARAM_LENGTH]}


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _sweep_tags() -> dict[str, str]:
    """Sweep id and job overrides from Hydra, when running under it."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
    except Exception:  # noqa: BLE001 - not inside a Hydra app
        return {}
    tags = {"hydra.mode": str(hydra_cfg.mode.name if hydra_cfg.mode else "RUN")}
    overrides = list(hydra_cfg.overrides.task)
    tags["hydra.overrides"] = " ".join(overrides) or "(none)"
    if hydra_cfg.mode and hydra_cfg.mode.name == "MULTIRUN":
        tags["sweep_id"] = os.environ.get("ROBEX_SWEEP_ID") or str(hydra_cfg.sweep.dir)
        tags["hydra.job_num"] = str(hydra_cfg.job.num)
    parent = os.environ.get("ROBEX_PARENT_RUN_ID")
    if parent:
        tags["mlflow.parentRunId"] = parent
    return tags


# SIGTERM/SIGINT raise this inside a stage (kept under its old name for callers that catch it)
StageTerminated = StageStopped


@contextlib.contextmanager
def mlflow_run(
    config: Mapping | None,
    experiment: str,
    run_name: str | None = None,
    tracking_uri: str | None = None,
    tags: Mapping[str, str] | None = None,
    resume_run_id: str | None = None,
) -> Iterator[Any]:
    """Start a run, log the config (flattened as params, and whole as ``config.yaml``) and tags;
    end FINISHED, or FAILED on any exception.

    ``config`` is a plain dict or a DictConfig (resolved here). KeyboardInterrupt ends the run
    KILLED, and so does SIGTERM (turned into :class:`StageTerminated`), so no run is left RUNNING
    unless the process is SIGKILLed. ``resume_run_id`` continues that run (a resumed training):
    params it already has keep their first value; changed ones are listed in the tag
    ``robex.resume_changed_params``.
    """
    import mlflow
    from omegaconf import DictConfig, OmegaConf

    from robex.utils.hydra import handle_stop_signals

    uri = check_tracking_uri(resolve_tracking_uri(tracking_uri))
    mlflow.set_tracking_uri(uri)
    _set_experiment(mlflow, experiment, uri)
    plain = OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else dict(config or {})
    all_tags = {"git_commit": git_commit(), "stage": experiment, **_sweep_tags(), **dict(tags or {})}
    if all_tags.get("hydra.mode") == "MULTIRUN":
        # inside a sweep, runs are told apart by what the sweep varied
        swept = set(filter(None, os.environ.get("ROBEX_SWEPT_KEYS", "").split(",")))
        varied = [o for o in all_tags.get("hydra.overrides", "").split() if o.partition("=")[0].lstrip("+~") in swept]
        run_name = " ".join(varied) or run_name
    run = _start_run(mlflow, run_name, all_tags, uri, resume_run_id)
    try:
        with handle_stop_signals():
            params = flatten(plain)
            if resume_run_id and run.info.run_id == resume_run_id:
                params = _new_params(mlflow, run, params)
                mlflow.set_tags({k: v for k, v in all_tags.items() if not k.startswith("mlflow.")})
            items = list(params.items())
            for start in range(0, len(items), 100):  # MLflow caps a batch at 100 params
                mlflow.log_params(dict(items[start : start + 100]))
            if plain:
                # the resolved config as one file too: readable in the UI and rerunnable (`--config-dir`)
                mlflow.log_dict(plain, "config.yaml")
            yield run
    except KeyboardInterrupt:
        mlflow.end_run(status="KILLED")
        raise
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")


_SCHEMES = ("sqlite", "file", "http", "https", "databricks", "postgresql", "mysql", "mssql")


def check_tracking_uri(uri: str) -> str:
    """Refuse URIs MLflow cannot use before it tries (unknown scheme, sqlite file in a folder that
    cannot hold one), so the message names the URI and the fix instead of a traceback."""
    from urllib.parse import urlparse

    fix = "set tracking.uri (or MLFLOW_TRACKING_URI) to e.g. sqlite:///mlflow.db or http://host:5000"
    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+")[0]
    if scheme not in _SCHEMES:
        raise RobexError(f"tracking URI {uri!r} has an unsupported scheme {parsed.scheme!r}; {fix}")
    if scheme == "sqlite":
        path = Path(uri.split("sqlite:///", 1)[1]) if uri.startswith("sqlite:///") else None
        if path is None or not str(path):
            raise RobexError(f"tracking URI {uri!r} names no database file; {fix}")
        # open it as MLflow will (os.access says yes to root everywhere, even in /proc): MLflow itself
        # would retry an unopenable database for minutes before its traceback
        import sqlite3

        try:
            with contextlib.closing(sqlite3.connect(path, timeout=5)) as connection:
                connection.execute("pragma schema_version")
        except sqlite3.Error as error:
            raise RobexError(f"tracking URI {uri!r}: cannot create or write the database {str(path)!r} ({error}); choose a writable folder, {fix}") from None
    return uri


# what a client error means, in words: requests/urllib3 bury it in a long exception chain
_NETWORK_CAUSES = (
    ("Connection refused", "connection refused: nothing listens there"),
    ("Name or service not known", "unknown host name"), ("nodename nor servname", "unknown host name"),
    ("Temporary failure in name resolution", "unknown host name"),
    ("timed out", "no answer in time"), ("Timeout", "no answer in time"),
    ("Network is unreachable", "network unreachable"), ("No route to host", "no route to host"),
)


def _unreachable(uri: str, error: BaseException) -> RobexError:
    text = str(error)
    cause = next((words for marker, words in _NETWORK_CAUSES if marker in text), None)
    if cause is None:
        cause = (text.splitlines()[0] if text else type(error).__name__)[:200]
    return RobexError(f"MLflow tracking server {uri!r} is not usable ({cause}); start it, or set tracking.uri (or MLFLOW_TRACKING_URI) to a reachable server or sqlite:///mlflow.db")


def _set_experiment(mlflow, experiment: str, uri: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        mlflow.set_experiment(experiment)
    except (MlflowException, OSError) as error:
        raise _unreachable(uri, error) from error


def _start_run(mlflow, run_name, tags, uri, resume_run_id=None):
    import logging

    from mlflow.exceptions import MlflowException

    try:
        if resume_run_id:
            try:
                mlflow.get_run(resume_run_id)
            except MlflowException:
                logging.getLogger("robex.tracking").warning("MLflow run %s (recorded beside the checkpoint) is not in %s; starting a new run", resume_run_id, uri)
            else:
                return mlflow.start_run(run_id=resume_run_id)
        return mlflow.start_run(run_name=run_name, tags=tags)
    except (MlflowException, OSError) as error:
        raise _unreachable(uri, error) from error


def _new_params(mlflow, run, params: dict[str, Any]) -> dict[str, Any]:
    """MLflow refuses to change a logged param: keep the first values, tag the changed keys."""
    existing = mlflow.get_run(run.info.run_id).data.params
    changed = sorted(k for k, v in params.items() if k in existing and existing[k] != str(v))
    if changed:
        mlflow.set_tag("robex.resume_changed_params", " ".join(f"{k}={params[k]}" for k in changed)[:5000])
    return {k: v for k, v in params.items() if k not in existing}


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    import math

    import mlflow

    clean = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
    if clean:
        mlflow.log_metrics(clean, step=step)


def log_table(frame, artifact_name: str, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write a pandas DataFrame as CSV and Markdown (to ``out_dir`` if given) and log both."""
    import mlflow

    artifact_path, _, stem = artifact_name.rpartition("/")
    target = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp())
    target.mkdir(parents=True, exist_ok=True)
    paths = {"csv": target / f"{stem}.csv", "md": target / f"{stem}.md"}
    frame.to_csv(paths["csv"], index=False)
    paths["md"].write_text(frame.to_markdown(index=False, floatfmt=".4g") + "\n")
    if mlflow.active_run() is not None:
        for path in paths.values():
            mlflow.log_artifact(str(path), artifact_path=artifact_path or None)
    return paths


def log_figure(figure, artifact_name: str, out_path: str | Path | None = None, dpi: int = 150) -> Path:
    """Save a matplotlib figure as PNG (to ``out_path`` if given) and log it; closes the figure."""
    import matplotlib.pyplot as plt
    import mlflow

    path = Path(out_path) if out_path is not None else Path(tempfile.mkdtemp()) / Path(artifact_name).name
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    if mlflow.active_run() is not None:
        artifact_path = str(Path(artifact_name).parent)
        mlflow.log_artifact(str(path), artifact_path=None if artifact_path == "." else artifact_path)
    return path
