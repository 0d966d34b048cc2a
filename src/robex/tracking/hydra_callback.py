"""Hydra callback: one MLflow parent run per multirun, so a sweep shows up as one group.

``on_multirun_start`` opens the parent run and exports its id; every job's run (opened by
:func:`robex.tracking.mlflow_run`) then carries ``mlflow.parentRunId`` and is nested under it in
the MLflow UI. Hydra only *warns* when a callback raises, so failures here must not pass
silently: they are logged loudly and the tests check the grouping really happens.

The parent never stays RUNNING: Hydra skips ``on_multirun_end`` when a job fails (the sweep stops
at the first failed job, and a job config that does not compose stops it before any job runs),
so an ``atexit`` hook ends the parent FAILED, or KILLED when SIGTERM/SIGINT stopped the sweep
(``robex.utils.hydra`` turns those signals into an exception in the sweep's process too).
"""

from __future__ import annotations

import atexit
import logging
import os
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("robex.tracking")
PARENT_ENV = "ROBEX_PARENT_RUN_ID"
SWEEP_ENV = "ROBEX_SWEEP_ID"
SWEPT_KEYS_ENV = "ROBEX_SWEPT_KEYS"


def swept_keys(overrides: list[str]) -> list[str]:
    """Keys a sweep varies: `a=1,2`, `b=range(3)`, `c=choice(x,y)`, `d=glob(*)`."""
    keys = []
    for override in overrides:
        key, _, value = override.partition("=")
        if "," in value or value.startswith(("range(", "choice(", "glob(", "interval(")):
            keys.append(key.lstrip("+~"))
    return keys


class MlflowSweepParent(Callback):
    def __init__(self) -> None:
        self.parent_id: str | None = None
        self.client = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        import mlflow

        from robex.tracking.mlflow_utils import git_commit, resolve_tracking_uri

        uri = resolve_tracking_uri(OmegaConf.select(config, "tracking.uri"))
        try:
            experiment = OmegaConf.select(config, "tracking.experiment")
        except Exception:  # noqa: BLE001 - ${hydra:...} may not resolve before the first job
            experiment = None
        experiment = experiment or f"robex-{config.hydra.job.name}"
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        sweep_id = str(config.hydra.sweep.dir)
        sweep_args = " ".join(config.hydra.overrides.task)
        parent = self.client.create_run(
            experiment_id,
            run_name=f"sweep {sweep_args}".strip(),
            tags={"sweep_id": sweep_id, "robex.sweep_parent": "true", "git_commit": git_commit(), "hydra.overrides": sweep_args},
        )
        self.parent_id = parent.info.run_id
        self._ended = False
        atexit.register(self._end_unfinished)
        from robex.utils.hydra import install_stop_handlers

        install_stop_handlers()
        os.environ[PARENT_ENV] = self.parent_id
        os.environ[SWEEP_ENV] = sweep_id
        os.environ[SWEPT_KEYS_ENV] = ",".join(swept_keys(list(config.hydra.overrides.task)))
        log.info("MLflow sweep parent run %s in experiment %s", self.parent_id, experiment)

    def _children(self) -> list:
        return self.client.search_runs(
            [self.client.get_run(self.parent_id).info.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_id}'",
        )

    def _end(self, status: str) -> None:
        if self.parent_id and self.client is not None and not getattr(self, "_ended", True):
            self._ended = True
            self.client.set_terminated(self.parent_id, status=status)
            log.info("MLflow sweep parent run %s ended %s", self.parent_id, status)

    def _end_unfinished(self) -> None:
        """atexit: the sweep ended without on_multirun_end (a job failed, or the sweep was stopped)."""
        from robex.utils.hydra import stop_requested

        try:
            killed = stop_requested() or any(run.info.status == "KILLED" for run in self._children())
            self._end("KILLED" if killed else "FAILED")
        except Exception:  # noqa: BLE001 - the store may be gone at exit; nothing left to do
            log.warning("could not end MLflow sweep parent run %s", self.parent_id, exc_info=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent_id and self.client is not None:
            children = self._children()
            failed = any(run.info.status != "FINISHED" for run in children)
            self._end("FAILED" if failed or not children else "FINISHED")
        os.environ.pop(PARENT_ENV, None)
        os.environ.pop(SWEEP_ENV, None)
        os.environ.pop(SWEPT_KEYS_ENV, None)
