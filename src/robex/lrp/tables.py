"""Tables and figures of the LRP study (Dieter & Zisgen 2023), from plain tensors and dicts.

Everything here is pure: the accumulated ``RelevanceDistribution`` / ``RankingShiftAccumulator``
objects and the attack payload go in, pandas tables (Tables 3-5 next to the published values) and
matplotlib figures (heatmaps, Figs. 7-9 shift histograms) come out; the stage
``python -m robex.lrp_study`` only logs and writes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from robex.lrp.statistics import RelevanceDistribution, quantile_error_bound
from robex.lrp.ranking import SHIFT_SELECTIONS, RankingShiftAccumulator

# Published reference values of Dieter & Zisgen (2023), typed from the paper for comparison only.
PAPER_TABLE3_ADVERSARIAL = {
    "lrp0": [-0.6375, -0.3570, -0.2363, -0.0553, 0.0, 0.0553, 0.2665, 0.3635, 0.6508],
    "epsilon_0.0001": [-0.6418, -0.3677, -0.2739, -0.0593, 0.0, 0.0593, 0.2775, 0.3746, 0.6569],
    "epsilon_0.01": [-0.7014, -0.4848, -0.3935, -0.1200, 0.0, 0.1197, 0.4012, 0.4984, 0.7356],
    "epsilon_0.1": [-0.5862, -0.3413, -0.2541, -0.0514, 0.0, 0.0516, 0.2648, 0.3605, 0.6364],
    "epsilon_1": [-0.4517, -0.2265, -0.1529, -0.0162, 0.0, 0.0197, 0.2604, 0.4005, 0.7581],
    "alpha_beta_1": [0.0, 0.0, 0.0001, 0.0017, 0.0181, 0.1353, 0.4758, 0.5960, 0.8526],
    "alpha_beta_2": [-0.3164, -0.1628, -0.1092, -0.0103, 0.0, 0.0183, 0.2634, 0.4058, 0.7696],
}
PAPER_TABLE4_ORIGINAL = {
    "lrp0": [-0.6565, -0.3749, -0.2769, -0.0581, 0.0, 0.0583, 0.2770, 0.3744, 0.6530],
    "epsilon_0.0001": [-0.6555, -0.3798, -0.2828, -0.0611, 0.0, 0.0613, 0.2830, 0.3795, 0.6549],
    "epsilon_0.01": [-0.7047, -0.4669, -0.3709, -0.1055, 0.0, 0.1001, 0.3743, 0.4714, 0.7089],
    "epsilon_0.1": [-0.5982, -0.3482, -0.2595, -0.0520, 0.0, 0.0537, 0.2817, 0.3807, 0.6521],
    "epsilon_1": [-0.4414, -0.2276, -0.1562, -0.0174, 0.0, 0.0231, 0.3059, 0.4556, 0.7976],
    "alpha_beta_1": [-0.2043, -0.0385, -0.0072, 0.0016, 0.0189, 0.1486, 0.5140, 0.6335, 0.8729],
    "alpha_beta_2": [-0.3217, -0.1703, -0.1161, -0.0115, 0.0, 0.0223, 0.3034, 0.4518, 0.7997],
}
PAPER_QUANTILE_LEVELS = (0.001, 0.005, 0.01, 0.1, 0.5, 0.9, 0.99, 0.995, 0.999)
# Sect. 4.2.3 and Table 5 (shares); "approximately 93%" is entered as 0.93.
PAPER_RANKING_SHARES = {
    "alpha_beta_1": {"top1_in_adv_top1pct": 0.7521, "top1_in_adv_top10pct": 0.9672, "top1pct_in_adv_top1pct": 0.4337,
                     "top1pct_in_adv_top10pct": 0.93, "top10pct_in_adv_top10pct": 0.6412, "identical_top1": 0.0375},
    "alpha_beta_2": {"top1_in_adv_top1pct": 0.5497, "top1_in_adv_top10pct": 0.7993, "top1pct_in_adv_top1pct": 0.3400,
                     "top1pct_in_adv_top10pct": 0.7603, "top10pct_in_adv_top10pct": 0.5240},
    "epsilon_1": {"top1_in_adv_top1pct": 0.4414, "top1_in_adv_top10pct": 0.6885, "top1pct_in_adv_top1pct": 0.2712,
                  "top1pct_in_adv_top10pct": 0.6418, "top10pct_in_adv_top10pct": 0.4215},
}
# Sect. 4.2.3 for alpha = 1: 70% of |shift| below 7 / 54 / 10 / 54, 50% below 51.
PAPER_ABS_SHIFT = {
    "alpha_beta_1": {"top1_in_adv_top1pct": (0.7, 7), "top1_in_adv_top10pct": (0.7, 54), "top1pct_in_adv_top1pct": (0.7, 10),
                     "top1pct_in_adv_top10pct": (0.7, 54), "top10pct_in_adv_top10pct": (0.5, 51)},
}
# Sect. 4.1 and 4.2.2
PAPER_ATTACK = {"success_rate": 0.9661, "adversarials": 77402, "originals": 8902,
                "target_probability_q0.01": 0.9337, "target_probability_q0.005": 0.5482, "target_probability_q0.001": 0.2662}
PAPER_SUMMARY = {("alpha_beta_1", "adversarial"): {"mean": 0.0516, "std": 0.0930},
                 ("alpha_beta_1", "original"): {"mean": 0.055, "std": 0.1013}}
PAPER_ZERO_SHARE = {"adversarial": 0.0036, "original": 0.0024}  # averaged over rules



def quantile_table(distributions: dict, kind: str, levels, paper: dict) -> pd.DataFrame:
    table = pd.DataFrame({"quantile": list(levels)})
    for rule, by_kind in distributions.items():
        table[rule] = by_kind[kind].quantiles(levels)
        reference = paper.get(rule)
        if reference is not None and tuple(levels) == PAPER_QUANTILE_LEVELS:
            table[f"{rule} (paper)"] = reference
    return table


def summary_tables(distributions: dict, levels) -> tuple[pd.DataFrame, pd.DataFrame]:
    summary_rows, sign_rows = [], []
    for rule, by_kind in distributions.items():
        for kind, distribution in by_kind.items():
            paper = PAPER_SUMMARY.get((rule, kind), {})
            summary_rows.append({
                "rule": rule, "images": kind, "maps": distribution.maps,
                "mean": distribution.mean(), "mean (paper)": paper.get("mean", np.nan),
                "std": distribution.std(), "std (paper)": paper.get("std", np.nan),
                "zero share": distribution.zero_share, "zero share (paper, all rules)": PAPER_ZERO_SHARE[kind],
                "share |R|<0.001": distribution.irrelevant_share,
                "positive share": distribution.share("positive"), "negative share": distribution.share("negative"),
                "max quantile error (float16)": quantile_error_bound(1.0),
            })
            for sign in ("positive", "negative"):
                row = {"rule": rule, "images": kind, "sign": sign, "count": distribution.count[sign],
                       "mean": distribution.mean(sign), "std": distribution.std(sign)}
                row.update({f"q{level}": value for level, value in zip(levels, distribution.quantiles(levels, sign))})
                sign_rows.append(row)
    return pd.DataFrame(summary_rows), pd.DataFrame(sign_rows)


def ranking_tables(rankings: dict, shift_levels) -> tuple[pd.DataFrame, pd.DataFrame]:
    share_rows, shift_rows = [], []
    for rule, accumulator in rankings.items():
        shares = accumulator.shares()
        paper = PAPER_RANKING_SHARES.get(rule, {})
        for name, value in shares.items():
            share_rows.append({"rule": rule, "selection": name, "share": value, "share (paper)": paper.get(name, np.nan), "pairs": accumulator.pairs})
        for name in SHIFT_SELECTIONS:
            reference_level, reference_value = PAPER_ABS_SHIFT.get(rule, {}).get(name, (np.nan, np.nan))
            row = {"rule": rule, "selection": name, "components": int(accumulator.shift_histograms[name].sum()),
                   "mean shift": accumulator.mean_shift(name)}
            row.update({f"|shift| q{level}": value for level, value in zip(shift_levels, accumulator.abs_shift_quantiles(name, shift_levels))})
            row["paper level"], row["paper |shift| below"] = reference_level, reference_value
            shift_rows.append(row)
    return pd.DataFrame(share_rows), pd.DataFrame(shift_rows)


def heatmap_figures(summary: dict, attack: dict):
    import matplotlib.pyplot as plt

    from robex.data.hierarchy import CIFAR10_CLASSES

    rules = summary["rules"]
    slots = sorted(summary["examples"][rules[0]]["original"]) if rules else []
    figures = {}
    for slot in slots:
        adversarial_ids = [target for target, _ in summary["examples"][rules[0]]["adversarial"][slot]]
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
            maps = [summary["examples"][rule]["original"][slot]] + [m for _, m in summary["examples"][rule]["adversarial"][slot]]
            for column, relevance in enumerate(maps):
                # channels summed into one pixel map, then max-abs scaled for a symmetric colour bar
                pixel = relevance.float().sum(0)
                pixel = pixel / pixel.abs().max().clamp_min(1e-12)
                axes[row, column].imshow(pixel.numpy(), cmap="bwr", vmin=-1, vmax=1)
            axes[row, 0].set_ylabel(rule, fontsize=8)
        for axis in axes.flat:
            axis.set_xticks([])
            axis.set_yticks([])
        figure.suptitle("LRP heatmaps: original vs. its adversarials (red +, blue -)", fontsize=9)
        figure.tight_layout(rect=(0, 0, 1, 0.98))
        figures[f"heatmaps_example_{slot}"] = figure
    return figures


def shift_figure(rule: str, accumulator: RankingShiftAccumulator):
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
    figure.suptitle(f"Relevance ranking shifts, {rule} (cf. Figs. 7-9)", fontsize=9)
    figure.tight_layout()
    return figure


def distribution_figure(distributions: dict):
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
        axis.set_title(rule, fontsize=8)
        axis.set_xlabel("relevance (max-abs normalised)", fontsize=7)
    axes[0, 0].set_ylabel("share of scores")
    axes[0, 0].legend(fontsize=7)
    figure.tight_layout()
    return figure


def probability_figure(probabilities: np.ndarray):
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(4, 2.8))
    axis.hist(probabilities, bins=np.linspace(0, 1, 41), color="tab:red")
    axis.set_xlabel("target-class probability p_c' of the adversarial")
    axis.set_ylabel("adversarials")
    axis.set_title("L-BFGS adversarials (Sect. 4.1)", fontsize=9)
    figure.tight_layout()
    return figure


def attack_summary_table(num_originals: int, pair_success: torch.Tensor, target_probabilities: np.ndarray) -> pd.DataFrame:
    """Sect. 4.1: originals, successful adversarials, success rate and low quantiles of the target
    probability p_c' of the successful adversarials, next to the paper's numbers."""
    adversarials = len(target_probabilities)
    rows = [
        {"quantity": "originals (correctly classified)", "ours": num_originals, "paper": PAPER_ATTACK["originals"]},
        {"quantity": "adversarials", "ours": adversarials, "paper": PAPER_ATTACK["adversarials"]},
        {"quantity": "success rate", "ours": float(pair_success.float().mean()), "paper": PAPER_ATTACK["success_rate"]},
    ]
    for level in (0.001, 0.005, 0.01):
        rows.append({"quantity": f"target probability q{level}",
                     "ours": float(np.quantile(target_probabilities, level)) if adversarials else np.nan,
                     "paper": PAPER_ATTACK[f"target_probability_q{level}"]})
    return pd.DataFrame(rows)


def statistics_tables(
    distributions: Mapping[str, Mapping[str, RelevanceDistribution]],
    rankings: Mapping[str, RankingShiftAccumulator],
    levels: Sequence[float],
    shift_levels: Sequence[float],
) -> dict[str, pd.DataFrame]:
    """Tables 3 (adversarial quantiles), 4 (original quantiles), 5 (ranking shares) and the
    per-rule summaries, keyed by the file name they are written under."""
    levels = tuple(float(q) for q in levels)
    tables = {
        "table3_adversarial_quantiles": quantile_table(distributions, "adversarial", levels, PAPER_TABLE3_ADVERSARIAL),
        "table4_original_quantiles": quantile_table(distributions, "original", levels, PAPER_TABLE4_ORIGINAL),
    }
    tables["relevance_summary"], tables["relevance_by_sign"] = summary_tables(distributions, levels)
    tables["table5_ranking_shares"], tables["ranking_shifts"] = ranking_tables(rankings, tuple(shift_levels))
    return tables


def statistics_metrics(
    distributions: Mapping[str, Mapping[str, RelevanceDistribution]], rankings: Mapping[str, RankingShiftAccumulator]
) -> dict[str, float]:
    """Flat MLflow metrics: the Table 5 shares per rule and the mean / zero share per rule and image kind."""
    metrics = {}
    for rule, accumulator in rankings.items():
        for name, value in accumulator.shares().items():
            metrics[f"ranking/{rule}/{name}"] = value
    for rule, by_kind in distributions.items():
        for kind, distribution in by_kind.items():
            metrics[f"relevance/{rule}/{kind}/mean"] = distribution.mean()
            metrics[f"relevance/{rule}/{kind}/zero_share"] = distribution.zero_share
    return metrics
