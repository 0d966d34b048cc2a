"""Stage `prepare`: generate DOUBLE-MNIST and cache CIFAR-10 as uint8 tensors under outputs/data/.

    python -m robex.prepare                               (both, full size)
    python -m robex.prepare datasets=[cifar10]            (one)
    python -m robex.prepare experiment=quick_prepare      (the quick run's sizes)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from robex.utils.hydra import CONFIG_PATH, run_stage

log = logging.getLogger("robex.prepare")


def run(cfg: DictConfig) -> dict[str, float]:
    import mlflow

    from robex.data.double_mnist import DoubleMnistSplit
    from robex.data.paths import data_root
    from robex.data.prepare import double_mnist_examples_figure, prepare_datasets
    from robex.schemas import check
    from robex.tracking import log_figure, log_metrics, mlflow_run

    check(cfg)  # the schema's range checks (types and keys were checked at composition)
    plain = OmegaConf.to_container(cfg, resolve=True)
    metrics: dict[str, float] = {}
    with mlflow_run(cfg, experiment=cfg.tracking.experiment, run_name="prepare", tracking_uri=cfg.tracking.uri):
        written = prepare_datasets(list(cfg.datasets), data_root(cfg.paths.data_root), Path(cfg.paths.cache_dir), plain["double_mnist"], plain["cifar10"], cfg.seed)
        if "double_mnist" in written:
            sample = DoubleMnistSplit.load(written["double_mnist"]["test"])
            metrics["double_mnist_test_mask_pixels_mean"] = float(sample.masks.flatten(2).sum(-1).float().mean())
            log_figure(double_mnist_examples_figure(sample), "figures/double_mnist_examples.png")
        log_metrics(metrics)
        mlflow.log_dict(written, "prepared_files.json")
    log.info("prepared %s", json.dumps(written))
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="prepare")
def main(cfg: DictConfig) -> None:
    run_stage(run, cfg)


if __name__ == "__main__":
    main()
