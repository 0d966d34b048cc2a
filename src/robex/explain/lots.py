"""Layerwise Origin-Target Synthesis (LOTS; Rozsa et al. 2017), thesis Algorithm 1.

Written by hand: no maintained library implements LOTS. The batch runs in lock-step, but every
image stops as soon as its own features are within ``tau`` of its target; finished images are
dropped from the working batch, so they neither change nor cost compute any more.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

import torch
from torch import nn
from tqdm.auto import tqdm

from robex.explain.layers import FeatureExtractor

THESIS_ITERATIONS = 500
THESIS_TAU = 0.1
THESIS_ALPHA = 1 / 255


class Distance(str, Enum):
    euclidean = "euclidean"
    cosine = "cosine"


class TargetKind(str, Enum):
    """The three targets F_t of thesis Sect. 4.2."""

    zero = "zero"
    class_ = "class"
    mean = "mean"


def feature_distance(source: torch.Tensor, target: torch.Tensor, distance: Distance | str = Distance.euclidean) -> torch.Tensor:
    """Per-image distance(F_s, F_t) of Algorithm 1 line 6: Euclidean norm or 1 - cosine similarity."""
    source, target = source.flatten(1), target.flatten(1)
    if Distance(distance) == Distance.euclidean:
        return (source - target).norm(dim=1)
    return 1 - torch.nn.functional.cosine_similarity(source, target, dim=1, eps=1e-12)


class StepRule(str, Enum):
    """How far each LOTS iteration moves the image (L-inf size of the step of Algorithm 1 line 9).

    ``thesis``: always alpha (line 9 as written). ``backtracking``: alpha, halved for an image
    whenever its distance rose over the last step, and doubled back (at most to alpha) after a
    step that lowered it: the fixed step overshoots near F_t, so the thesis rule oscillates and
    needs many steps to get within tau. ``polyak``: the Polyak step toward the goal value
    f* = tau^2 / 2 of the loss f = 1/2 ||F_t - F_s||^2, i.e. eta = (f - f*) / ||grad||_2^2 along
    the gradient, as an L-inf size eta * max|grad| capped at ``max_alpha``.
    """

    thesis = "thesis"
    backtracking = "backtracking"
    polyak = "polyak"


@dataclass
class LotsResult:
    """Adversarial images in [0, 1]; per image: final distance, gradient steps taken, converged.

    ``distance_history`` (iterations + 1, B) holds distance(F_s, F_t) before each step and after
    the last one (NaN once an image has stopped); only filled when asked for.
    """

    adversarial: torch.Tensor
    distance: torch.Tensor
    steps: torch.Tensor
    converged: torch.Tensor
    distance_history: torch.Tensor | None = None


def _padded_chunks(count: int, micro_batch: int):
    for start in range(0, count, micro_batch):
        yield start, min(start + micro_batch, count)


def _features_and_gradients(
    extractor: FeatureExtractor,
    current: torch.Tensor,
    targets: torch.Tensor | None,
    distance: Distance,
    micro_batch: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image: distance(F_s, F_t), loss 1/2 ||F_t - F_s||^2 (eq. 3.1) and its input gradient (eq. 3.2).

    The network always runs on chunks of exactly ``micro_batch`` rows (the last chunk padded with
    zeros): CPU and GPU kernels are chosen by batch shape and round differently for different
    shapes, so without the padding an image's steps would depend on how many other images share
    its batch (measured: 232 vs 123 steps for one image at batch 10 vs 1). With a fixed chunk shape
    every image's numbers are bit-identical whatever the batch, because rows of a chunk never mix.
    """
    gaps, losses, gradients = [], [], []
    for start, stop in _padded_chunks(len(current), micro_batch):
        rows = stop - start
        chunk = current[start:stop]
        if rows < micro_batch:
            chunk = torch.cat([chunk, chunk.new_zeros((micro_batch - rows, *chunk.shape[1:]))])
        chunk = chunk.detach().requires_grad_(True)
        with torch.enable_grad():
            source = extractor(chunk)[:rows]
            target = torch.zeros_like(source) if targets is None else targets[start:stop].view_as(source)
            # per-image losses; their sum only routes each image's own loss to its own pixels
            loss = 0.5 * (target - source).pow(2).flatten(1).sum(dim=1)
            (gradient,) = torch.autograd.grad(loss.sum(), chunk)
        gaps.append(feature_distance(source.detach(), target, distance))
        losses.append(loss.detach())
        gradients.append(gradient[:rows])
    return torch.cat(gaps), torch.cat(losses), torch.cat(gradients)


def lots(
    model: nn.Module,
    images: torch.Tensor,
    target_features: torch.Tensor | None = None,
    layer: str | None = None,
    iterations: int = THESIS_ITERATIONS,
    tau: float = THESIS_TAU,
    alpha: float = THESIS_ALPHA,
    distance: Distance | str = Distance.euclidean,
    record_distances: bool = False,
    progress: bool = False,
    step_rule: StepRule | str = StepRule.thesis,
    max_alpha: float | None = None,
    micro_batch: int = 4,
) -> LotsResult:
    """Thesis Algorithm 1 on a batch: move F_s = F(x) toward F_t until distance <= tau.

    Per iteration and still-running image: if distance(F_s, F_t) <= tau the image is returned
    (lines 5-6, 11-12); else loss = 1/2 ||F_t - F_s||^2 (eq. 3.1, line 7), its gradient by
    backpropagation (eq. 3.2, line 8), gradient_step = gradient * alpha / max|gradient| (line 9,
    the max taken per image) and x <- clamp(x - gradient_step, 0, 1) (line 10). ``step_rule``
    replaces the constant alpha of line 9 by a per-image size (:class:`StepRule`; ``thesis`` is
    the algorithm as written). ``target_features`` None is the zero vector (the thesis' choice);
    ``layer`` None means the network output (the thesis' "last layer"), otherwise any named
    module. Each image's result is independent of the batch it runs in (see ``micro_batch``).
    """
    step_rule = StepRule(step_rule)
    max_alpha = alpha if max_alpha is None else max_alpha
    if iterations < 0 or tau < 0 or alpha <= 0 or max_alpha <= 0 or micro_batch < 1:
        raise ValueError(
            f"LOTS needs iterations >= 0, tau >= 0, alpha > 0, max_alpha > 0 and micro_batch >= 1 "
            f"(got {iterations}, {tau}, {alpha}, {max_alpha}, {micro_batch})"
        )
    distance = Distance(distance)
    if distance == Distance.cosine and target_features is None:
        raise ValueError("LOTS with cosine distance cannot reach the zero target (its cosine distance is always 1); use distance=euclidean or a class/mean target")
    extractor = FeatureExtractor(model, layer)
    device = images.device
    adversarial = images.detach().clamp(0, 1).clone()
    batch = adversarial.shape[0]
    final_distance = torch.full((batch,), float("nan"), device=device)
    steps = torch.zeros(batch, dtype=torch.long, device=device)
    converged = torch.zeros(batch, dtype=torch.bool, device=device)
    history = torch.full((iterations + 1, batch), float("nan"), device=device) if record_distances else None

    active = torch.arange(batch, device=device)
    current = adversarial.clone()
    all_targets = None if target_features is None else target_features.detach().to(device)
    step_size = torch.full((batch,), float(alpha), device=device)  # per-image L-inf step (backtracking)
    previous_gap = torch.full((batch,), float("inf"), device=device)
    goal = 0.5 * tau**2  # the loss value at distance tau (Polyak's f*)
    was_training = model.training
    model.eval()
    try:
        for iteration in tqdm(range(iterations + 1), desc="LOTS", disable=not progress, leave=False, mininterval=2):
            if active.numel() == 0:
                break
            targets = None if all_targets is None else all_targets[active]
            gap, loss, gradient = _features_and_gradients(extractor, current, targets, distance, micro_batch)
            if history is not None:
                history[iteration, active] = gap
            # line 5-6: an image within tau is returned as it is; after the last iteration every image is
            done = (gap <= tau) | (iteration == iterations)
            if done.any():
                finished = active[done]
                adversarial[finished] = current[done]
                final_distance[finished] = gap[done]
                converged[finished] = gap[done] <= tau
                keep = ~done
                active, current, gradient, gap, loss = active[keep], current[keep], gradient[keep], gap[keep], loss[keep]
                if active.numel() == 0:
                    break
            flat = gradient.flatten(1)
            largest = flat.abs().amax(dim=1).clamp_min(torch.finfo(gradient.dtype).tiny)
            if step_rule == StepRule.thesis:
                size = torch.full_like(largest, alpha)
            elif step_rule == StepRule.backtracking:
                rose = gap > previous_gap[active]
                size = torch.where(rose, step_size[active] / 2, (step_size[active] * 2).clamp(max=alpha))
                step_size[active] = size
            else:
                eta = (loss - goal).clamp_min(0) / flat.pow(2).sum(dim=1).clamp_min(torch.finfo(gradient.dtype).tiny)
                size = (eta * largest).clamp(max=max_alpha)
            previous_gap[active] = gap
            # line 9-10: the pixel with the largest |gradient| moves by exactly `size`, then clamp to [0, 1]
            scale = (size / largest).view(-1, *([1] * (gradient.dim() - 1)))
            current = (current - gradient * scale).clamp(0, 1)
            steps[active] += 1
    finally:
        model.train(was_training)
    return LotsResult(adversarial.detach(), final_distance, steps, converged, history)


@torch.no_grad()
def extract_features(model: nn.Module, images: torch.Tensor, layer: str | None = None, batch_size: int = 256) -> torch.Tensor:
    """F(x) for many images, in batches (used for the class and mean targets)."""
    extractor = FeatureExtractor(model, layer)
    parts = [extractor(images[start : start + batch_size]).detach() for start in range(0, len(images), batch_size)]
    return torch.cat(parts)


def random_index_per_class(labels: torch.Tensor, num_classes: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One seeded random sample index per class (num_classes,), for the class target."""
    _check_every_class(labels, num_classes)
    scores = torch.rand(len(labels), generator=generator).to(labels.device)
    # sort by score, then stably by class, and take each class' first
    by_score = torch.argsort(scores)
    grouped = by_score[torch.argsort(labels[by_score], stable=True)]
    counts = torch.bincount(labels, minlength=num_classes)
    return grouped[torch.cumsum(counts, 0) - counts]


@torch.no_grad()
def mean_target_bank(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int, layer: str | None = None
) -> torch.Tensor:
    """Mean feature of every class (num_classes, *feature shape), streamed over (images, labels) batches
    so that a whole ImageNet training split never has to sit in memory (thesis Sect. 4.2, mean F_t)."""
    extractor = FeatureExtractor(model, layer)
    sums = counts = shape = None
    for images, labels in batches:
        features = extractor(images).detach()
        flat = features.flatten(1)
        if sums is None:
            shape = features.shape[1:]
            sums = torch.zeros(num_classes, flat.shape[1], device=flat.device)
            counts = torch.zeros(num_classes, device=flat.device)
        sums.index_add_(0, labels.to(flat.device), flat)
        counts += torch.bincount(labels.to(flat.device), minlength=num_classes)
    if sums is None or bool((counts == 0).any()):
        missing = [] if counts is None else torch.nonzero(counts == 0)[:, 0].tolist()
        raise ValueError(f"no training image for classes {missing[:10] or 'all'}; class and mean LOTS targets need every class")
    return (sums / counts.unsqueeze(1)).view(num_classes, *shape)


def _check_every_class(labels: torch.Tensor, num_classes: int) -> None:
    missing = sorted(set(range(num_classes)) - set(labels.unique().tolist()))
    if missing:
        raise ValueError(f"no training image for classes {missing[:10]}; class and mean LOTS targets need every class")


def class_target_bank(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    kind: TargetKind | str,
    layer: str | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Per-class targets F_t^c (num_classes, *feature shape) from in-memory training images (Sect. 4.2).

    ``class``: the features of one random training image of each class; ``mean``: the mean
    training feature of each class. ``images`` are [0, 1] floats on the model's device.
    """
    kind = TargetKind(kind)
    _check_every_class(labels, num_classes)
    if kind == TargetKind.class_:
        return extract_features(model, images[random_index_per_class(labels, num_classes, generator)], layer, batch_size)
    if kind == TargetKind.mean:
        batches = ((images[start : start + batch_size], labels[start : start + batch_size]) for start in range(0, len(images), batch_size))
        return mean_target_bank(model, batches, num_classes, layer)
    raise ValueError(f"target kind {kind.value!r} has no per-class bank; the zero target needs none")
