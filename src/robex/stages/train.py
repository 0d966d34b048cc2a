"""Stage `train`: fit one classifier (data x model x defense) and log it to MLflow.

    python -m robex.train data=cifar10 model=cifar_cnn trainer.max_epochs=30
    python -m robex.train -m defense=none,l0,pgd seed=0,1
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import hydra
import lightning as L
import mlflow
import pandas as pd
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from robex.models.io import save_model
from robex.tracking import log_metrics, mlflow_run
from robex.training.callbacks import MlflowEpochMetrics
from robex.training.config import validate
from robex.training.module import ClassifierModule
from robex.utils.errors import RobexError
from robex.utils.hydra import CONFIG_PATH, user_errors_exit

log = logging.getLogger("robex.train")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _check_resume(path: str | None) -> str | None:
    if not path:
        return None
    if not Path(path).is_file():
        raise RobexError(f"resume checkpoint {path!r} does not exist; pass an existing .ckpt (e.g. outputs/train/<name>/checkpoints/last.ckpt) or resume=null")
    try:
        torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - corrupt files fail in many ways
        raise RobexError(f"resume checkpoint {path!r} is corrupt ({type(error).__name__}); delete it or pass another .ckpt") from None
    return path


def train(cfg: DictConfig) -> dict[str, float]:
    validate(cfg)
    L.seed_everything(cfg.seed, workers=True)
    resume = _check_resume(cfg.get("resume"))
    out_dir = Path(cfg.paths.train_dir) / cfg.name
    out_dir.mkdir(parents=True, exist_ok=True)

    datamodule = instantiate(cfg.data.module)
    model_config = OmegaConf.to_container(cfg.model.net, resolve=True)
    model = instantiate(cfg.model.net, _convert_="all")
    module = ClassifierModule(
        model=model,
        task=cfg.data.task,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        defense=instantiate(cfg.defense.obj),
        augment=instantiate(cfg.data.augment) if cfg.data.get("augment") else None,
        robust_eval=OmegaConf.to_container(cfg.robust_eval, resolve=True) if cfg.get("robust_eval") else None,
    )

    with mlflow_run(cfg, experiment=cfg.tracking.experiment, run_name=cfg.name, tracking_uri=cfg.tracking.uri) as run:
        checkpoint = ModelCheckpoint(dirpath=out_dir / "checkpoints", filename="best", monitor=cfg.data.monitor, mode="max", save_last=True)
        epoch_metrics = MlflowEpochMetrics()
        callbacks = [checkpoint, epoch_metrics]
        if cfg.get("early_stopping_patience"):
            callbacks.append(EarlyStopping(monitor=cfg.data.monitor, mode="max", patience=int(cfg.early_stopping_patience)))
        trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=False, default_root_dir=str(out_dir))
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
        best = checkpoint.best_model_path or None
        results = trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)[0] if best else trainer.test(module, datamodule=datamodule, verbose=False)[0]
        metrics = {k: float(v) for k, v in results.items()}
        metrics["best_val"] = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else float("nan")
        metrics["parameters"] = float(sum(p.numel() for p in module.model.parameters()))
        log_metrics(metrics)

        save_model(module.model, out_dir / "model.pt", model_config, extra={"metrics": metrics, "run_id": run.info.run_id, "best_checkpoint": best})
        _write_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        _write_atomic(out_dir / "history.csv", pd.DataFrame(epoch_metrics.history_rows()).to_csv(index=False))
        mlflow.set_tag("best_checkpoint", str(best))
        mlflow.log_artifact(str(out_dir / "model.pt"), artifact_path="model")
        mlflow.log_artifact(str(out_dir / "metrics.json"))
        mlflow.log_artifact(str(out_dir / "history.csv"))
        log.info("test metrics: %s", json.dumps(metrics))
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
@user_errors_exit
def main(cfg: DictConfig) -> float:
    metrics = train(cfg)
    return metrics.get(cfg.data.monitor.replace("val/", "test/"), float("nan"))


if __name__ == "__main__":
    main()
