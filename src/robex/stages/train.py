"""Stage `train`: fit one classifier (data x model x defense), test its best epoch, log it to MLflow.

    python -m robex.train data=cifar10 model=cifar_cnn trainer.max_epochs=30
    python -m robex.train -m defense=none,l0,pgd seed=0,1     (one output folder per job)
    python -m robex.train name=<name> trainer.max_epochs=10 resume=last   (continue a killed run)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from robex.utils.hydra import CONFIG_PATH, job_output_name, run_stage

log = logging.getLogger("robex.train")


def run(cfg: DictConfig) -> dict[str, float]:
    import lightning as L
    import mlflow
    import pandas as pd
    from hydra.utils import instantiate

    from robex.models.io import save_model
    from robex.schemas.train import validate
    from robex.tracking import log_figure, log_metrics, mlflow_run, resolve_tracking_uri
    from robex.training import fit
    from robex.training.curves import plot_training_curves
    from robex.training.module import ClassifierModule
    from robex.utils.io import atomic_write_json, atomic_write_text

    validate(cfg)
    fit.check_batch_sizes({f"data.module.{k}": cfg.data.module.get(k) for k in ("batch_size", "eval_batch_size")})
    name = job_output_name(cfg.name, OmegaConf.to_container(cfg, resolve=False)["name"])
    out_dir, checkpoints = Path(cfg.paths.train_dir) / name, Path(cfg.paths.train_dir) / name / "checkpoints"
    resume = fit.resolve_resume(cfg.get("resume"), checkpoints)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, model = instantiate(cfg.data.module), instantiate(cfg.model.net, _convert_="all")
    fit.check_model_fits_data(model, datamodule, cfg.data.name, cfg.model.name)
    module = ClassifierModule(
        model, cfg.data.task, instantiate(cfg.optimizer), instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        defense=instantiate(cfg.defense.obj), augment=instantiate(cfg.data.augment) if cfg.data.get("augment") else None,
        robust_eval=OmegaConf.to_container(cfg.robust_eval, resolve=True) if cfg.get("robust_eval") else None,
    )
    if resume:
        fit.load_checkpoint(resume, module)
    uri = resolve_tracking_uri(cfg.tracking.uri)
    earlier = fit.previous_run(resume.parent) if resume else {}
    with mlflow_run(cfg, cfg.tracking.experiment, name, uri, resume_run_id=earlier.get("run_id") if earlier.get("tracking_uri") == uri else None) as active:
        fit.remember_run(checkpoints, active.info.run_id, uri, cfg.tracking.experiment)
        result = fit.fit_and_test(
            module, datamodule, lambda callbacks: instantiate(cfg.trainer, callbacks=callbacks, logger=False, default_root_dir=str(out_dir)),
            checkpoints, cfg.data.monitor, resume, cfg.get("early_stopping_patience"),
        )
        metrics = fit.finite(result.metrics)
        log_metrics(metrics)
        save_model(module.model, out_dir / "model.pt", OmegaConf.to_container(cfg.model.net, resolve=True),
                   extra={"metrics": metrics, "run_id": active.info.run_id, "best_checkpoint": result.best_checkpoint})
        atomic_write_json(metrics, out_dir / "metrics.json")
        atomic_write_text(pd.DataFrame(result.history).to_csv(index=False), out_dir / "history.csv")
        log_figure(plot_training_curves(result.history, f"train {name}"), "figures/training_curves.png", out_dir / "training_curves.png")
        mlflow.set_tag("best_checkpoint", str(result.best_checkpoint))
        mlflow.log_artifact(str(out_dir / "model.pt"), artifact_path="model")
        for file in ("metrics.json", "history.csv"):
            mlflow.log_artifact(str(out_dir / file))
    log.info("test metrics: %s", json.dumps(metrics))
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def main(cfg: DictConfig) -> float:
    return run_stage(run, cfg).get(cfg.data.monitor.replace("val/", "test/"), float("nan"))


if __name__ == "__main__":
    main()
