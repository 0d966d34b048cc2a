"""The training-curve figure of a train run: loss and the accuracies per epoch, train vs val."""

from __future__ import annotations

from collections.abc import Sequence


def plot_training_curves(history: Sequence[dict[str, float]], title: str):
    """One panel per metric (loss first), train and val as two lines over the epochs.

    ``history`` is :meth:`robex.training.callbacks.MlflowEpochMetrics.history_rows`. Returns a
    matplotlib Figure (Agg backend; no display needed).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({key.split("/", 1)[1] for row in history for key in row if "/" in key}, key=lambda n: (n != "loss", n))
    figure, axes = plt.subplots(1, max(1, len(names)), figsize=(3.6 * max(1, len(names)), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        for split, style in (("train", "-o"), ("val", "--s")):
            points = [(row["epoch"], row[f"{split}/{name}"]) for row in history if f"{split}/{name}" in row]
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], style, markersize=3, label=split)
        ax.set_title(name.replace("_", " "))
        ax.set_xlabel("epoch")
        if name != "loss":
            ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return figure
