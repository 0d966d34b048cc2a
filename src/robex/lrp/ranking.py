"""Relevance ranking and positional shift (Dieter & Zisgen 2023, Sect. 3.4 and 4.2.3, Fig. 4).

Step 1 of Fig. 4: sort each map's components in descending order of their score, positive and
negative scores in one ranking ("without distinguishing between positive and negative values"),
so rank 0 is the highest score and the lowest score is ranked last. ``rank_by="abs"`` ranks by
|R| instead, for readers who take the phrase to mean the magnitude. Ties keep pixel order.
Step 2: shift = rank in the adversarial map - rank in the original map (positive = degraded).

"Top p%" is the first ceil(p * n) ranks (31 of 3,072 for 1%, 308 for 10%).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

# Sect. 4.2.3 reports these selections; each keeps the shift histogram of its components.
SHIFT_SELECTIONS = (
    "top1_in_adv_top1pct",      # Fig. 7 left
    "top1_in_adv_top10pct",     # Fig. 7 right
    "top1pct_in_adv_top1pct",   # Fig. 8 left
    "top1pct_in_adv_top10pct",  # Fig. 8 right
    "top10pct_in_adv_top10pct",  # Fig. 9
)


def top_count(fraction: float, num_components: int) -> int:
    return max(1, math.ceil(fraction * num_components - 1e-9))


def ranks(maps: torch.Tensor, rank_by: str = "value") -> tuple[torch.Tensor, torch.Tensor]:
    """(order, rank) of each flattened map: order[:, r] is the component at rank r, rank = its inverse."""
    if rank_by not in ("value", "abs"):
        raise ValueError(f"rank_by={rank_by!r} is not supported; use 'value' or 'abs'")
    flat = maps.reshape(len(maps), -1)
    key = flat.abs() if rank_by == "abs" else flat
    order = torch.argsort(key, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return order, rank


class RankingShiftAccumulator:
    """Streams the Sect. 4.2.3 shares and shift histograms over (original, adversarial) map pairs.

    Counts are kept per selection so shares merge exactly across batches; shifts are kept as
    integer histograms over [-(n-1), n-1], from which quantiles of |shift| are exact.
    """

    def __init__(self, num_components: int, small_fraction: float = 0.01, large_fraction: float = 0.10, rank_by: str = "value") -> None:
        if not 0 < small_fraction < large_fraction <= 1:
            raise ValueError(f"need 0 < small_fraction < large_fraction <= 1 (got {small_fraction}, {large_fraction})")
        self.num_components, self.rank_by = num_components, rank_by
        self.small_fraction, self.large_fraction = small_fraction, large_fraction
        self.small, self.large = top_count(small_fraction, num_components), top_count(large_fraction, num_components)
        self.pairs = 0
        self.identical_top1 = 0
        self.selected = {name: 0 for name in SHIFT_SELECTIONS}  # numerator of each share
        self.candidates = {"top1": 0, "top1pct": 0, "top10pct": 0}  # denominators
        self.shift_histograms = {name: torch.zeros(2 * num_components - 1, dtype=torch.int64) for name in SHIFT_SELECTIONS}

    def update(self, original_maps: torch.Tensor, adversarial_maps: torch.Tensor) -> None:
        if original_maps.shape != adversarial_maps.shape:
            raise ValueError(f"original maps {tuple(original_maps.shape)} and adversarial maps {tuple(adversarial_maps.shape)} must pair up")
        if not len(original_maps):
            return
        if original_maps[0].numel() != self.num_components:
            raise ValueError(f"maps have {original_maps[0].numel()} components, the accumulator expects {self.num_components}")
        original_order, original_rank = ranks(original_maps, self.rank_by)
        _, adversarial_rank = ranks(adversarial_maps, self.rank_by)
        shift = (adversarial_rank - original_rank).cpu()
        adversarial_rank, original_rank = adversarial_rank.cpu(), original_rank.cpu()

        most_relevant = original_order[:, :1].cpu()
        top1_adversarial_rank = adversarial_rank.gather(1, most_relevant)
        top1_mask = torch.zeros_like(shift, dtype=torch.bool).scatter_(1, most_relevant, True)
        masks = {
            "top1_in_adv_top1pct": top1_mask & (adversarial_rank < self.small),
            "top1_in_adv_top10pct": top1_mask & (adversarial_rank < self.large),
            "top1pct_in_adv_top1pct": (original_rank < self.small) & (adversarial_rank < self.small),
            "top1pct_in_adv_top10pct": (original_rank < self.small) & (adversarial_rank < self.large),
            "top10pct_in_adv_top10pct": (original_rank < self.large) & (adversarial_rank < self.large),
        }
        offset = self.num_components - 1
        for name, mask in masks.items():
            self.selected[name] += int(mask.sum())
            self.shift_histograms[name] += torch.bincount(shift[mask] + offset, minlength=2 * self.num_components - 1)
        self.pairs += len(shift)
        self.identical_top1 += int((top1_adversarial_rank == 0).sum())
        self.candidates["top1"] += len(shift)
        self.candidates["top1pct"] += len(shift) * self.small
        self.candidates["top10pct"] += len(shift) * self.large

    def shares(self) -> dict[str, float]:
        """Share of each selection among its original components, and of identical top-1."""
        denominator = {"top1": "top1", "top1pct": "top1pct", "top10pct": "top10pct"}
        out = {}
        for name in SHIFT_SELECTIONS:
            group = denominator[name.split("_in_")[0]]
            out[name] = self.selected[name] / self.candidates[group] if self.candidates[group] else float("nan")
        out["identical_top1"] = self.identical_top1 / self.pairs if self.pairs else float("nan")
        return out

    def shift_values(self) -> torch.Tensor:
        return torch.arange(-(self.num_components - 1), self.num_components)

    def abs_shift_quantiles(self, name: str, probabilities: Sequence[float]) -> list[float]:
        """Lower-order-statistic ("inverted CDF") quantiles of |shift| for one selection; NaN if empty."""
        histogram = self.shift_histograms[name]
        values = self.shift_values().abs()
        counts = torch.zeros(self.num_components, dtype=torch.int64).index_add_(0, values, histogram)
        total = int(counts.sum())
        if total == 0:
            return [float("nan")] * len(probabilities)
        cumulative = torch.cumsum(counts, 0)
        targets = torch.tensor([max(math.ceil(p * total), 1) for p in probabilities])
        return [float(v) for v in torch.searchsorted(cumulative, targets)]

    def mean_shift(self, name: str) -> float:
        histogram = self.shift_histograms[name]
        total = int(histogram.sum())
        return float((histogram * self.shift_values()).sum()) / total if total else float("nan")

    def state_dict(self) -> dict:
        return {
            "num_components": self.num_components, "small_fraction": self.small_fraction,
            "large_fraction": self.large_fraction, "rank_by": self.rank_by, "pairs": self.pairs,
            "identical_top1": self.identical_top1, "selected": dict(self.selected),
            "candidates": dict(self.candidates), "shift_histograms": dict(self.shift_histograms),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> RankingShiftAccumulator:
        accumulator = cls(state["num_components"], state["small_fraction"], state["large_fraction"], state["rank_by"])
        accumulator.pairs, accumulator.identical_top1 = state["pairs"], state["identical_top1"]
        accumulator.selected, accumulator.candidates = dict(state["selected"]), dict(state["candidates"])
        accumulator.shift_histograms = {k: v.clone() for k, v in state["shift_histograms"].items()}
        return accumulator
