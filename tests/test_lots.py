"""LOTS (thesis Algorithm 1), its targets and its visualisation (Algorithm 2)."""

import pytest
import torch
from torch import nn

from robex.explain.lots import class_target_bank, feature_distance, lots
from robex.explain.metrics import pearson_per_image
from robex.explain.visualize import gaussian_blur, lots_activation_map, minmax_per_image, scaled_blur_size
from robex.models.cifar_cnn import CifarCNN
from robex.utils.errors import RobexError


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return CifarCNN(widths=(4, 8, 8), dropouts=(0.0, 0.0, 0.0), image_size=16).eval()


def trained_tiny_cnn(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A tiny CNN trained for a few seconds on images whose class is a bright square's position
    (so its gradients are those of a fitted model, not of random weights), and 40 of the images."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(240) % 4
    images = torch.rand(240, 3, 16, 16, generator=generator) * 0.5
    for c in range(4):
        row, col = divmod(c, 2)
        images[labels == c, :, row * 8 + 2 : row * 8 + 6, col * 8 + 2 : col * 8 + 6] += 0.5
    torch.manual_seed(seed)
    model = CifarCNN(widths=(4, 8, 8), dropouts=(0.0, 0.0, 0.0), num_classes=4, image_size=16)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for step in range(60):
        batch = slice((step * 60) % 240, (step * 60) % 240 + 60)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images[batch]), labels[batch]).backward()
        optimizer.step()
    return model.eval(), images[:40].clamp(0, 1), labels[:40]


def lots_reference(model, image, iterations, tau, alpha):
    """Algorithm 1 line by line for one image (the transcription the batched code must equal)."""
    adversarial = image.clone()
    for step in range(iterations):
        x = adversarial.clone().requires_grad_(True)
        features = model(x[None])
        if feature_distance(features.detach(), torch.zeros_like(features)) <= tau:
            return adversarial, step
        loss = 0.5 * features.pow(2).sum()
        (gradient,) = torch.autograd.grad(loss, x)
        adversarial = (adversarial - gradient * (alpha / gradient.abs().max())).clamp(0, 1)
    return adversarial, iterations


@pytest.fixture(scope="module")
def trained():
    return trained_tiny_cnn()


def test_every_thesis_step_moves_the_image_by_exactly_alpha_in_l_inf(trained):
    model, images, _ = trained
    inside = images[:6] * 0.5 + 0.25  # away from 0 and 1, so no clamping touches the step
    alpha = 1 / 255
    previous = inside
    for iterations in range(1, 5):
        result = lots(model, inside, iterations=iterations, tau=0.0, alpha=alpha)
        assert torch.all(result.steps == iterations)
        moves = (result.adversarial - previous).flatten(1).abs().amax(dim=1)
        torch.testing.assert_close(moves, torch.full((6,), alpha), atol=1e-6, rtol=0)
        previous = result.adversarial


def test_lots_clamps_to_the_unit_box(trained):
    model, images, _ = trained
    saturated = (images[:6] > 0.5).float()  # every pixel on the box boundary
    result = lots(model, saturated, iterations=20, tau=0.0, alpha=8 / 255)
    assert result.adversarial.min() >= 0 and result.adversarial.max() <= 1
    assert torch.all(result.adversarial[saturated == 0] >= 0) and (result.adversarial != saturated).any()
    for step_rule in ("backtracking", "polyak"):
        other = lots(model, saturated, iterations=20, tau=0.0, alpha=8 / 255, step_rule=step_rule, max_alpha=16 / 255)
        assert other.adversarial.min() >= 0 and other.adversarial.max() <= 1


def test_lots_stops_at_the_first_step_within_tau_and_equals_algorithm_1(trained):
    model, images, _ = trained
    free = lots(model, images[:5], iterations=60, tau=0.0, record_distances=True)
    history = free.distance_history  # (61, 5): distance before each step
    for image in range(5):
        # a tau this image reaches after about 30 steps, not within float noise of any distance it passes
        gaps = history[:, image]
        tau = float(gaps[30]) + 0.5 * float((gaps - gaps[30]).abs()[gaps != gaps[30]].min())
        expected_stop = int(torch.nonzero(history[:, image] <= tau)[0])
        result = lots(model, images[image : image + 1], iterations=60, tau=tau)
        assert int(result.steps[0]) == expected_stop and bool(result.converged[0])
        assert float(result.distance[0]) <= tau
        reference, reference_steps = lots_reference(model, images[image], 60, tau, 1 / 255)
        assert reference_steps == expected_stop
        torch.testing.assert_close(result.adversarial[0], reference, atol=1e-5, rtol=0)
    # an image that never gets within tau runs all iterations and is not converged
    unreachable = lots(model, images[:2], iterations=7, tau=1e-6)
    assert torch.all(unreachable.steps == 7) and not unreachable.converged.any()
    final = feature_distance(model(unreachable.adversarial), torch.zeros(2, 4))
    torch.testing.assert_close(final, unreachable.distance, atol=1e-4, rtol=1e-4)


def step_rule_reference(model, image, iterations, tau, alpha, step_rule, max_alpha):
    """The step rules written out for one image, step by step (what ``lots`` must equal):
    thesis alpha; backtracking alpha, halved after a rise of the distance, doubled (<= alpha) after
    a fall; polyak min((f - tau^2/2)+ / ||g||^2 * max|g|, max_alpha) with f = 1/2 ||F||^2."""
    adversarial, size, previous, steps = image.clone(), alpha, float("inf"), 0
    for _ in range(iterations):
        x = adversarial.clone().requires_grad_(True)
        features = model(x[None])
        gap = float(features.detach().norm())
        if gap <= tau:
            break
        loss = 0.5 * features.pow(2).sum()
        (gradient,) = torch.autograd.grad(loss, x)
        largest = float(gradient.abs().max())
        if step_rule == "thesis":
            size = alpha
        elif step_rule == "backtracking":
            size = size / 2 if gap > previous else min(size * 2, alpha)
        else:
            size = min(max(float(loss) - 0.5 * tau**2, 0.0) / float(gradient.pow(2).sum()) * largest, max_alpha)
        previous = gap
        adversarial = (adversarial - gradient * (size / largest)).clamp(0, 1)
        steps += 1
    return adversarial, steps


@pytest.mark.parametrize("step_rule", ["thesis", "backtracking", "polyak"])
def test_each_step_rule_equals_its_written_out_formula(trained, step_rule):
    model, images, _ = trained
    for image in range(3):
        result = lots(model, images[image : image + 1], iterations=40, tau=0.3, alpha=4 / 255, step_rule=step_rule, max_alpha=6 / 255,
                      micro_batch=1)  # the reference runs batch-1 forwards: same kernels, so no drift
        reference, steps = step_rule_reference(model, images[image], 40, 0.3, 4 / 255, step_rule, 6 / 255)
        assert int(result.steps[0]) == steps
        torch.testing.assert_close(result.adversarial[0], reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("step_rule", ["thesis", "backtracking", "polyak"])
def test_each_image_is_independent_of_its_batch(trained, step_rule):
    model, images, _ = trained
    together = lots(model, images[:20], iterations=100, tau=4.0, step_rule=step_rule, max_alpha=2 / 255)
    alone = [lots(model, images[i : i + 1], iterations=100, tau=4.0, step_rule=step_rule, max_alpha=2 / 255) for i in range(20)]
    assert torch.equal(together.steps, torch.cat([r.steps for r in alone]))
    assert torch.equal(together.adversarial, torch.cat([r.adversarial for r in alone]))
    assert together.converged.float().mean() > 0.5  # the comparison covers stopped images too


def test_faster_step_rules_converge_in_fewer_steps_to_similar_maps(trained):
    model, images, _ = trained
    images = images[:16]
    thesis = lots(model, images, iterations=300, tau=0.5)
    maps = lots_activation_map(images, thesis.adversarial, 5)
    for step_rule, fewer in (("backtracking", 1.02), ("polyak", 0.9)):
        fast = lots(model, images, iterations=300, tau=0.5, step_rule=step_rule, max_alpha=2 / 255)
        assert fast.converged.float().mean() >= thesis.converged.float().mean()
        # backtracking only saves steps where the thesis rule oscillates (it does not on this toy)
        assert fast.steps.float().mean() < fewer * thesis.steps.float().mean(), step_rule
        similarity = pearson_per_image(maps, lots_activation_map(images, fast.adversarial, 5))
        assert similarity.median() > 0.9, (step_rule, similarity)


def test_lots_stops_each_image_on_its_own():
    model = tiny_cnn()
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    logits = model(images).detach()
    # image 0 already sits on its target; the others have to move
    targets = torch.stack([logits[0], torch.zeros(10), torch.zeros(10)])
    result = lots(model, images, targets, iterations=5, tau=1e-3)
    assert result.steps[0] == 0 and bool(result.converged[0])
    torch.testing.assert_close(result.adversarial[0], images[0])
    assert torch.all(result.steps[1:] == 5)


def test_lots_at_named_layer_and_cosine_distance():
    model = tiny_cnn()
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        target = model.features[:2](model.normalize(images.flip(0)))
    result = lots(model, images, target, layer="features.block2", iterations=10, tau=0.0, distance="cosine", record_distances=True)
    assert result.distance_history.shape == (11, 2)
    assert torch.all(result.distance_history[-1] < result.distance_history[0])
    with pytest.raises(ValueError, match="cosine"):
        lots(model, images, None, distance="cosine", iterations=1)
    with pytest.raises(RobexError, match="not a module"):
        lots(model, images, layer="features.nope", iterations=1)


def test_class_and_mean_target_banks():
    model = tiny_cnn()
    images = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    labels = torch.arange(12) % 3
    mean = class_target_bank(model, images, labels, 3, "mean")
    with torch.no_grad():
        expected = model(images[labels == 1]).mean(dim=0)
    torch.testing.assert_close(mean[1], expected, atol=1e-5, rtol=1e-5)
    chosen = class_target_bank(model, images, labels, 3, "class", generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        all_features = model(images)
    for c in range(3):
        matches = (all_features[labels == c] - chosen[c]).abs().amax(dim=1) < 1e-5
        assert matches.sum() == 1
    with pytest.raises(ValueError, match="no training image"):
        class_target_bank(model, images[:2], labels[:2], 3, "mean")


def test_visualisation_range_shape_and_location():
    original = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    adversarial = original.clone()
    adversarial[0, :, 4:8, 20:24] += 0.2
    adversarial[1] = (adversarial[1] - 0.01).clamp(0, 1)
    maps = lots_activation_map(original, adversarial.clamp(0, 1), blur_size=7)
    assert maps.shape == (2, 32, 32)
    assert maps.min() >= 0 and maps.max() <= 1
    assert torch.allclose(maps.flatten(1).amax(1), torch.ones(2))
    peak = torch.nonzero(maps[0] == maps[0].max())[0]
    assert 3 <= peak[0] <= 8 and 19 <= peak[1] <= 24
    # no perturbation at all gives an all-zero map, not NaNs
    assert torch.equal(lots_activation_map(original, original, 7), torch.zeros(2, 32, 32))
    with pytest.raises(ValueError, match="odd"):
        gaussian_blur(original, 4)


def test_blur_size_scaling_and_minmax():
    assert scaled_blur_size(224) == 49
    assert scaled_blur_size(32) == 7
    maps = minmax_per_image(torch.tensor([[[1.0, 3.0], [2.0, 5.0]]]))
    torch.testing.assert_close(maps, torch.tensor([[[0.0, 0.5], [0.25, 1.0]]]))


def test_explanations_are_asked_for_labels_or_predictions():
    from robex.explain.evaluate import evaluate_explainer
    from robex.explain.methods import explained_classes

    model = tiny_cnn()
    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    labels = torch.tensor([3, 1, 4, 1, 5, 9])
    asked = []

    def explainer(batch, classes):
        asked.append(classes.clone())
        return torch.rand(len(batch), 16, 16)

    evaluate_explainer(model, explainer, images, "probe", batch_size=6, steps=2, substrate_blur_size=3, substrate_blur_sigma=1.0,
                       progress=False, explained_classes=explained_classes("lots", "mean", "label", labels))
    assert all(torch.equal(a, labels) for a in asked) and len(asked) == 2  # maps and the coherency re-run
    asked.clear()
    evaluate_explainer(model, explainer, images, "probe", batch_size=6, steps=2, substrate_blur_size=3, substrate_blur_sigma=1.0,
                       progress=False, explained_classes=explained_classes("lots", "mean", "prediction", labels))
    assert all(torch.equal(a, model(images).argmax(1)) for a in asked)
    assert explained_classes("grad_cam", "mean", "label", labels) is None  # CAMs explain the prediction (Sect. 5.1.2)
    assert explained_classes("lots", "zero", "label", labels) is None


def test_mean_target_is_streamed_over_the_whole_training_split(tmp_path):
    from robex.explain.data import ImageSource
    from robex.explain.targets import target_bank, target_image_count
    from robex.utils.io import atomic_save

    generator = torch.Generator().manual_seed(7)
    labels = torch.arange(10).repeat(7)[torch.randperm(70, generator=generator)]
    images = torch.randint(0, 256, (70, 3, 16, 16), generator=generator, dtype=torch.uint8)
    atomic_save({"images": images, "labels": labels, "classes": [str(i) for i in range(10)]}, tmp_path / "train.pt")
    model = tiny_cnn()
    source = ImageSource("cifar10", prepared_dir=tmp_path)
    bank = target_bank("mean", model, 10, torch.device("cpu"), source, "train", None, batch_size=16)
    with torch.no_grad():
        features = model(images.float() / 255)
    expected = torch.stack([features[labels == c].mean(0) for c in range(10)])
    torch.testing.assert_close(bank, expected, atol=1e-5, rtol=1e-5)
    assert target_image_count(source, "train", None) == 70 and target_image_count(source, "train", 2) == 20
