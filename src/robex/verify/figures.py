"""Figures of the verify stage: eps-per-layer heatmaps (Mour 2023, Figs. 3-4) and size plots."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def eps_heatmap(image: np.ndarray, layers: np.ndarray, eps_by_variant: dict[str, np.ndarray], title: str = ""):
    """The image, its layer map, and for each variant every pixel coloured by its layer's eps*."""
    panels = 2 + len(eps_by_variant)
    figure, axes = plt.subplots(1, panels, figsize=(3.2 * panels, 3.4))
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("image")
    shown = axes[1].imshow(layers, cmap="viridis")
    axes[1].set_title("layer d (Chebyshev distance)")
    figure.colorbar(shown, ax=axes[1], fraction=0.046)
    top = max([float(np.max(eps)) for eps in eps_by_variant.values()] + [1e-6])
    for axis, (name, eps) in zip(axes[2:], eps_by_variant.items()):
        shown = axis.imshow(np.asarray(eps)[layers], cmap="magma", vmin=0, vmax=top)
        axis.contour(layers == 0, levels=[0.5], colors="cyan", linewidths=0.6)
        axis.set_title(f"eps* ({name}), size {float(np.sum(eps)):.3g}")
        figure.colorbar(shown, ax=axis, fraction=0.046)
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def size_distribution(per_image: pd.DataFrame):
    """Box plot of the neighbourhood size per defense and search variant."""
    groups = sorted(per_image.groupby(["defense", "variant"]).groups)
    figure, axis = plt.subplots(figsize=(max(4, 1.3 * len(groups)), 3.6))
    data = [per_image[(per_image.defense == d) & (per_image.variant == v)]["size"].to_numpy() for d, v in groups]
    axis.boxplot(data, showmeans=True)
    # n per box: a quick run has one image per defense, where a box plot is a single line
    axis.set_xticks(range(1, len(groups) + 1), [f"{d}\n{v}\nn={len(x)}" for (d, v), x in zip(groups, data)], fontsize=8)
    axis.set_ylabel("size w . eps*")
    axis.set_title("robust layered neighbourhood size per defense")
    figure.tight_layout()
    return figure


def eps_profiles(per_image: pd.DataFrame, eps_columns: list[str]):
    """Mean eps*_d per layer d, one line per defense and variant."""
    figure, axis = plt.subplots(figsize=(5, 3.6))
    for (defense, variant), group in per_image.groupby(["defense", "variant"]):
        axis.plot(range(len(eps_columns)), group[eps_columns].mean().to_numpy(), marker="o", label=f"{defense} / {variant} (n={len(group)})")
    axis.set_xlabel("layer d (last = merged band)")
    axis.set_ylabel("mean eps*_d")
    axis.legend(fontsize=7)
    figure.tight_layout()
    return figure
