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
    from hydra.utils import instantiate

    from robex.schemas.train import validate
    from robex.tracking import log_metrics, mlflow_run, resolve_tracking_uri
    from robex.training import fit
    from robex.training.module import ClassifierModule

    validate(cfg)
    fit.check_batch_sizes({f"data.module.{k}": cfg.data.module.get(k) for k in ("batch_size", "eval_batch_size")})
    name = job_output_name(cfg.name, OmegaConf.to_container(cfg, resolve=False)["name"])
    out_dir = Path(cfg.paths.train_dir) / name
    resume = fit.resolve_resume(cfg.get("resume"), out_dir / "checkpoints")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, model = instantiate(cfg.data.module), instantiate(cfg.model.net, _convert_="all")
    fit.check_model_fits_data(model, datamodule, cfg.data.name, cfg.model.name)
    module = ClassifierModule(
        model, cfg.data.task, instantiate(cfg.optimizer), instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        defense=instantiate(cfg.defense.obj), augment=instantiate(cfg.data.augment) if cfg.data.get("augment") else None,
        robust_eval=OmegaConf.to_container(cfg.robust_eval, resolve=True) if cfg.get("robust_eval") else None,
    )
    earlier = fit.previous_run(resume.parent) if resume and fit.load_checkpoint(resume, module) else {}
    uri = resolve_tracking_uri(cfg.tracking.uri)
    with mlflow_run(cfg, cfg.tracking.experiment, name, uri, resume_run_id=earlier.get("run_id") if earlier.get("tracking_uri") == uri else None) as active:
        fit.remember_run(out_dir / "checkpoints", active.info.run_id, uri, cfg.tracking.experiment)
        make_trainer = lambda callbacks: instantiate(cfg.trainer, callbacks=callbacks, logger=False, default_root_dir=str(out_dir))  # noqa: E731
        result = fit.fit_and_test(module, datamodule, make_trainer, out_dir / "checkpoints", cfg.data.monitor, resume, cfg.get("early_stopping_patience"))
        log_metrics(result.metrics)
        extra = {"run_id": active.info.run_id, "best_checkpoint": result.best_checkpoint}
        paths = fit.write_outputs(out_dir, module.model, OmegaConf.to_container(cfg.model.net, resolve=True), result.metrics, result.history, extra, f"train {name}")
        mlflow.set_tag("best_checkpoint", str(result.best_checkpoint))
        for file, artifact_dir in (("model.pt", "model"), ("metrics.json", None), ("history.csv", None), ("training_curves.png", "figures")):
            mlflow.log_artifact(str(paths[file]), artifact_path=artifact_dir)
    log.info("test metrics: %s", json.dumps(result.metrics))
    return fit.finite(result.metrics)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def main(cfg: DictConfig) -> float:
    return run_stage(run, cfg).get(cfg.data.monitor.replace("val/", "test/"), float("nan"))


if __name__ == "__main__":
    main()
