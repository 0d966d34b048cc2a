"""Tables of the LRP study (Dieter & Zisgen 2023), from plain tensors and dicts.

Everything here is pure: the accumulated ``RelevanceDistribution`` / ``RankingShiftAccumulator``
objects of each BatchNorm treatment and the attack payload go in, pandas tables (Tables 3-5 next to
the published values) come out. Accumulators are nested ``{batchnorm: {rule: ...}}`` so that both
treatments (``layer``: paper 001's code, ``merge``: BN folded into the conv) sit side by side.
The published values come from ``src/robex/report/paper_reference.yaml`` (block ``lrp``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from robex.lrp.ranking import SHIFT_SELECTIONS, RankingShiftAccumulator
from robex.lrp.statistics import RelevanceDistribution, quantile_error_bound

PAPER_REFERENCE = Path(__file__).resolve().parents[1] / "report" / "paper_reference.yaml"
Treatments = Mapping[str, Mapping[str, Mapping[str, RelevanceDistribution]]]
Rankings = Mapping[str, Mapping[str, RankingShiftAccumulator]]


@lru_cache(maxsize=1)
def paper() -> dict:
    """The ``lrp`` block of paper_reference.yaml (Tables 3-5, Sect. 4.1 and 4.2 values)."""
    import yaml

    return yaml.safe_load(PAPER_REFERENCE.read_text())["lrp"]


def paper_quantile_levels() -> tuple[float, ...]:
    return tuple(float(q) for q in paper()["quantile_levels"])


def quantile_table(distributions: Treatments, kind: str, levels: Sequence[float], reference: Mapping) -> pd.DataFrame:
    """Quantiles per rule and treatment (columns ``<rule> [<batchnorm>]``) beside ``<rule> (paper)``."""
    table = pd.DataFrame({"quantile": list(levels)})
    rules = list(next(iter(distributions.values()))) if distributions else []
    for rule in rules:
        for batchnorm, by_rule in distributions.items():
            table[f"{rule} [{batchnorm}]"] = by_rule[rule][kind].quantiles(levels)
        if rule in reference and tuple(levels) == paper_quantile_levels():
            table[f"{rule} (paper)"] = reference[rule]
    return table


def summary_tables(distributions: Treatments, levels: Sequence[float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per rule, treatment and image kind: mean, std, zero / irrelevant / sign shares; per-sign quantiles."""
    reference = paper()["summary"]
    summary_rows, sign_rows = [], []
    for batchnorm, by_rule in distributions.items():
        for rule, by_kind in by_rule.items():
            for kind, distribution in by_kind.items():
                published = reference.get(rule, {}).get(kind, {})
                summary_rows.append({
                    "rule": rule, "batchnorm": batchnorm, "images": kind, "maps": distribution.maps,
                    "mean": distribution.mean(), "mean (paper)": published.get("mean", np.nan),
                    "std": distribution.std(), "std (paper)": published.get("std", np.nan),
                    "zero share": distribution.zero_share, "zero share (paper, all rules)": reference["zero_share"][kind],
                    "share |R|<0.001": distribution.irrelevant_share,
                    "positive share": distribution.share("positive"), "negative share": distribution.share("negative"),
                    "max quantile error (float16)": quantile_error_bound(1.0),
                })
                for sign in ("positive", "negative"):
                    row = {"rule": rule, "batchnorm": batchnorm, "images": kind, "sign": sign, "count": distribution.count[sign],
                           "mean": distribution.mean(sign), "std": distribution.std(sign)}
                    row.update({f"q{level}": value for level, value in zip(levels, distribution.quantiles(levels, sign))})
                    sign_rows.append(row)
    return pd.DataFrame(summary_rows), pd.DataFrame(sign_rows)


def ranking_tables(rankings: Rankings, shift_levels: Sequence[float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 5 shares and the Sect. 4.2.3 |shift| quantiles per rule and treatment, beside the paper's."""
    shares_reference, shift_reference = paper()["table5_ranking_shares"], paper()["abs_shift"]
    share_rows, shift_rows = [], []
    for batchnorm, by_rule in rankings.items():
        for rule, accumulator in by_rule.items():
            published = shares_reference.get(rule, {})
            for name, value in accumulator.shares().items():
                share_rows.append({"rule": rule, "batchnorm": batchnorm, "selection": name, "share": value,
                                   "share (paper)": published.get(name, np.nan), "pairs": accumulator.pairs})
            for name in SHIFT_SELECTIONS:
                reference_level, reference_value = shift_reference.get(rule, {}).get(name, (np.nan, np.nan))
                row = {"rule": rule, "batchnorm": batchnorm, "selection": name,
                       "components": int(accumulator.shift_histograms[name].sum()), "mean shift": accumulator.mean_shift(name)}
                row.update({f"|shift| q{level}": value for level, value in zip(shift_levels, accumulator.abs_shift_quantiles(name, shift_levels))})
                row["paper level"], row["paper |shift| below"] = reference_level, reference_value
                shift_rows.append(row)
    return pd.DataFrame(share_rows), pd.DataFrame(shift_rows)


def attack_summary_table(num_originals: int, pair_success: torch.Tensor, target_probabilities: np.ndarray) -> pd.DataFrame:
    """Sect. 4.1: originals, successful adversarials, success rate and quantiles of the target
    probability p_c' of the successful adversarials, next to the paper's numbers (99% above 0.9337)."""
    reference = paper()["attack"]
    adversarials = len(target_probabilities)
    rows = [
        {"quantity": "originals (correctly classified)", "ours": num_originals, "paper": reference["originals"]},
        {"quantity": "adversarials", "ours": adversarials, "paper": reference["adversarials"]},
        {"quantity": "success rate", "ours": float(pair_success.float().mean()), "paper": reference["success_rate"]},
    ]
    for level in (0.001, 0.005, 0.01, 0.1, 0.5):
        rows.append({"quantity": f"target probability q{level}",
                     "ours": float(np.quantile(target_probabilities, level)) if adversarials else np.nan,
                     "paper": reference.get(f"target_probability_q{level}", np.nan)})
    rows.append({"quantity": "share of target probability > 0.9337", "ours": float((target_probabilities > 0.9337).mean()) if adversarials else np.nan,
                 "paper": 0.99})
    return pd.DataFrame(rows)


def statistics_tables(
    distributions: Treatments, rankings: Rankings, levels: Sequence[float], shift_levels: Sequence[float],
) -> dict[str, pd.DataFrame]:
    """Tables 3 (adversarial quantiles), 4 (original quantiles), 5 (ranking shares) and the
    per-rule summaries, keyed by the file name they are written under."""
    levels = tuple(float(q) for q in levels)
    tables = {
        "table3_adversarial_quantiles": quantile_table(distributions, "adversarial", levels, paper()["table3_adversarial_quantiles"]),
        "table4_original_quantiles": quantile_table(distributions, "original", levels, paper()["table4_original_quantiles"]),
    }
    tables["relevance_summary"], tables["relevance_by_sign"] = summary_tables(distributions, levels)
    tables["table5_ranking_shares"], tables["ranking_shifts"] = ranking_tables(rankings, tuple(shift_levels))
    return tables


def statistics_metrics(distributions: Treatments, rankings: Rankings) -> dict[str, float]:
    """Flat MLflow metrics per treatment and rule: the Table 5 shares, the mean, the zero and the
    negative share per image kind (the negative share is where the BN treatments differ most)."""
    metrics = {}
    for batchnorm, by_rule in rankings.items():
        for rule, accumulator in by_rule.items():
            for name, value in accumulator.shares().items():
                metrics[f"ranking/{batchnorm}/{rule}/{name}"] = value
    for batchnorm, by_rule in distributions.items():
        for rule, by_kind in by_rule.items():
            for kind, distribution in by_kind.items():
                prefix = f"relevance/{batchnorm}/{rule}/{kind}"
                metrics[f"{prefix}/mean"] = distribution.mean()
                metrics[f"{prefix}/zero_share"] = distribution.zero_share
                metrics[f"{prefix}/negative_share"] = distribution.share("negative")
    return metrics
