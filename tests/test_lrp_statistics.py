"""Streamed quantiles against numpy; ranks and shifts on hand-made maps with known answers."""

import numpy as np
import torch

from robex.lrp.ranking import RankingShiftAccumulator, ranks, top_count
from robex.lrp.statistics import PAPER_QUANTILES, RelevanceDistribution, quantile_error_bound


def _maps(seed: int, count: int = 40) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    maps = torch.randn(count, 3, 8, 8, generator=generator) ** 3
    maps[:, 0, 0, :3] = 0.0
    return maps / maps.flatten(1).abs().amax(1).view(-1, 1, 1, 1)


def test_streamed_quantiles_equal_numpy_on_float16_and_bound_float32():
    first, second = _maps(0), _maps(1)
    streamed = RelevanceDistribution()
    for chunk in (first[:7], first[7:], second):  # uneven chunks, then merge of two halves
        streamed.update(chunk)
    merged = RelevanceDistribution()
    merged.update(first)
    other = RelevanceDistribution()
    other.update(second)
    merged.merge(other)
    scores = torch.cat([first, second]).flatten().numpy()
    rounded = scores.astype(np.float16).astype(np.float64)
    for sign, mask in (("all", slice(None)), ("positive", rounded > 0), ("negative", rounded < 0)):
        expected = np.quantile(rounded[mask], PAPER_QUANTILES)
        np.testing.assert_array_equal(streamed.quantiles(PAPER_QUANTILES, sign), expected)
        np.testing.assert_array_equal(merged.quantiles(PAPER_QUANTILES, sign), expected)
    exact = np.quantile(scores.astype(np.float64), PAPER_QUANTILES)
    for value, truth in zip(streamed.quantiles(), exact):
        assert abs(value - truth) <= quantile_error_bound(truth) + 1e-12
    positives, negatives = scores[scores > 0].astype(np.float64), scores[scores < 0].astype(np.float64)
    np.testing.assert_allclose(streamed.mean("positive"), positives.mean(), rtol=1e-12)
    np.testing.assert_allclose(streamed.std("negative"), negatives.std(), rtol=1e-9)
    np.testing.assert_allclose(streamed.mean(), scores.astype(np.float64).mean(), rtol=1e-9, atol=1e-15)
    assert streamed.zero_share == np.mean(scores == 0)
    assert streamed.irrelevant_share == np.mean(np.abs(scores) < 1e-3)
    restored = RelevanceDistribution.from_state_dict(streamed.state_dict())
    assert restored.quantiles() == streamed.quantiles() and restored.maps == 80


def test_ranks_follow_figure_4():
    maps = torch.tensor([[0.2, -0.5, 0.9, 0.0]])
    order, rank = ranks(maps)
    assert order.tolist() == [[2, 0, 3, 1]] and rank.tolist() == [[1, 3, 0, 2]]
    _, rank_abs = ranks(maps, "abs")
    assert rank_abs.tolist() == [[2, 1, 0, 3]]


def test_shares_and_shifts_on_hand_made_maps():
    n = 100  # top 1% = 1 component, top 10% = 10 components
    assert top_count(0.01, n) == 1 and top_count(0.10, n) == 10 and top_count(0.01, 3072) == 31
    original = torch.arange(n, 0, -1, dtype=torch.float32).view(1, n)  # component i has rank i
    same = original.clone()
    # adversarial: the original's top component drops to rank 5, components 1..5 move up by one
    moved = original.clone()
    moved[0, 0] = moved[0, 5] - 0.5
    accumulator = RankingShiftAccumulator(n)
    accumulator.update(torch.cat([original, original]), torch.cat([same, moved]))
    shares = accumulator.shares()
    assert shares["identical_top1"] == 0.5
    assert shares["top1_in_adv_top1pct"] == 0.5 and shares["top1_in_adv_top10pct"] == 1.0
    assert shares["top1pct_in_adv_top1pct"] == 0.5 and shares["top1pct_in_adv_top10pct"] == 1.0
    assert shares["top10pct_in_adv_top10pct"] == 1.0
    # shifts among the original top 10% in the adversarial top 10%: pair 1 all 0; pair 2: +5, five -1, four 0
    histogram = accumulator.shift_histograms["top10pct_in_adv_top10pct"]
    values = accumulator.shift_values()
    assert {int(v): int(c) for v, c in zip(values, histogram) if c} == {-1: 5, 0: 14, 5: 1}
    assert accumulator.mean_shift("top10pct_in_adv_top10pct") == 0.0
    assert accumulator.abs_shift_quantiles("top1_in_adv_top10pct", [0.5, 1.0]) == [0.0, 5.0]
    restored = RankingShiftAccumulator.from_state_dict(accumulator.state_dict())
    assert restored.shares() == shares


def test_empty_batches_are_ignored():
    distribution = RelevanceDistribution()
    distribution.update(torch.empty(0, 3, 4, 4))
    assert distribution.maps == 0 and np.isnan(distribution.quantiles([0.5])[0])
    accumulator = RankingShiftAccumulator(48)
    accumulator.update(torch.empty(0, 3, 4, 4), torch.empty(0, 3, 4, 4))
    assert accumulator.pairs == 0 and np.isnan(accumulator.shares()["identical_top1"])
