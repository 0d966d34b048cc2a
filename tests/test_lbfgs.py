"""Targeted L-BFGS (Foolbox 2.4's algorithm): lockstep batch == per-image runs, minimal c, paper options."""

import pytest
import torch
from torch import nn

from robex.attacks.base import AttackResult
from robex.attacks.lbfgs import LBFGS


def _tiny_model(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 4 * 4, 4))
    return model.to(dtype).eval()


def _pairs(model, seed, count, shift=1, dtype=torch.float32):
    images = torch.rand(count, 3, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return images, (model(images).argmax(1) + shift) % 4


def test_batched_attack_hits_targets_inside_box_with_consistent_outputs():
    model = _tiny_model()
    images, targets = _pairs(model, 1, 6)
    result = LBFGS(model, maxiter=40, tolerance=1e-3, initial_ce_weight=0.01)(images, targets)
    assert isinstance(result, AttackResult)
    assert result.success.all()
    assert (model(result.adversarial).argmax(1) == targets).all()
    assert result.adversarial.min() >= 0 and result.adversarial.max() <= 1
    expected_probability = torch.softmax(model(result.adversarial), 1).gather(1, targets.view(-1, 1)).squeeze(1)
    torch.testing.assert_close(result.target_probability, expected_probability)
    squared_l2 = (result.adversarial - images).flatten(1).pow(2).sum(1)
    torch.testing.assert_close(result.distance, squared_l2)
    torch.testing.assert_close(result.objective_distance, (squared_l2 / images[0].numel()).double(), rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(result.c, 1 / (images[0].numel() * result.ce_weight))
    assert (result.iterations > 0).all()


def test_lockstep_batch_equals_the_per_image_loop():
    # float64 makes batched and single-image model evaluations agree to ~1e-15, so the
    # independent per-image L-BFGS-B trajectories must coincide, c search included
    model = _tiny_model(torch.float64)
    images, targets = _pairs(model, 2, 5, shift=2, dtype=torch.float64)
    attack = LBFGS(model, maxiter=30, tolerance=1e-3, initial_ce_weight=0.005)
    batched = attack(images, targets)
    single = [attack(images[i : i + 1], targets[i : i + 1]) for i in range(len(images))]
    assert torch.equal(batched.success, torch.cat([r.success for r in single]))
    torch.testing.assert_close(batched.ce_weight, torch.cat([r.ce_weight for r in single]), rtol=0, atol=0)
    torch.testing.assert_close(batched.distance, torch.cat([r.distance for r in single]), rtol=1e-7, atol=1e-10)
    assert torch.equal(batched.iterations, torch.cat([r.iterations for r in single]))


def test_c_search_finds_the_minimal_successful_weight():
    model = _tiny_model(torch.float64)
    images, targets = _pairs(model, 4, 4, dtype=torch.float64)
    tolerance = 1e-3
    found = LBFGS(model, maxiter=30, tolerance=tolerance, initial_ce_weight=0.004)(images, targets).ce_weight
    assert torch.isfinite(found).all()

    def solve_is_adversarial(weight: float, index: int) -> bool:
        # one L-BFGS-B solve at a fixed weight: no doubling, no bisection
        single = LBFGS(model, maxiter=30, tolerance=tolerance, initial_ce_weight=weight, max_doublings=1, max_bisections=0)
        return bool(torch.isfinite(single(images[index : index + 1], targets[index : index + 1]).ce_weight).all())

    for index, weight in enumerate(found.tolist()):
        assert solve_is_adversarial(weight, index)
        # the bracket closed within the tolerance: a weight one tolerance lower already fails
        assert weight - tolerance <= 0 or not solve_is_adversarial(weight - tolerance, index)


def test_mean_abs_distance_and_probability_loss_as_the_paper_ran_it():
    model = _tiny_model(torch.float64)
    images, targets = _pairs(model, 5, 6, dtype=torch.float64)
    common = dict(maxiter=40, tolerance=1e-3, initial_ce_weight=0.01)
    mean_abs = LBFGS(model, distance="mean_abs", **common)(images, targets)
    assert mean_abs.success.all()
    torch.testing.assert_close(mean_abs.objective_distance, (mean_abs.adversarial - images).abs().flatten(1).mean(1))
    # Foolbox's distances: D and its gradient (sign(x - x_i) / n for the mean absolute difference)
    x = torch.tensor([[0.5, 0.2, 0.9, 0.4]], dtype=torch.float64, requires_grad=True)
    origin = torch.tensor([[0.1, 0.2, 1.0, 0.4]], dtype=torch.float64)
    value = LBFGS(model, distance="mean_abs").distance_of(x, origin)
    (gradient,) = torch.autograd.grad(value.sum(), x)
    torch.testing.assert_close(value, torch.tensor([0.125], dtype=torch.float64))
    torch.testing.assert_close(gradient, torch.tensor([[0.25, 0.0, -0.25, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(LBFGS(model).distance_of(x, origin), torch.tensor([0.0425], dtype=torch.float64))
    probabilities = LBFGS(model, loss_on="probabilities", **common)(images, targets)
    assert probabilities.success.all()
    # the paper's Keras model ended in a softmax that Foolbox took for logits: CE(softmax(p))
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0]], dtype=torch.float64)
    p = logits.softmax(1)
    expected = -(p[0, 2] - p.logsumexp(1))
    torch.testing.assert_close(LBFGS(model, loss_on="probabilities").ce_loss(logits, torch.tensor([2])), expected)
    # bounded below by log(1 + 3 / e) > 0 (p one-hot): it never vanishes, unlike CE on logits
    assert expected > torch.log(torch.tensor(1 + 3 / torch.e, dtype=torch.float64))


def test_warm_start_searches_with_fewer_iterations_at_similar_distance():
    model = _tiny_model(torch.float64)
    images, targets = _pairs(model, 6, 6, dtype=torch.float64)
    common = dict(maxiter=40, tolerance=1e-3, initial_ce_weight=0.005, max_bisections=3)
    cold = LBFGS(model, **common)(images, targets)
    warm = LBFGS(model, warm_start=True, warm_start_maxiter=10, **common)(images, targets)
    assert torch.equal(cold.success, warm.success)
    assert warm.iterations.sum() < 0.6 * cold.iterations.sum()
    assert warm.distance.sqrt().median() < 1.1 * cold.distance.sqrt().median()


def test_bisection_only_warm_start_keeps_the_cold_doubling_phase():
    # paper objective (mean_abs, CE on softmax outputs) and a small start weight: several doublings
    model = _tiny_model(torch.float64)
    images, targets = _pairs(model, 7, 5, shift=2, dtype=torch.float64)
    common = dict(maxiter=30, tolerance=1e-3, initial_ce_weight=1e-4, distance="mean_abs", loss_on="probabilities")
    # no bisection: only the doubling phase runs, and it must be the cold one exactly
    cold = LBFGS(model, max_bisections=0, **common)(images, targets)
    bisection_warm = LBFGS(model, max_bisections=0, warm_start=True, warm_start_maxiter=5, warm_start_phase="bisection", **common)(images, targets)
    all_warm = LBFGS(model, max_bisections=0, warm_start=True, warm_start_maxiter=5, **common)(images, targets)
    assert torch.equal(bisection_warm.iterations, cold.iterations) and torch.equal(bisection_warm.success, cold.success)
    torch.testing.assert_close(bisection_warm.ce_weight, cold.ce_weight, rtol=0, atol=0)
    assert not torch.equal(all_warm.iterations, cold.iterations)  # the case separates the two phases' warm starts
    # with bisections: same successes as cold (decided in the doubling phase), fewer iterations
    cold = LBFGS(model, max_bisections=3, **common)(images, targets)
    warm = LBFGS(model, max_bisections=3, warm_start=True, warm_start_maxiter=5, warm_start_phase="bisection", **common)(images, targets)
    assert torch.equal(warm.success, cold.success) and warm.success.all()
    assert warm.iterations.sum() < cold.iterations.sum()
    with pytest.raises(ValueError, match="warm_start_phase"):
        LBFGS(model, warm_start_phase="doubling")


def test_already_target_class_needs_no_perturbation():
    model = _tiny_model()
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    result = LBFGS(model, maxiter=10)(images, model(images).argmax(1))
    assert result.success.all() and (result.iterations == 0).all()
    assert torch.equal(result.adversarial, images)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="tolerance"):
        LBFGS(_tiny_model(), tolerance=0)
    with pytest.raises(ValueError, match="distance"):
        LBFGS(_tiny_model(), distance="l2")
    with pytest.raises(ValueError, match="loss_on"):
        LBFGS(_tiny_model(), loss_on="softmax")


def test_a_failing_model_call_raises_instead_of_hanging_the_workers():
    model = _tiny_model()
    images, targets = _pairs(model, 7, 3)

    class Flaky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner, self.calls = model, 0

        def forward(self, x):
            self.calls += 1
            if self.calls > 3:  # the first call checks the originals; fail inside the lockstep loop
                raise FloatingPointError("boom")
            return self.inner(x)

    with pytest.raises(FloatingPointError, match="boom"):
        LBFGS(Flaky(), maxiter=5)(images, targets)
