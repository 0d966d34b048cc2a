"""Stage `prepare`: DOUBLE-MNIST generation and the CIFAR-10 tensor cache."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import mlflow
from omegaconf import DictConfig

from robex.data.cifar10 import prepare_cifar10
from robex.data.double_mnist import DoubleMnistSplit, prepare_double_mnist
from robex.data.paths import data_root
from robex.tracking import log_metrics, mlflow_run
from robex.utils.errors import RobexError
from robex.utils.hydra import CONFIG_PATH, user_errors_exit

log = logging.getLogger("robex.prepare")
KNOWN = ("double_mnist", "cifar10")


def prepare(cfg: DictConfig) -> dict[str, dict[str, str]]:
    unknown = [name for name in cfg.datasets if name not in KNOWN]
    if unknown:
        raise RobexError(f"datasets={list(cfg.datasets)} names unknown datasets {unknown}; choose from {list(KNOWN)}")
    root = data_root(cfg.paths.data_root)
    if not root.is_dir():
        raise RobexError(f"data root {str(root)!r} does not exist; set ROBEX_DATA (or paths.data_root) to the folder holding MNIST/ and cifar10/")
    written: dict[str, dict[str, str]] = {}
    with mlflow_run(cfg, experiment=cfg.tracking.experiment, run_name="prepare", tracking_uri=cfg.tracking.uri):
        if "double_mnist" in cfg.datasets:
            d = cfg.double_mnist
            paths = prepare_double_mnist(
                root, Path(cfg.paths.cache_dir), Path(d.out_dir), d.num_train, d.num_val, d.num_test, cfg.seed,
                d.val_fraction_of_pool, d.canvas_size, d.max_offset_x, d.max_offset_y, d.mask_threshold,
            )
            written["double_mnist"] = {k: str(v) for k, v in paths.items()}
            sample = DoubleMnistSplit.load(paths["test"])
            log_metrics({"double_mnist_test_mask_pixels_mean": float(sample.masks.flatten(2).sum(-1).float().mean())})
            _log_examples(sample)
        if "cifar10" in cfg.datasets:
            c = cfg.cifar10
            paths = prepare_cifar10(root, Path(c.out_dir), c.source, Path(c.image_folder), c.num_train, c.num_test, cfg.seed)
            written["cifar10"] = {k: str(v) for k, v in paths.items()}
        mlflow.log_dict(written, "prepared_files.json")
    log.info("prepared %s", json.dumps(written))
    return written


def _log_examples(split: DoubleMnistSplit, count: int = 8) -> None:
    """A figure of generated canvases with their digit masks outlined: a sanity check people can see."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from robex.tracking import log_figure

    figure, axes = plt.subplots(2, count, figsize=(1.6 * count, 3.4))
    for i in range(min(count, len(split))):
        axes[0, i].imshow(split.images[i, 0], cmap="gray", vmin=0, vmax=255)
        axes[0, i].set_title(f"{split.digits[i, 0].item()} {split.digits[i, 1].item()}", fontsize=9)
        overlay = split.masks[i, 0].float() + 2 * split.masks[i, 1].float()
        axes[1, i].imshow(overlay, cmap="viridis", vmin=0, vmax=2)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("canvas")
    axes[1, 0].set_ylabel("masks")
    figure.suptitle("DOUBLE-MNIST test samples (labels: left right) and digit masks")
    log_figure(figure, "figures/double_mnist_examples.png")


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="prepare")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    prepare(cfg)


if __name__ == "__main__":
    main()
