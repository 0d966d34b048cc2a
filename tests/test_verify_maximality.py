"""Maximal answers (condition 2 of Sect. 2) on a tiny net whose exact robust region is known by
exhaustive search: for every eps_0 on a grid, the largest robust eps_1 by bisection with the exact
oracle (no attack, decided MILP answers only). Both strategies (CEGIS and binary search, each
followed by the polish phase) must return a robust eps* on that frontier within the tolerance,
CEGIS must reach radii below the tolerance, and it must not return 0 where binary search finds more."""

import numpy as np
import pytest
import torch

from robex.models.double_mnist_cnn import DoubleMnistCNN
from robex.verify.layers import layer_map
from robex.verify.oracle import LayeredOracle, OracleSettings, Verdict
from robex.verify.search import SearchSettings, maximality_check, search_maximal

TOLERANCE = 0.01
EXACT = OracleSettings(use_attack=False, use_cache=False, milp_time_limit=60.0, final_time_limit=60.0, backend="auto")


def tiny_case(gap):
    """The target's read-out bias is set so that its clean score beats the 3rd-ranked class by
    ``gap``: the gap sets how large the robust region is."""
    torch.manual_seed(0)
    model = DoubleMnistCNN(image_size=8, channels=(2, 3), pool=2, hidden=(), num_classes=4).eval()
    with torch.no_grad():
        model.net[-1].weight.mul_(5)
    image = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:4, 2:5] = True
    layers = layer_map(mask.unsqueeze(0), merge_from=1)[0]  # layer 0: the digit, layer 1: the rest
    with torch.no_grad():
        scores = model(image.unsqueeze(0))[0]
        target = int(scores.topk(2).indices[1])
        third = float(scores.topk(3).values[2])
        model.net[-1].bias[target] += third + gap - float(scores[target])
    return model, image, target, layers


def exact_robust(oracle, eps) -> bool:
    record = oracle.query(np.asarray(eps, dtype=np.float64))
    assert record.verdict is not Verdict.UNKNOWN, "the exact oracle must decide on this tiny net"
    return record.robust


def frontier(model, image, target, layers, grid):
    """f(eps_0) = the largest robust eps_1 (to 1e-3) for each eps_0 of the grid (-1: eps_0 alone is not robust)."""
    oracle = LayeredOracle(model, image, target, layers, 2, EXACT)
    values = []
    for e0 in grid:
        if not exact_robust(oracle, [e0, 0.0]):
            values.append(-1.0)
            continue
        low, high = 0.0, 1.0
        if exact_robust(oracle, [e0, 1.0]):
            values.append(1.0)
            continue
        while high - low > 2e-3:
            middle = (low + high) / 2
            low, high = (middle, high) if exact_robust(oracle, [e0, middle]) else (low, middle)
        values.append(low)
    return np.array(values)


@pytest.fixture(scope="module")
def case():
    model, image, target, layers = tiny_case(gap=0.1)
    grid = np.linspace(0, 1, 6)
    return model, image, target, layers, grid, frontier(model, image, target, layers, grid)


def test_the_tiny_case_is_not_degenerate(case):
    *_, grid, values = case
    assert values[0] > 0.02 and values.min() < values[0]  # a real trade-off between the two layers
    assert (values < 1).any()


@pytest.mark.parametrize("strategy, cutting", [("cegis", "fixed"), ("cegis", "sensitivity"), ("binary", "fixed")])
def test_answers_are_locally_maximal_against_the_exhaustive_frontier(case, strategy, cutting):
    model, image, target, layers, grid, values = case
    settings = SearchSettings(max_queries=25, max_seconds=60, tolerance=TOLERANCE, step_size=0.05, cutting_weights=cutting,
                              polish_max_queries=40, polish_max_seconds=60)
    oracle = LayeredOracle(model, image, target, layers, 2, OracleSettings(milp_time_limit=30.0, backend="auto"))
    result = search_maximal(oracle, np.ones(2), settings, strategy)
    eps = result.eps
    # robust by an independent exact oracle
    assert exact_robust(LayeredOracle(model, image, target, layers, 2, EXACT), eps)
    # locally maximal: every single-layer increment of the tolerance is refuted (or eps_d = 1) ...
    assert result.refuted_share == 1.0, result.maximality
    independent = maximality_check(LayeredOracle(model, image, target, layers, 2, EXACT), eps, TOLERANCE)
    assert all(kind in ("refuted", "at_one") for kind in independent), independent
    # ... and eps* lies on the exhaustive frontier: eps_1* is within tolerance of f(eps_0*) where
    # the grid brackets eps_0* (f is non-increasing, so f(next grid point) <= f(eps_0*) <= f(grid point))
    i = int(np.searchsorted(grid, eps[0], side="right")) - 1
    upper_f = values[i]
    lower_f = values[min(i + 1, len(grid) - 1)]
    assert eps[1] <= upper_f + 1e-3
    assert eps[1] >= lower_f - TOLERANCE - 1e-3 or eps[0] + TOLERANCE > grid[min(i + 1, len(grid) - 1)]


def test_cegis_reaches_radii_below_the_tolerance_and_matches_binary_search():
    """A net whose robust region is smaller than the search's first step (0.1): CEGIS must still
    return a non-zero, locally maximal eps* no smaller than binary search's."""
    model, image, target, layers = tiny_case(gap=0.0002)
    values = frontier(model, image, target, layers, np.array([0.0]))
    assert 0 < values[0] < 0.1  # the largest robust far-band radius is below the first step
    sizes = {}
    for strategy in ("cegis", "binary"):
        oracle = LayeredOracle(model, image, target, layers, 2, OracleSettings(milp_time_limit=30.0, backend="auto"))
        settings = SearchSettings(max_queries=25, max_seconds=60, tolerance=TOLERANCE, step_size=0.1)
        result = search_maximal(oracle, np.ones(2), settings, strategy)
        assert result.refuted_share == 1.0
        sizes[strategy] = result.size
    assert sizes["cegis"] > 0 and sizes["binary"] > 0
    assert sizes["cegis"] >= sizes["binary"] - 2 * TOLERANCE
