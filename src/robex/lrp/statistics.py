"""Streamed distribution statistics of relevance scores (Dieter & Zisgen 2023, Sect. 3.4, 4.2.2).

The full study has ~86k maps x 3,072 scores per rule, too many to hold. Every score of a
max-abs-normalised map lies in [-1, 1]; rounded to float16 it takes one of at most 65,536 bit
patterns, so one ``bincount`` over the bit patterns (a fixed 65,536-bin histogram) holds the
*exact* distribution of the float16-rounded scores, whatever the number of maps. Quantiles read
from it equal ``numpy.quantile(scores.astype(float16))`` (linear interpolation) bit for bit.

Error bound against the float32 scores: float16 rounding is monotone, so each order statistic
of the rounded data is the rounded order statistic, off by at most 2**-11 * |x| (relative, half
an ulp with 10 mantissa bits) for |x| >= 2**-14 and 2**-25 absolute below (subnormals); linear
interpolation between two order statistics keeps that bound (:func:`quantile_error_bound`).
Means, standard deviations and the shares of exact zeros and of |R| below a threshold are
accumulated from the float32 scores in float64, so they carry no rounding error from float16.
Written by hand: no maintained library offers an exact mergeable quantile sketch for torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

PAPER_QUANTILES = (0.001, 0.005, 0.01, 0.1, 0.5, 0.9, 0.99, 0.995, 0.999)
IRRELEVANT_THRESHOLD = 1e-3  # Sect. 3.4: |R| < 0.001 is "irrelevant for the classification"
_NUM_BINS = 1 << 16
_SIGNS = ("all", "positive", "negative")


def _float16_values_in_order() -> tuple[torch.Tensor, torch.Tensor]:
    """(values of every non-NaN float16 bit pattern as float64, sorted; their bin indices)."""
    patterns = torch.arange(_NUM_BINS, dtype=torch.int32).to(torch.int16)
    values = patterns.view(torch.float16).double()
    bins = torch.arange(_NUM_BINS)
    keep = ~torch.isnan(values)
    values, bins = values[keep], bins[keep]
    order = torch.argsort(values, stable=True)
    return values[order], bins[order]


_SORTED_VALUES, _SORTED_BINS = _float16_values_in_order()


def float16_bins(scores: torch.Tensor) -> torch.Tensor:
    """Bin index (the float16 bit pattern as 0..65535) of every score."""
    return scores.detach().reshape(-1).to(torch.float16).view(torch.int16).to(torch.int64) & 0xFFFF


def quantile_error_bound(value: float) -> float:
    """Max |float16-histogram quantile - float32 quantile| near ``value`` (module docstring)."""
    return abs(value) * 2.0**-11 + 2.0**-25


class RelevanceDistribution:
    """Mergeable exact distribution of relevance scores (one rule, one kind of image).

    ``update(maps)`` adds a batch of maps of any shape; sums and counts are kept separately for
    all, positive (> 0) and negative (< 0) scores, as Sect. 3.4 analyses them separately.
    """

    def __init__(self, threshold: float = IRRELEVANT_THRESHOLD) -> None:
        self.threshold = threshold
        self.histogram = torch.zeros(_NUM_BINS, dtype=torch.int64)
        self.count = {sign: 0 for sign in _SIGNS}
        self.total = {sign: 0.0 for sign in _SIGNS}
        self.total_squares = {sign: 0.0 for sign in _SIGNS}
        self.zeros = 0
        self.below_threshold = 0
        self.maps = 0

    def update(self, maps: torch.Tensor) -> None:
        if maps.numel() == 0:
            return
        scores = maps.detach().reshape(len(maps), -1).cpu()
        self.maps += len(scores)
        flat = scores.reshape(-1)
        self.histogram += torch.bincount(float16_bins(flat), minlength=_NUM_BINS)
        wide = flat.double()
        for sign, mask in (("all", None), ("positive", flat > 0), ("negative", flat < 0)):
            selected = wide if mask is None else wide[mask]
            self.count[sign] += int(selected.numel())
            self.total[sign] += float(selected.sum())
            self.total_squares[sign] += float(selected.square().sum())
        self.zeros += int((flat == 0).sum())
        self.below_threshold += int((flat.abs() < self.threshold).sum())

    def merge(self, other: RelevanceDistribution) -> RelevanceDistribution:
        if other.threshold != self.threshold:
            raise ValueError(f"cannot merge distributions with thresholds {self.threshold} and {other.threshold}")
        self.histogram += other.histogram
        for sign in _SIGNS:
            self.count[sign] += other.count[sign]
            self.total[sign] += other.total[sign]
            self.total_squares[sign] += other.total_squares[sign]
        self.zeros += other.zeros
        self.below_threshold += other.below_threshold
        self.maps += other.maps
        return self

    def _sorted_counts(self, sign: str) -> tuple[torch.Tensor, torch.Tensor]:
        if sign not in _SIGNS:
            raise ValueError(f"sign={sign!r} is not one of {_SIGNS}")
        values, counts = _SORTED_VALUES, self.histogram[_SORTED_BINS]
        if sign == "positive":
            keep = values > 0
        elif sign == "negative":
            keep = values < 0
        else:
            return values, counts
        return values[keep], counts[keep]

    def quantiles(self, probabilities: Sequence[float] = PAPER_QUANTILES, sign: str = "all") -> list[float]:
        """numpy's default (linear) quantiles of the float16-rounded scores; NaN when empty."""
        values, counts = self._sorted_counts(sign)
        total = int(counts.sum())
        if total == 0:
            return [float("nan")] * len(probabilities)
        cumulative = torch.cumsum(counts, 0)
        results = []
        for probability in probabilities:
            if not 0 <= probability <= 1:
                raise ValueError(f"quantile probability {probability} is outside [0, 1]")
            position = (total - 1) * probability
            lower = int(position)
            fraction = position - lower
            # order statistic k sits in the first bin whose cumulative count exceeds k
            lower_index, upper_index = torch.searchsorted(cumulative, torch.tensor([lower, min(lower + 1, total - 1)]), right=True)
            low_value, high_value = float(values[lower_index]), float(values[upper_index])
            results.append(low_value + fraction * (high_value - low_value))
        return results

    def mean(self, sign: str = "all") -> float:
        count = self.count[sign]
        return self.total[sign] / count if count else float("nan")

    def std(self, sign: str = "all") -> float:
        """Population standard deviation (numpy's default ddof=0)."""
        count = self.count[sign]
        if not count:
            return float("nan")
        mean = self.total[sign] / count
        return max(self.total_squares[sign] / count - mean * mean, 0.0) ** 0.5

    def share(self, sign: str) -> float:
        return self.count[sign] / self.count["all"] if self.count["all"] else float("nan")

    @property
    def zero_share(self) -> float:
        return self.zeros / self.count["all"] if self.count["all"] else float("nan")

    @property
    def irrelevant_share(self) -> float:
        return self.below_threshold / self.count["all"] if self.count["all"] else float("nan")

    def state_dict(self) -> dict:
        return {
            "threshold": self.threshold, "histogram": self.histogram, "count": dict(self.count),
            "total": dict(self.total), "total_squares": dict(self.total_squares),
            "zeros": self.zeros, "below_threshold": self.below_threshold, "maps": self.maps,
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> RelevanceDistribution:
        distribution = cls(state["threshold"])
        distribution.histogram = state["histogram"].clone()
        distribution.count, distribution.total = dict(state["count"]), dict(state["total"])
        distribution.total_squares = dict(state["total_squares"])
        distribution.zeros, distribution.below_threshold = state["zeros"], state["below_threshold"]
        distribution.maps = state["maps"]
        return distribution
