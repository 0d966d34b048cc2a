"""Overlay figures in the style of thesis Figs. 4.2, 5.1, 5.2-5.5 (A.1) and 5.6.

Every figure names the image's class, the predicted class and its confidence, so a reader can
tell a wrong prediction from a wrong explanation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchvision.transforms.v2 import functional as TF  # noqa: E402

from robex.explain.cam import DISPLAY_NAMES  # noqa: E402
from robex.explain.visualize import lots_activation_map, minmax_per_image, overlay_heatmap  # noqa: E402


def _show(axis, picture, title: str, cmap: str | None = None) -> None:
    if isinstance(picture, torch.Tensor):
        picture = picture.detach().cpu()
        picture = picture.permute(1, 2, 0).numpy() if picture.dim() == 3 else picture.numpy()
    axis.imshow(picture, cmap=cmap, vmin=0 if cmap else None, vmax=1 if cmap else None, interpolation="nearest")
    axis.set_title(title, fontsize=8)
    axis.set_xticks([])
    axis.set_yticks([])


def _grid(rows: int, columns: int, size: float = 1.9):
    figure, axes = plt.subplots(rows, columns, figsize=(columns * size, rows * size + 0.5), squeeze=False)
    return figure, axes


def methods_figure(
    images: torch.Tensor, maps: Mapping[str, torch.Tensor], drops: Mapping[str, torch.Tensor], captions: Sequence[str], title: str
):
    """Several images (rows) x every method's heatmap overlay (columns), each with its drop in
    confidence (Figs. 5.2-5.5); the first column names label, prediction and confidence."""
    figure, axes = _grid(len(images), len(maps) + 1)
    for row, image in enumerate(images):
        _show(axes[row, 0], image, captions[row])
        for column, (method, activation_maps) in enumerate(maps.items(), start=1):
            name = DISPLAY_NAMES.get(method, method) if row == 0 else ""
            caption = f"{name}\ndrop {float(drops[method][row]):.1f}%" if name else f"drop {float(drops[method][row]):.1f}%"
            _show(axes[row, column], overlay_heatmap(image, activation_maps[row]), caption)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def blur_sizes_figure(images: torch.Tensor, adversarial: torch.Tensor, blur_sizes: list[int], captions: Sequence[str], title: str):
    """LOTS activation maps at several Gaussian filter sizes (Fig. 5.6), one row per image."""
    figure, axes = _grid(len(images), len(blur_sizes) + 1, size=2.0)
    for row, (image, lots_image) in enumerate(zip(images, adversarial)):
        _show(axes[row, 0], image, captions[row])
        for axis, size in zip(axes[row, 1:], blur_sizes):
            activation_map = lots_activation_map(image[None], lots_image[None], size)[0]
            _show(axis, overlay_heatmap(image, activation_map), f"LOTS, filter {size}x{size}" if row == 0 else "")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def targets_figure(images: torch.Tensor, maps: Mapping[str, torch.Tensor], captions: Sequence[str], title: str):
    """LOTS with the zero, class and mean targets (Fig. 5.1), one row per image."""
    figure, axes = _grid(len(images), len(maps) + 1)
    for row, image in enumerate(images):
        _show(axes[row, 0], image, captions[row])
        for column, (target, activation_maps) in enumerate(maps.items(), start=1):
            _show(axes[row, column], overlay_heatmap(image, activation_maps[row]), f"LOTS, {target} F_t" if row == 0 else "")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def procedure_figure(images: torch.Tensor, adversarial: torch.Tensor, blur_size: int, captions: Sequence[str], title: str):
    """The steps of Algorithm 2 (Fig. 4.2), one row per image: original, LOTS image, signed
    difference, both in grayscale, |difference| min-max (e), blurred map (f), explanation map (g),
    heatmap (h).

    The signed difference is scaled to its own range (mid-gray = 0, black/white = -/+ its largest
    magnitude, stated above the panel): Fig. 4.1(b)'s fixed x10 saturates LOTS perturbations.
    """
    figure, axes = _grid(len(images), 9, size=1.9)
    for row, (image, lots_image) in enumerate(zip(images, adversarial)):
        gray_image, gray_adversarial = TF.rgb_to_grayscale(image[None])[0, 0], TF.rgb_to_grayscale(lots_image[None])[0, 0]
        perturbation = minmax_per_image((gray_adversarial - gray_image).abs()[None])[0]
        activation_map = lots_activation_map(image[None], lots_image[None], blur_size)[0]
        difference = lots_image - image
        largest = float(difference.abs().max())
        shifted = (0.5 + difference / (2 * largest)).clamp(0, 1) if largest > 0 else torch.full_like(image, 0.5)
        first = row == 0
        panels = [
            (image, ("(a) " if first else "") + captions[row].replace(" / ", "\n"), None),
            (lots_image, "(b) LOTS image" if first else "", None),
            (shifted, f"{'difference, ' if first else ''}+-{largest * 255:.0f}/255", None),
            (gray_image, "(c) original, gray" if first else "", "gray"),
            (gray_adversarial, "(d) LOTS, gray" if first else "", "gray"),
            (perturbation, "(e) |difference|, min-max" if first else "", "gray"),
            (activation_map, f"(f) blurred {blur_size}x{blur_size}" if first else "", "jet"),
            (image * activation_map, "(g) explanation map" if first else "", None),
            (overlay_heatmap(image, activation_map), "(h) heatmap" if first else "", None),
        ]
        for axis, (picture, caption, cmap) in zip(axes[row], panels):
            _show(axis, picture, caption, cmap)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure
