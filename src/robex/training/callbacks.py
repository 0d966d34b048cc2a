"""Lightning callbacks of the train stage: per-epoch MLflow metrics, and random-number state kept in
the checkpoint so a resumed run continues exactly where the interrupted one stopped."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch

from robex.tracking import log_metrics


class MlflowEpochMetrics(L.Callback):
    """Log every epoch-level metric Lightning collected, with the epoch as MLflow step.

    Used instead of Lightning's MLFlowLogger so that the stage owns the run (one run per stage,
    ended FAILED on errors) and no logger can fall back to ``file:./mlruns``. The history is part
    of the checkpoint (``state_dict``), so a resumed run's ``history.csv`` holds every epoch.
    """

    def __init__(self) -> None:
        self.history: dict[int, dict[str, float]] = {}

    def _log(self, trainer: L.Trainer, prefix: str) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix)}
        log_metrics(metrics, step=trainer.current_epoch)
        self.history.setdefault(trainer.current_epoch, {}).update(metrics)

    def history_rows(self) -> list[dict[str, float]]:
        """One row per epoch (for DVC plots): {'epoch': e, 'train/loss': ..., 'val/acc': ...}."""
        return [{"epoch": epoch, **values} for epoch, values in sorted(self.history.items())]

    def on_train_epoch_end(self, trainer, pl_module):
        self._log(trainer, "train/")

    def on_validation_epoch_end(self, trainer, pl_module):
        self._log(trainer, "val/")

    def state_dict(self) -> dict[str, Any]:
        return {"history": {int(k): dict(v) for k, v in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {int(k): dict(v) for k, v in state_dict.get("history", {}).items()}


class ResumableRandomness(L.Callback):
    """Save every random-number state training draws from in the checkpoint; restore it when the
    first resumed epoch starts.

    Lightning restores weights, optimizer, epoch and callbacks but not random states, and the
    train loader is rebuilt with a freshly seeded generator, so without this a resumed run shuffles
    epoch k like epoch 0 and its augmentation/defense draws repeat. Restoring at
    ``on_train_epoch_start`` (after the sanity check, before the epoch's loader iterator is
    created) makes the resumed run draw exactly what the uninterrupted run draws. States are taken
    when the checkpoint is written, i.e. after validation of the epoch (the last checkpoint is
    saved at validation end).
    """

    def __init__(self) -> None:
        self._trainer: L.Trainer | None = None
        self._pending: dict[str, Any] | None = None

    @staticmethod
    def _generators(trainer: L.Trainer) -> dict[str, torch.Generator]:
        module = trainer.lightning_module
        found = {}
        for name in ("augment", "defense"):
            generator = getattr(getattr(module, name, None), "generator", None)
            if isinstance(generator, torch.Generator):
                found[name] = generator
        loaders = trainer.train_dataloader
        if isinstance(loaders, dict):
            loaders = list(loaders.values())
        elif not isinstance(loaders, (list, tuple)):
            loaders = [loaders] if loaders is not None else []
        for index, dataloader in enumerate(loaders):
            generator = getattr(dataloader, "generator", None)
            if isinstance(generator, torch.Generator):
                found[f"train_loader_{index}"] = generator
        return found

    def setup(self, trainer, pl_module, stage):
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        # tensors, ints and tuples only: Lightning loads checkpoints with torch.load(weights_only=True)
        kind, keys, position, has_gauss, cached = np.random.get_state()
        numpy_state = (kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached))
        state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
        if self._trainer is not None:
            state["generators"] = {name: g.get_state() for name, g in self._generators(self._trainer).items()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_epoch_start(self, trainer, pl_module):
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        torch.set_rng_state(state["torch"])
        kind, keys, position, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
        random.setstate(state["python"])
        generators = self._generators(trainer)
        for name, generator_state in state.get("generators", {}).items():
            if name in generators:
                generators[name].set_state(generator_state)
                if name.startswith("train_loader"):
                    # In the uninterrupted run the epoch's loader iterator is created after this hook and
                    # first draws its base seed from the loader generator (torch's _BaseDataLoaderIter),
                    # then the sampler's permutation. In a resumed run that iterator was already created
                    # (FitLoop.setup_data) from the fresh generator; replay the base-seed draw so the
                    # permutation comes from the same position. The resume test checks this bitwise.
                    torch.empty((), dtype=torch.int64).random_(generator=generators[name])
