"""FGSM, PGD and DeepFool on a tiny model trained in the test: success, exact eps bounds,
targeted hits, determinism."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robex.attacks.base import hits_target
from robex.attacks.deepfool import DeepFool
from robex.attacks.fgsm import FGSM
from robex.attacks.pgd import PGD, clip_l2, clip_linf

NUM_CLASSES = 4


def _synthetic(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0, 1] whose class is a colour offset plus noise: learnable in a second."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (count,), generator=generator)
    colours = torch.tensor([[0.3, 0.0, 0.0], [0.0, 0.3, 0.0], [0.0, 0.0, 0.3], [0.2, 0.2, 0.0]])
    images = 0.35 + colours[labels][:, :, None, None] + 0.12 * torch.randn(count, 3, 8, 8, generator=generator)
    return images.clamp(0, 1), labels


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, NUM_CLASSES))
    images, labels = _synthetic(512, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    model.eval()
    test_images, test_labels = _synthetic(128, seed=2)
    with torch.no_grad():
        correct = model(test_images).argmax(1) == test_labels
    assert correct.float().mean() > 0.9, "the tiny model must learn the synthetic task"
    return model, test_images[correct], test_labels[correct]


def _linf(adversarial, images):
    return (adversarial - images).abs().flatten(1).amax(1)


@pytest.mark.parametrize("eps", [1 / 255, 8 / 255, 0.1, 0.3])
def test_clip_linf_holds_to_the_last_bit(eps):
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4096, 3, 4, 4, generator=generator)
    wild = images + 2 * eps * torch.randn(images.shape, generator=generator).sign()
    clipped = clip_linf(wild, images, eps)
    bound = torch.tensor(eps, dtype=torch.float32)
    assert (_linf(clipped, images) <= bound).all()
    assert clipped.min() >= 0 and clipped.max() <= 1
    # the bound is reached where the candidate was outside and the box allows it (not clipped too hard)
    inside_box = ((images - eps) > 0) & ((images + eps) < 1)
    reached = (clipped - images).abs()[inside_box]
    assert torch.isclose(reached, bound.expand_as(reached), rtol=0, atol=2 * torch.finfo(torch.float32).eps).all()


def test_clip_l2_holds_to_the_last_bit():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2048, 3, 8, 8, generator=generator)
    eps = 0.5
    wild = images + torch.randn(images.shape, generator=generator)
    clipped = clip_l2(wild, images, eps)
    assert ((clipped - images).flatten(1).norm(dim=1) <= torch.tensor(eps, dtype=torch.float32)).all()


@pytest.mark.parametrize("norm,eps,step", [("linf", 0.25, 0.05), ("l2", 3.0, 0.6)])
def test_pgd_untargeted_succeeds_within_eps(trained, norm, eps, step):
    model, images, labels = trained
    result = PGD(model, eps=eps, step_size=step, steps=20, norm=norm, generator=torch.Generator().manual_seed(0))(images, labels)
    assert result.success_rate > 0.9
    if norm == "linf":
        assert (_linf(result.adversarial, images) <= torch.tensor(eps)).all()
    else:
        assert ((result.adversarial - images).flatten(1).norm(dim=1) <= torch.tensor(eps)).all()
    assert result.adversarial.min() >= 0 and result.adversarial.max() <= 1
    with torch.no_grad():
        assert torch.equal(result.success, model(result.adversarial).argmax(1) != labels)


def test_pgd_targeted_reaches_targets(trained):
    model, images, labels = trained
    targets = (labels + 1) % NUM_CLASSES
    attack = PGD(model, eps=0.4, step_size=0.05, steps=30, targeted=True, early_stop=True, generator=torch.Generator().manual_seed(0))
    result = attack(images, targets)
    with torch.no_grad():
        reached = hits_target(model(result.adversarial), targets)
    assert torch.equal(result.success, reached)
    assert result.success_rate > 0.9
    assert (_linf(result.adversarial, images) <= torch.tensor(0.4)).all()
    # early stop: successful samples did not use every step
    assert (result.iterations[result.success] < 30).any()


def test_pgd_is_deterministic_with_a_seed(trained):
    model, images, labels = trained

    def run(seed):
        return PGD(model, eps=0.1, step_size=0.02, steps=5, generator=torch.Generator().manual_seed(seed))(images, labels).adversarial

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_fgsm_succeeds_within_eps(trained):
    model, images, labels = trained
    result = FGSM(model, eps=0.3)(images, labels)
    assert result.success_rate > 0.7
    assert (_linf(result.adversarial, images) <= torch.tensor(0.3)).all()
    assert (result.iterations == 1).all()
    targets = (labels + 2) % NUM_CLASSES
    targeted = FGSM(model, eps=0.3, targeted=True)(images, targets)
    with torch.no_grad():
        assert torch.equal(targeted.success, model(targeted.adversarial).argmax(1) == targets)


def test_deepfool_flips_labels_with_small_l2_steps(trained):
    model, images, labels = trained
    result = DeepFool(model, steps=50, overshoot=0.02)(images, labels)
    assert result.success_rate > 0.95
    with torch.no_grad():
        assert torch.equal(result.success, model(result.adversarial).argmax(1) != labels)
    # DeepFool is minimal: it needs less L2 than a PGD-L2 attack with the same success
    deepfool_l2 = (result.adversarial - images).flatten(1).norm(dim=1)[result.success].mean()
    pgd = PGD(model, eps=3.0, step_size=0.6, steps=20, norm="l2", random_start=False)(images, labels)
    pgd_l2 = (pgd.adversarial - images).flatten(1).norm(dim=1)[pgd.success].mean()
    assert deepfool_l2 < pgd_l2
    assert (result.iterations >= 1).all() and (result.iterations <= 50).all()
    again = DeepFool(model, steps=50, overshoot=0.02)(images, labels)
    assert torch.equal(again.adversarial, result.adversarial)


def test_bad_arguments_raise_one_clear_error(trained):
    model, _, _ = trained
    with pytest.raises(ValueError, match="norm"):
        PGD(model, norm="l1")
    with pytest.raises(ValueError, match="eps"):
        FGSM(model, eps=-1)
    with pytest.raises(ValueError, match="DeepFool"):
        DeepFool(model, candidates=1)
