"""XAI metrics of thesis Sect. 3.3, batched: Average Drop / Increase, Coherency, Insertion / Deletion.

Written in torch here because the thesis ran them batched on the GPU with a blurred substrate:
pytorch-grad-cam 1.5.7 has Coherency (``metrics/arcc.py``) and confidence-drop metrics
(``metrics/cam_mult_image.py``) on numpy, and no insertion/deletion with a blurred substrate.
``coherency`` follows the library's ``Coherency`` exactly, including its degenerate case: a
constant map has no Pearson correlation, the library's eps in the denominator makes it r = 0, so
coherency 50 (tested against ``batch_pearson_coherency``). ``constant_maps`` counts such maps so
that a table can say how many there were.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Explainer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def class_probabilities(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Softmax scores (N, classes) in batches; the 'score of class c' of the metrics."""
    parts = [torch.softmax(model(images[start : start + batch_size]), dim=1) for start in range(0, len(images), batch_size)]
    return torch.cat(parts)


def explanation_map(images: torch.Tensor, activation_maps: torch.Tensor) -> torch.Tensor:
    """x * CAM(x): the image with unimportant regions darkened (Grad-CAM++ evaluation, Fig. 3.5)."""
    return images * activation_maps.unsqueeze(1)


def average_drop_increase(scores_on_images: torch.Tensor, scores_on_explanations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 3.4 per image, in percent: drop = max(0, Y - O) / Y * 100, increase = 1[Y < O] * 100.

    Averaging over images gives Average Drop and Average Increase (the thesis' sum in eq. 3.4
    misses the 1/N that its text and Chattopadhyay et al. use).
    """
    drop = (scores_on_images - scores_on_explanations).clamp_min(0) / scores_on_images.clamp_min(1e-12) * 100
    increase = (scores_on_images < scores_on_explanations).float() * 100
    return drop, increase


def pearson_per_image(first: torch.Tensor, second: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of each pair of maps (B,H,W), as pytorch-grad-cam's ``batch_pearson_coherency``:
    cov / (std_a * std_b + eps) with the n - 1 estimator, so a constant map gives r = 0 (not 1)."""
    a = first.flatten(1).double()
    b = second.flatten(1).double()
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    dof = a.shape[1] - 1
    covariance = (a * b).sum(dim=1) / dof
    spread = (a.pow(2).sum(dim=1) / dof).sqrt() * (b.pow(2).sum(dim=1) / dof).sqrt()
    return (covariance / (spread + eps)).float()


def coherency(maps: torch.Tensor, maps_of_explanations: torch.Tensor) -> torch.Tensor:
    """Eq. 3.6 normalised to percent: (Pearson(CAM(x * CAM(x)), CAM(x)) + 1) / 2 * 100, per image.

    A constant map (e.g. an all-zero Grad-CAM++ map) scores 50, as in pytorch-grad-cam, never 100:
    a method that returns blank maps must not look perfectly coherent.
    """
    return (pearson_per_image(maps_of_explanations, maps) + 1) / 2 * 100


def constant_maps(maps: torch.Tensor) -> torch.Tensor:
    """True for each map (B,H,W) whose values are all equal (no saliency ordering at all)."""
    flat = maps.flatten(1)
    return flat.amax(dim=1) == flat.amin(dim=1)


def pixel_ranks(saliency: torch.Tensor) -> torch.Tensor:
    """Rank of every pixel (B,H,W) by decreasing saliency (0 = most important); ties keep raster order."""
    flat = saliency.flatten(1)
    order = torch.argsort(-flat, dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks.view_as(saliency)


@torch.no_grad()
def insertion_deletion_curves(
    model: nn.Module,
    images: torch.Tensor,
    saliency: torch.Tensor,
    classes: torch.Tensor,
    steps: int,
    substrate: torch.Tensor,
    batch_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RISE insertion and deletion curves (Petsiuk et al. 2018), (B, steps + 1) each.

    Step k replaces the ceil(H*W / steps) * k most salient pixels: deletion swaps them from the
    image to ``substrate`` (the thesis: a blurred copy), insertion from the substrate to the
    image. The curve is the softmax probability of ``classes`` (the originally top class).
    """
    if steps < 1:
        raise ValueError(f"insertion/deletion steps must be >= 1 (got {steps})")
    count, height, width = saliency.shape
    pixels = height * width
    per_step = -(-pixels // steps)
    ranks = pixel_ranks(saliency).unsqueeze(1)  # (B,1,H,W)
    revealed = torch.clamp(torch.arange(steps + 1, device=images.device) * per_step, max=pixels)
    curves = {}
    for name, start, finish in (("deletion", images, substrate), ("insertion", substrate, images)):
        scores = torch.empty(steps + 1, count, device=images.device)
        steps_per_chunk = max(1, batch_size // max(count, 1))
        for first in range(0, steps + 1, steps_per_chunk):
            chunk = revealed[first : first + steps_per_chunk]
            mask = ranks.unsqueeze(0) < chunk.view(-1, 1, 1, 1, 1)  # (K,B,1,H,W)
            mixed = torch.where(mask, finish.unsqueeze(0), start.unsqueeze(0)).flatten(0, 1)
            probabilities = torch.softmax(model(mixed), dim=1).view(len(chunk), count, -1)
            scores[first : first + len(chunk)] = probabilities.gather(2, classes.view(1, -1, 1).expand(len(chunk), -1, 1))[..., 0]
        curves[name] = scores.T
    return curves["insertion"], curves["deletion"]


def area_under_curve(curves: torch.Tensor) -> torch.Tensor:
    """Trapezoid rule over the fraction of pixels in [0, 1] (RISE's ``auc``), per curve."""
    return torch.trapezoid(curves, dx=1.0 / (curves.shape[1] - 1), dim=1)
