"""The methods compared in thesis Tables 5.1-5.3 (CAM baselines and LOTS), built and scored from
plain arguments: one call per (backbone, method) gives the per-image metrics of Sect. 5.1."""

from __future__ import annotations

import torch
from torch import nn

from robex.explain.cam import CAM_METHODS, build_cam
from robex.explain.evaluate import METRIC_COLUMNS, LotsExplainer, MethodScores, evaluate_explainer

# "lots_fast": LOTS with the faster step rule ``lots_fast_rule`` beside the thesis rule, as a row of its own
METHODS = (*CAM_METHODS, "lots", "lots_fast")


def build_explainer(
    method: str,
    model: nn.Module,
    cam_layer: str | None = None,
    lots_layer: str | None = None,
    bank: torch.Tensor | None = None,
    lots_iterations: int = 500,
    lots_tau: float = 0.1,
    lots_alpha: float = 1 / 255,
    lots_distance: str = "euclidean",
    lots_blur_size: int = 7,
    lots_step_rule: str = "thesis",
    lots_max_alpha: float | None = None,
    lots_micro_batch: int = 4,
    lots_fast_rule: str = "polyak",
    smoothgrad_samples: int = 4,
    smoothgrad_noise: float = 0.15,
    seed: int = 0,
):
    """LOTS toward ``bank`` (None = zero target) at ``lots_layer``, or a CAM method at ``cam_layer``."""
    if method in ("lots", "lots_fast"):
        return LotsExplainer(
            model, bank, lots_layer, lots_iterations, lots_tau, lots_alpha, lots_distance, lots_blur_size,
            step_rule=lots_step_rule if method == "lots" else lots_fast_rule, max_alpha=lots_max_alpha, micro_batch=lots_micro_batch,
        )
    if method in CAM_METHODS:
        return build_cam(model, cam_layer, method, smoothgrad_samples, smoothgrad_noise, seed)
    raise ValueError(f"explanation method {method!r} is unknown; choose from {list(METHODS)}")


def score_method(
    method: str,
    explainer,
    model: nn.Module,
    images: torch.Tensor,
    **evaluate_options,
) -> MethodScores:
    """``evaluate_explainer(model, explainer, images, method, **evaluate_options)`` plus, for LOTS,
    its mean steps, converged share, mean feature distance and the LOTS images (for the figures)."""
    result = evaluate_explainer(model, explainer, images, method, **evaluate_options)
    if isinstance(explainer, LotsExplainer):
        recorded = explainer.recorded()
        result.extra.update(
            lots_mean_steps=float(recorded.steps.float().mean()),
            lots_converged_pct=float(recorded.converged.float().mean() * 100),
            lots_mean_distance=float(recorded.distance.float().mean()),
        )
        result.adversarial = recorded.adversarial.cpu()
    return result


def per_image_rows(backbone: str, method: str, result: MethodScores, labels: torch.Tensor, target: str | None = None) -> list[dict]:
    """One row per image: its label and the five metrics (the ``per_image`` table)."""
    values = {name: getattr(result, name).tolist() for name in METRIC_COLUMNS}
    return [
        {"model": backbone, "method": method, "target": target or "", "image": index, "label": int(labels[index]),
         **{name: values[name][index] for name in METRIC_COLUMNS}}
        for index in range(len(labels))
    ]


def explained_classes(method: str, target: str, target_class: str, labels: torch.Tensor) -> torch.Tensor | None:
    """The class each image's explanation is asked for: the labels for LOTS' class/mean targets when
    ``target_class`` is ``label`` (thesis Sect. 5.1.1), else None (the predicted class, Sect. 5.1.2)."""
    if target_class not in ("label", "prediction"):
        raise ValueError(f"target_class {target_class!r} is not one of label, prediction")
    if method in ("lots", "lots_fast") and target != "zero" and target_class == "label":
        return labels
    return None
