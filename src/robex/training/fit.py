"""Fit, test and checkpoint one classifier (the loop behind ``python -m robex.train``).

Plain arguments only (a LightningModule, a DataModule, a Trainer factory): a notebook can call
:func:`fit_and_test` as the stage does. Checkpoints live in ``<out_dir>/checkpoints/``:

- ``last.ckpt``: rewritten after every epoch (no monitor), so a killed run loses at most one epoch;
- ``best.ckpt``: the best epoch by the monitored validation metric;
- ``mlflow_run.json``: the MLflow run the checkpoints belong to, so a resumed run continues it.

A second run with the same name overwrites these files (never ``last-v1.ckpt``); ``resume=last``
finds ``last.ckpt`` of the run's own folder.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from robex.utils.errors import RobexError
from robex.utils.io import atomic_write_json

RUN_FILE = "mlflow_run.json"


@dataclass
class FitResult:
    metrics: dict[str, float]
    best_checkpoint: str | None
    history: list[dict[str, float]] = field(default_factory=list)


def resolve_resume(resume: str | None, checkpoint_dir: Path) -> Path | None:
    """``None``/``''`` -> None; ``last`` -> the run's own ``last.ckpt``; a path -> that file, checked."""
    if resume in (None, "", "null", "none"):
        return None
    path = checkpoint_dir / "last.ckpt" if str(resume) == "last" else Path(str(resume))
    if not path.is_file():
        hint = f"no run with this name saved {str(path)!r} yet; train without resume first" if str(resume) == "last" else f"{str(path)!r} does not exist"
        raise RobexError(f"resume={resume}: {hint}; pass resume=last, the path of an existing .ckpt, or resume=null")
    return path


def load_checkpoint(path: Path, module: torch.nn.Module) -> dict[str, Any]:
    """Read a Lightning checkpoint and check it holds this network: one sentence otherwise."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
        state = blob["state_dict"]
    except Exception as error:  # noqa: BLE001 - corrupt files fail in many ways
        raise RobexError(f"resume checkpoint {str(path)!r} is corrupt ({type(error).__name__}); delete it or pass another .ckpt") from None
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    mismatched = sorted(k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k))
    if mismatched:
        key = mismatched[0]
        raise RobexError(
            f"resume checkpoint {str(path)!r} holds another network ({len(mismatched)} tensors differ, e.g. {key}: "
            f"{found.get(key, 'absent')} in the file vs {expected.get(key, 'absent')} here); resume with the model= it was trained with, or resume=null"
        )
    return blob


def previous_run(checkpoint_dir: Path) -> dict[str, str]:
    """The MLflow run recorded beside the checkpoints (``{}`` if none)."""
    path = checkpoint_dir / RUN_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def remember_run(checkpoint_dir: Path, run_id: str, tracking_uri: str, experiment: str) -> None:
    atomic_write_json({"run_id": run_id, "tracking_uri": tracking_uri, "experiment": experiment}, checkpoint_dir / RUN_FILE)


def check_batch_sizes(batch_sizes: dict[str, Any]) -> None:
    """DataLoader's own error for batch_size=0 names no key; this one does."""
    for key, value in batch_sizes.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise RobexError(f"{key}={value!r} must be a whole number >= 1, e.g. {key}=128")


def check_model_fits_data(model: torch.nn.Module, datamodule: L.LightningDataModule, data_name: str, model_name: str) -> None:
    """One forward pass on one training image, so a model built for other inputs fails with one
    sentence before training starts (not a shape error deep in the first step)."""
    import pickle
    import zipfile

    try:
        datamodule.setup("fit")
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, RuntimeError) as error:
        where = getattr(datamodule, "prepared_dir", None) or getattr(datamodule, "root", None)
        raise RobexError(
            f"the prepared data of data={data_name} under {str(where)!r} cannot be read ({type(error).__name__}); "
            "re-create it with `python -m robex.prepare`"
        ) from None
    images, targets = next(iter(torch.utils.data.DataLoader(datamodule.train_set, batch_size=2)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            outputs = model(images)
    except RuntimeError as error:
        raise RobexError(
            f"model={model_name} does not accept data={data_name} images of shape {tuple(images.shape[1:])} "
            f"({str(error).splitlines()[0][:120]}); choose a model made for this data"
        ) from None
    finally:
        model.train(was_training)
    if isinstance(outputs, torch.Tensor) and targets.ndim == 2 and outputs.shape[-1] != targets.shape[-1]:
        raise RobexError(f"model={model_name} has {outputs.shape[-1]} outputs but data={data_name} has {targets.shape[-1]} labels; choose a model made for this data")


def fit_and_test(
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    make_trainer: Callable[[list[L.Callback]], L.Trainer],
    checkpoint_dir: Path,
    monitor: str,
    resume: Path | None = None,
    early_stopping_patience: int | None = None,
) -> FitResult:
    """Train (resuming from ``resume`` if given), then test the best checkpoint."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from robex.training.callbacks import MlflowEpochMetrics, ResumableRandomness

    best = ModelCheckpoint(dirpath=checkpoint_dir, filename="best", monitor=monitor, mode="max", save_top_k=1, enable_version_counter=False)
    last = ModelCheckpoint(dirpath=checkpoint_dir, filename="last", monitor=None, save_top_k=1, enable_version_counter=False)
    epochs = MlflowEpochMetrics()
    callbacks: list[L.Callback] = [epochs, ResumableRandomness(), best, last]
    if early_stopping_patience:
        if int(early_stopping_patience) < 1:
            raise RobexError(f"early_stopping_patience={early_stopping_patience} must be >= 1 epochs, or null to train all epochs")
        callbacks.append(EarlyStopping(monitor=monitor, mode="max", patience=int(early_stopping_patience)))
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        trainer = make_trainer(callbacks)
    except Exception as error:
        # Hydra wraps the Trainer's own complaint (an unknown accelerator, a missing torch_xla ...)
        cause = error if isinstance(error, MisconfigurationException) else error.__cause__
        if not isinstance(cause, (MisconfigurationException, ImportError)):
            raise
        reason = " ".join(str(cause).split())[:300]
        raise RobexError(f"the trainer settings do not work on this machine ({reason}); check trainer.accelerator, trainer.devices, trainer.strategy and trainer.precision") from None
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
    except SystemExit as exit_:
        # Lightning turns a KeyboardInterrupt (our SIGTERM/SIGINT) into sys.exit(1) after its own
        # shutdown; give it back its meaning so the MLflow run ends KILLED and the exit code says why
        from robex.utils.errors import StageStopped
        from robex.utils.hydra import stop_signal

        signum = stop_signal()
        if signum is None:
            raise
        raise StageStopped(signum) from exit_
    best_path = best.best_model_path or None
    history = epochs.history_rows()  # before test: loading best.ckpt restores the callbacks' older states
    trained_epochs = trainer.current_epoch
    results = trainer.test(module, datamodule=datamodule, ckpt_path=best_path, verbose=False)[0]
    metrics = {k: float(v) for k, v in results.items()}
    if best.best_model_score is not None:
        metrics["best_val"] = float(best.best_model_score)
    metrics["epochs"] = float(trained_epochs)
    metrics["parameters"] = float(sum(p.numel() for p in module.parameters()))
    return FitResult(metrics, best_path, history)


def finite(metrics: dict[str, float]) -> dict[str, float]:
    """Only finite numbers: DVC (``dvc exp show``) and JSON readers reject NaN."""
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}


def write_outputs(out_dir: Path, model: torch.nn.Module, model_config: dict, metrics: dict[str, float], history: list[dict[str, float]],
                  extra: dict[str, Any], title: str) -> dict[str, Path]:
    """The train stage's DVC outputs, each written atomically (unique temp names: parallel sweep jobs
    never race): model.pt, metrics.json (flat finite numbers), history.csv, training_curves.png."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from robex.models.io import save_model
    from robex.training.curves import plot_training_curves
    from robex.utils.io import atomic_write_text

    paths = {name: Path(out_dir) / name for name in ("model.pt", "metrics.json", "history.csv", "training_curves.png")}
    save_model(model, paths["model.pt"], model_config, extra={"metrics": metrics, **extra})
    atomic_write_json(finite(metrics), paths["metrics.json"])
    atomic_write_text(pd.DataFrame(history).to_csv(index=False), paths["history.csv"])
    figure = plot_training_curves(history, title)
    staging = paths["training_curves.png"].with_name(f".training_curves.{os.getpid()}.png")
    figure.savefig(staging, dpi=150, bbox_inches="tight")
    plt.close(figure)
    os.replace(staging, paths["training_curves.png"])
    return paths
