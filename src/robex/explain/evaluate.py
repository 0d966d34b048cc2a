"""Run one explanation method over a set of images and score it with the five XAI metrics.

This is the protocol of thesis Sect. 5.1: the metrics score the top predicted class c; CAMs
explain c (Sect. 5.1.2), LOTS' class/mean targets F_t^c are picked by the image's label
(Sect. 5.1.1, "each image with the class source feature F_s^c was associated with F_t^c") unless
asked otherwise. The activation maps are scored by Average Drop / Increase, Coherency and
Insertion / Deletion, and the time to produce the maps is measured in the same run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from robex.explain.lots import Distance, LotsResult, StepRule, lots
from robex.explain.metrics import (
    Explainer,
    area_under_curve,
    average_drop_increase,
    class_probabilities,
    coherency,
    constant_maps,
    explanation_map,
    insertion_deletion_curves,
)
from robex.explain.visualize import gaussian_blur, lots_activation_map

METRIC_COLUMNS = {
    "average_drop": "Avg Drop ↓",
    "average_increase": "Avg Increase ↑",
    "coherency": "Coherency ↑",
    "insertion": "Insertion ↑",
    "deletion": "Deletion ↓",
}


class LotsExplainer:
    """LOTS (Algorithm 1) followed by its visualisation (Algorithm 2), as an explainer.

    ``target_bank`` (num_classes, *feature shape) gives F_t^c per explained class c (class or
    mean target); None is the zero target. While ``record`` is set, each call's
    :class:`LotsResult` is kept in ``results`` (the stage keeps those of the original images
    for convergence statistics and figures, not those of the coherency re-run).
    """

    def __init__(
        self,
        model: nn.Module,
        target_bank: torch.Tensor | None = None,
        layer: str | None = None,
        iterations: int = 500,
        tau: float = 0.1,
        alpha: float = 1 / 255,
        distance: Distance | str = Distance.euclidean,
        blur_size: int = 49,
        step_rule: StepRule | str = StepRule.thesis,
        max_alpha: float | None = None,
        micro_batch: int = 4,
    ) -> None:
        self.model = model
        self.step_rule = StepRule(step_rule)
        self.max_alpha = max_alpha
        self.micro_batch = micro_batch
        self.target_bank = target_bank
        self.layer = layer
        self.iterations = iterations
        self.tau = tau
        self.alpha = alpha
        self.distance = Distance(distance)
        self.blur_size = blur_size
        self.record = False
        self.results: list[LotsResult] = []

    def __call__(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        targets = None if self.target_bank is None else self.target_bank.to(images.device)[classes.to(images.device)]
        result = lots(
            self.model, images, targets, self.layer, self.iterations, self.tau, self.alpha, self.distance,
            step_rule=self.step_rule, max_alpha=self.max_alpha, micro_batch=self.micro_batch,
        )
        if self.record:
            self.results.append(result)
        return lots_activation_map(images, result.adversarial, self.blur_size)

    def recorded(self) -> LotsResult:
        """The recorded results concatenated over batches (in image order)."""
        if not self.results:
            raise RuntimeError("no LOTS result was recorded")
        joined = [torch.cat([getattr(r, name) for r in self.results]) for name in ("adversarial", "distance", "steps", "converged")]
        return LotsResult(*joined)


@dataclass
class MethodScores:
    """Per-image metric values (percent) of one method, its maps and its time per image."""

    method: str
    average_drop: torch.Tensor
    average_increase: torch.Tensor
    coherency: torch.Tensor
    insertion: torch.Tensor
    deletion: torch.Tensor
    milliseconds_per_image: float
    maps: torch.Tensor
    explanation_scores: torch.Tensor
    extra: dict[str, float] = field(default_factory=dict)
    adversarial: torch.Tensor | None = None  # LOTS images of the originals (LOTS only)

    def summary(self) -> dict[str, float]:
        """Mean of every metric over the images, plus ms per image: one row of Tables 5.1-5.3."""
        means = {name: float(getattr(self, name).float().mean()) for name in METRIC_COLUMNS}
        return {**means, "ms_per_image": self.milliseconds_per_image, **self.extra}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate_explainer(
    model: nn.Module,
    explainer: Explainer,
    images: torch.Tensor,
    method: str,
    batch_size: int = 64,
    steps: int = 224,
    substrate_blur_size: int = 11,
    substrate_blur_sigma: float = 5.0,
    progress: bool = True,
    explained_classes: torch.Tensor | None = None,
) -> MethodScores:
    """Explain every image and score the maps for its top predicted class c (thesis Sect. 5.1).

    The explainer is asked for ``explained_classes`` (e.g. the labels, for LOTS' class/mean
    targets) or, if None, for c. Y and O of eq. 3.4 are softmax probabilities of c on the
    original image and on x * map; coherency re-explains the same class on x * map;
    insertion/deletion use ``steps`` steps and a Gaussian-blurred copy (``substrate_blur_size``,
    ``substrate_blur_sigma``) as substrate. ``extra["constant_map_pct"]`` is the share of maps
    without any ordering (all values equal), for which coherency is 50 by the library's rule.
    """
    model.eval()
    device = images.device
    probabilities = class_probabilities(model, images, batch_size)
    classes = probabilities.argmax(dim=1)
    base_scores = probabilities.gather(1, classes.view(-1, 1))[:, 0]
    asked = classes if explained_classes is None else explained_classes.to(device)

    maps_parts = []
    elapsed = 0.0
    if hasattr(explainer, "record"):
        explainer.record = True
    try:
        for start in tqdm(range(0, len(images), batch_size), desc=f"{method} maps", disable=not progress, leave=False):
            batch, batch_classes = images[start : start + batch_size], asked[start : start + batch_size]
            _synchronize(device)
            began = time.perf_counter()
            maps_parts.append(explainer(batch, batch_classes).detach())
            _synchronize(device)
            elapsed += time.perf_counter() - began
    finally:
        if hasattr(explainer, "record"):
            explainer.record = False
    maps = torch.cat(maps_parts)

    explanations = explanation_map(images, maps)
    explanation_scores = class_probabilities(model, explanations, batch_size).gather(1, classes.view(-1, 1))[:, 0]
    drop, increase = average_drop_increase(base_scores, explanation_scores)

    coherency_parts, insertion_parts, deletion_parts = [], [], []
    substrate = gaussian_blur(images, substrate_blur_size, substrate_blur_sigma)
    for start in tqdm(range(0, len(images), batch_size), desc=f"{method} metrics", disable=not progress, leave=False):
        window = slice(start, start + batch_size)
        maps_of_explanations = explainer(explanations[window], asked[window]).detach()
        coherency_parts.append(coherency(maps[window], maps_of_explanations))
        insertion, deletion = insertion_deletion_curves(
            model, images[window], maps[window], classes[window], steps, substrate[window], batch_size
        )
        insertion_parts.append(area_under_curve(insertion) * 100)
        deletion_parts.append(area_under_curve(deletion) * 100)

    return MethodScores(
        method=method,
        average_drop=drop.cpu(),
        average_increase=increase.cpu(),
        coherency=torch.cat(coherency_parts).cpu(),
        insertion=torch.cat(insertion_parts).cpu(),
        deletion=torch.cat(deletion_parts).cpu(),
        milliseconds_per_image=elapsed * 1000 / max(len(images), 1),
        maps=maps.cpu(),
        explanation_scores=explanation_scores.cpu(),
        extra={"constant_map_pct": float(constant_maps(maps).float().mean() * 100)},
    )
