"""The prepare stage's library: build the requested datasets and a figure to check them by eye.

Plain arguments (paths, sizes), so a notebook can call :func:`prepare_datasets` as
``python -m robex.prepare`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robex.utils.errors import RobexError


def prepare_datasets(datasets: list[str], data_root: Path, cache_dir: Path, double_mnist: dict[str, Any] | None, cifar10: dict[str, Any] | None, seed: int) -> dict[str, dict[str, str]]:
    """Write each dataset in ``datasets`` ('double_mnist', 'cifar10'); returns {dataset: {split: path}}."""
    from robex.data.cifar10 import prepare_cifar10
    from robex.data.double_mnist import prepare_double_mnist

    if not Path(data_root).is_dir():
        raise RobexError(f"data root {str(data_root)!r} does not exist; set ROBEX_DATA (or paths.data_root) to the folder holding MNIST/ and cifar10/")
    written: dict[str, dict[str, str]] = {}
    if "double_mnist" in datasets:
        d = dict(double_mnist or {})
        paths = prepare_double_mnist(
            Path(data_root), Path(cache_dir), Path(d["out_dir"]), d["num_train"], d["num_val"], d["num_test"], seed,
            d["val_fraction_of_pool"], d["canvas_size"], d["max_offset_x"], d["max_offset_y"], d["mask_threshold"],
        )
        written["double_mnist"] = {k: str(v) for k, v in paths.items()}
    if "cifar10" in datasets:
        c = dict(cifar10 or {})
        paths = prepare_cifar10(Path(data_root), Path(c["out_dir"]), c["source"], Path(c["image_folder"]), c["num_train"], c["num_test"], seed)
        written["cifar10"] = {k: str(v) for k, v in paths.items()}
    return written


def double_mnist_examples_figure(split, count: int = 8):
    """Generated canvases (labels: left right) over their digit masks: a sanity check people can see."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    return figure
