"""Figures of the LRP study (Dieter & Zisgen 2023): heatmaps (Figs. 5-6), Figs. 7-9 shift histograms,
score distributions and the target-probability histogram (Sect. 4.1), from plain dicts and tensors.

Each function takes the accumulators of one BatchNorm treatment (``batchnorm`` names it in the
titles) and returns matplotlib figures; the stage only writes them.
"""

from __future__ import annotations

import numpy as np

from robex.lrp.ranking import SHIFT_SELECTIONS, RankingShiftAccumulator


def heatmap_figures(examples: dict, rules: list[str], attack: dict, batchnorm: str = ""):
    """One figure per example original: the image, its adversarials and their maps per rule."""
    import matplotlib.pyplot as plt

    from robex.data.hierarchy import CIFAR10_CLASSES

    slots = sorted(examples[rules[0]]["original"]) if rules else []
    figures = {}
    for slot in slots:
        adversarial_ids = [target for target, _ in examples[rules[0]]["adversarial"][slot]]
        columns = 1 + len(adversarial_ids)
        figure, axes = plt.subplots(len(rules) + 1, columns, figsize=(1.9 * columns, 1.9 * (len(rules) + 1)), squeeze=False)
        label = int(attack["labels"][slot])
        original = attack["originals"][slot].permute(1, 2, 0).numpy()
        axes[0, 0].imshow(original)
        axes[0, 0].set_title(f"original: {CIFAR10_CLASSES[label]}", fontsize=8)
        pair_ids = (attack["pair_original"][attack["adversarial_pairs"]] == slot).nonzero().squeeze(1)[: len(adversarial_ids)]
        for column, pair in enumerate(pair_ids.tolist(), start=1):
            axes[0, column].imshow(attack["adversarials"][pair].permute(1, 2, 0).clamp(0, 1).numpy())
            axes[0, column].set_title(f"adv -> {CIFAR10_CLASSES[adversarial_ids[column - 1]]}", fontsize=8)
        for row, rule in enumerate(rules, start=1):
            maps = [examples[rule]["original"][slot]] + [m for _, m in examples[rule]["adversarial"][slot]]
            for column, relevance in enumerate(maps):
                # channels summed into one pixel map, then max-abs scaled for a symmetric colour bar
                pixel = relevance.float().sum(0)
                pixel = pixel / pixel.abs().max().clamp_min(1e-12)
                axes[row, column].imshow(pixel.numpy(), cmap="bwr", vmin=-1, vmax=1)
            axes[row, 0].set_ylabel(rule, fontsize=8)
        for axis in axes.flat:
            axis.set_xticks([])
            axis.set_yticks([])
        figure.suptitle(f"LRP heatmaps, BatchNorm {batchnorm}: original vs. its adversarials (red +, blue -)", fontsize=9)
        figure.tight_layout(rect=(0, 0, 1, 0.98))
        figures[f"heatmaps_example_{slot}"] = figure
    return figures


def shift_figure(rule: str, accumulator: RankingShiftAccumulator, batchnorm: str = ""):
    """Histograms of the positional shifts of Figs. 7-9 for one rule."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(SHIFT_SELECTIONS), figsize=(3.2 * len(SHIFT_SELECTIONS), 2.8))
    values = accumulator.shift_values().numpy()
    for axis, name in zip(axes, SHIFT_SELECTIONS):
        histogram = accumulator.shift_histograms[name].numpy()
        used = histogram.nonzero()[0]
        if len(used):
            low, high = values[used.min()], values[used.max()]
            window = slice(used.min(), used.max() + 1)
            axis.bar(values[window], histogram[window], width=max(1, (high - low) / 80), color="tab:blue")
        axis.set_title(name.replace("_", " "), fontsize=8)
        axis.set_xlabel("positional shift (rank adv - rank orig)", fontsize=7)
    axes[0].set_ylabel("components")
    figure.suptitle(f"Relevance ranking shifts, {rule}, BatchNorm {batchnorm} (cf. Figs. 7-9)", fontsize=9)
    figure.tight_layout()
    return figure


def distribution_figure(distributions: dict, batchnorm: str = ""):
    """Score histograms (log scale) of originals and adversarials per rule."""
    import matplotlib.pyplot as plt

    from robex.lrp.statistics import _SORTED_BINS, _SORTED_VALUES

    edges = np.linspace(-1, 1, 81)
    figure, axes = plt.subplots(1, len(distributions), figsize=(2.6 * len(distributions), 2.6), squeeze=False, sharey=True)
    for axis, (rule, by_kind) in zip(axes[0], distributions.items()):
        for kind, colour in (("original", "tab:blue"), ("adversarial", "tab:red")):
            counts = by_kind[kind].histogram[_SORTED_BINS].double().numpy()
            coarse, _ = np.histogram(_SORTED_VALUES.numpy(), bins=edges, weights=counts)
            axis.step(edges[:-1], coarse / max(coarse.sum(), 1), where="post", color=colour, label=kind)
        axis.set_yscale("log")
        axis.set_title(f"{rule} (BN {batchnorm})" if batchnorm else rule, fontsize=8)
        axis.set_xlabel("relevance (max-abs normalised)", fontsize=7)
    axes[0, 0].set_ylabel("share of scores")
    axes[0, 0].legend(fontsize=7)
    figure.tight_layout()
    return figure


def probability_figure(probabilities: np.ndarray):
    """Histogram of the adversarials' target probability p_c' (Sect. 4.1)."""
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(4, 2.8))
    axis.hist(probabilities, bins=np.linspace(0, 1, 41), color="tab:red")
    axis.set_xlabel("target-class probability p_c' of the adversarial")
    axis.set_ylabel("adversarials")
    axis.set_title("L-BFGS adversarials (Sect. 4.1)", fontsize=9)
    figure.tight_layout()
    return figure
