"""The max-pool upper relaxation (robex.verify.bounds.maxpool_upper_chord) and the gradient the BaB
optimiser gets through it.

An unsound chord (e.g. starting it at u2 instead of max(l_top, u2), which cuts under a dominant
input) fails the exhaustive grid test; going back to DeepPoly's constant max_i u_i, which passes no
dependence on the pool's inputs back to earlier layers, fails the tightness tests; zero gradients at
zero coefficients (clamp_min / clamp_max both have gradient 0 at 0) fail the finite-difference test."""

import itertools

import numpy as np
import pytest
import torch

from robex.verify import bab
from robex.verify import bounds as bounds_module
from robex.verify.bounds import linear_bounds, margin_bounds, maxpool_upper_chord


def random_windows(count=400, size=4, seed=0):
    """Boxes of ``size``-input windows: a third with a dominant input (its lower bound above every
    other upper bound), some with a degenerate input (l = u), the rest overlapping."""
    generator = torch.Generator().manual_seed(seed)
    low = torch.rand(count, size, generator=generator, dtype=torch.float64) * 2 - 1
    width = torch.rand(count, size, generator=generator, dtype=torch.float64)
    high = low + width
    dominant = torch.arange(count) % 3 == 0
    high[dominant, 1:] = low[dominant, 1:] + 0.1 * width[dominant, 1:]
    low[dominant, 0] = high[dominant, 1:].max(dim=1).values + 0.05
    high[dominant, 0] = low[dominant, 0] + width[dominant, 0]
    degenerate = torch.arange(count) % 7 == 1
    high[degenerate, 2] = low[degenerate, 2]
    return low, high


def test_the_chord_bounds_the_max_on_an_exhaustive_grid_and_is_never_above_the_constant():
    low, high = random_windows()
    top, slope, intercept = maxpool_upper_chord(low, high)
    steps = torch.linspace(0, 1, 6, dtype=torch.float64)
    grid = torch.tensor(list(itertools.product(range(6), repeat=4)))  # every grid point, corners included
    points = low.unsqueeze(1) + steps[grid].unsqueeze(0) * (high - low).unsqueeze(1)  # (windows, 6^4, 4)
    true_max = points.max(dim=2).values
    line = slope.unsqueeze(1) * points.gather(2, top.view(-1, 1, 1).expand(-1, points.shape[1], 1)).squeeze(2) + intercept.unsqueeze(1)
    assert bool((line >= true_max - 1e-12).all()), "the chord cuts under max_i x_i somewhere in the box"
    constant = high.max(dim=1).values.unsqueeze(1)
    assert bool((line <= constant + 1e-12).all())
    # tight: the line reaches max u_i at x_top = u_top, and a dominant input gives y <= x_top exactly
    assert torch.allclose(slope * high.gather(1, top.unsqueeze(1)).squeeze(1) + intercept, high.max(dim=1).values)
    dominant = torch.arange(len(low)) % 3 == 0
    assert bool((top[dominant] == 0).all()) and torch.allclose(slope[dominant], torch.ones(int(dominant.sum()), dtype=torch.float64))
    assert torch.allclose(intercept[dominant], torch.zeros(int(dominant.sum()), dtype=torch.float64))
    # strictly below the constant on most of the box of an overlapping window
    overlapping = ~dominant & (slope > 0)
    assert float((line[overlapping] < constant[overlapping] - 1e-9).double().mean()) > 0.5


@pytest.fixture(scope="module")
def boxes():
    from test_verify_bab import cases

    return cases(seeds=(1, 2, 3))


def test_margin_bounds_with_the_chord_are_sound_and_tighter_than_with_the_constant(boxes, monkeypatch):
    chord = [margin_bounds(c[1], linear_bounds(c[1], *[t.double() for t in c[5]]), c[3]).objective_upper for c in boxes]
    monkeypatch.setattr(bounds_module, "maxpool_upper_chord", bounds_module.maxpool_upper_constant)
    constant = [margin_bounds(c[1], linear_bounds(c[1], *[t.double() for t in c[5]]), c[3]).objective_upper for c in boxes]
    exact = np.array([c[4] for c in boxes])
    chord, constant = np.array(chord), np.array(constant)
    assert bool((exact <= chord + 1e-9).all()), "a bound below the exact MILP maximum is unsound"
    assert bool((chord <= constant + 1e-9).all())
    assert int((chord < constant - 1e-3).sum()) >= len(boxes) // 2


def test_bab_root_bound_with_the_chord_is_tighter_than_with_the_constant(boxes, monkeypatch):
    chord = np.array([bab.root_bound(c[1], c[2], c[3], steps=0) for c in boxes])
    monkeypatch.setattr(bab, "maxpool_upper_chord", bounds_module.maxpool_upper_constant)
    constant = np.array([bab.root_bound(c[1], c[2], c[3], steps=0) for c in boxes])
    exact = np.array([c[4] for c in boxes])
    assert bool((exact <= chord + 1e-9).all()) and bool((chord <= constant + 1e-9).all())
    assert int((chord < constant - 1e-3).sum()) >= len(boxes) // 2


def test_the_optimiser_tightens_the_thesis_cnns_root_bound():
    """On the committed thesis CNN (conv-ReLU-conv-ReLU-pool-linear), a coefficient that is exactly 0
    (every max-pool input but the chord's) must still pass gradient to the slopes before it: with
    clamp_min(0) / clamp_max(0), whose gradient at 0 is 0, ten Adam steps left this bound unchanged
    to the last digit (6.2713 -> 6.2713; now 6.27 -> 6.22)."""
    from pathlib import Path

    from robex.models.io import load_model
    from robex.verify.network import parse_network

    model = load_model(Path(__file__).resolve().parents[1] / "weights" / "double_mnist_thesis" / "model.pt", "cpu").requires_grad_(False)
    generator = torch.Generator().manual_seed(0)
    image = torch.zeros(1, 1, 64, 64)
    image[..., 10:40, 4:28] = (torch.rand(1, 1, 30, 24, generator=generator) > 0.6).float()
    with torch.no_grad():
        target = int(model(image).argsort(descending=True)[0, 0])
    operations = parse_network(model, (1, 64, 64))
    bounds = linear_bounds(operations, (image - 0.02).clamp(0, 1).double(), (image + 0.02).clamp(0, 1).double())
    crown = bab.root_bound(operations, bounds, target, steps=0)
    optimised = bab.root_bound(operations, bounds, target, steps=10)
    assert crown == pytest.approx(margin_bounds(operations, bounds, target).objective_upper, abs=1e-9)
    assert optimised < crown - 0.02
