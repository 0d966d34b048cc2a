"""The experiment of thesis Sect. 5.1 on one backbone, from tensors and plain arguments.

:func:`study_backbone` scores every method of Table 5.2 (and, when asked, the LOTS targets of
Table 5.1) on the given images and draws the figures; the stage only loads models and data,
logs, and writes what this returns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from robex.explain.evaluate import MethodScores
from robex.explain.lots import TargetKind
from robex.explain.methods import build_explainer, explained_classes, per_image_rows, score_method


@dataclass(frozen=True)
class LotsOptions:
    """LOTS settings (Algorithm 1 and 2, Sect. 5.1): target F_t, which class' F_t^c, step rule."""

    target: str = "zero"
    target_class: str = "label"
    iterations: int = 500
    tau: float = 0.1
    alpha: float = 1 / 255
    distance: str = "euclidean"
    blur_size: int = 7
    step_rule: str = "thesis"
    max_alpha: float | None = None
    micro_batch: int = 4
    fast_rule: str = "polyak"  # the step rule of the "lots_fast" row

    def builder_options(self) -> dict:
        return {
            "lots_iterations": self.iterations, "lots_tau": self.tau, "lots_alpha": self.alpha, "lots_distance": self.distance,
            "lots_blur_size": self.blur_size, "lots_step_rule": self.step_rule, "lots_max_alpha": self.max_alpha,
            "lots_micro_batch": self.micro_batch, "lots_fast_rule": self.fast_rule,
        }


@dataclass
class BackboneStudy:
    """Summaries per method (Table 5.2/5.3 rows), per LOTS target (Table 5.1), per-image rows, figures."""

    methods: dict[str, dict[str, float]] = field(default_factory=dict)
    targets: dict[str, dict[str, float]] = field(default_factory=dict)
    per_image: list[dict] = field(default_factory=list)
    figures: dict[str, object] = field(default_factory=dict)


def study_backbone(
    name: str,
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    methods: Sequence[str],
    cam_layer: str | None,
    lots_layer: str | None,
    lots: LotsOptions,
    bank: Callable[[str], torch.Tensor | None],
    table_targets: Sequence[str] = (),
    smoothgrad_samples: int = 4,
    smoothgrad_noise: float = 0.15,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    figure_images: Sequence[int] = (0,),
    blur_sizes: Sequence[int] = (1, 3, 7, 15),
    **evaluate_options,
) -> BackboneStudy:
    """Tables 5.1-5.3 rows and figures of one backbone; ``bank(target)`` gives F_t^c per class (None = zero)."""
    from robex.explain.figures import blur_sizes_figure, methods_figure, procedure_figure, targets_figure

    study = BackboneStudy()
    shown = figure_indices(labels, figure_images)
    maps: dict[str, torch.Tensor] = {}
    drops: dict[str, torch.Tensor] = {}
    lots_results: dict[str, MethodScores] = {}

    def score(method: str, target: str) -> MethodScores:
        explainer = build_explainer(
            method, model, cam_layer=cam_layer, lots_layer=lots_layer, bank=bank(target) if method.startswith("lots") else None,
            smoothgrad_samples=smoothgrad_samples, smoothgrad_noise=smoothgrad_noise, seed=seed, **lots.builder_options(),
        )
        asked = explained_classes(method, target, lots.target_class, labels)
        result = score_method(method, explainer, model, images, explained_classes=asked, **evaluate_options)
        study.per_image.extend(per_image_rows(name, method, result, labels, target if method.startswith("lots") else None))
        return result

    for method in methods:
        result = score(method, lots.target)
        study.methods[method] = result.summary()
        maps[method], drops[method] = result.maps[shown], result.average_drop[shown]
        if method == "lots":
            lots_results[lots.target] = result
    for target in table_targets:
        if target not in lots_results:
            lots_results[target] = score("lots", target)
        study.targets[target] = lots_results[target].summary()

    with torch.no_grad():
        probabilities = torch.softmax(model(images[shown]), dim=1).cpu()
    captions = [_caption(int(labels[i]), probabilities[k], class_names) for k, i in enumerate(shown)]
    originals = images[shown].cpu()
    study.figures[f"methods_{name}"] = methods_figure(originals, maps, drops, captions, f"{name}: every method's map (drop = Avg Drop of that image)")
    if lots.target in lots_results and lots_results[lots.target].adversarial is not None:
        adversarial = lots_results[lots.target].adversarial[shown]
        rule = f"LOTS ({lots.step_rule} rule), {lots.target} F_t"
        study.figures[f"lots_blur_sizes_{name}"] = blur_sizes_figure(originals, adversarial, list(blur_sizes), captions, f"{name}: {rule}, Gaussian filter sizes (Fig. 5.6)")
        study.figures[f"lots_procedure_{name}"] = procedure_figure(originals, adversarial, lots.blur_size, captions, f"{name}: {rule}, the steps of Algorithm 2 (Fig. 4.2)")
    if len(study.targets) > 1:
        target_maps = {t: lots_results[t].maps[shown] for t in study.targets}
        study.figures[f"lots_targets_{name}"] = targets_figure(originals, target_maps, captions, f"{name}: LOTS targets F_t")
    return study


def figure_indices(labels: torch.Tensor, requested: Sequence[int], most: int = 6) -> list[int]:
    """The images the figures show: ``requested`` (clipped to the set, duplicates dropped) or, when
    it is empty, the first image of each of the first ``most`` classes present (so a figure shows
    several classes, not the first few images of class 0)."""
    if requested:
        return list(dict.fromkeys(min(int(i), len(labels) - 1) for i in requested))
    first: dict[int, int] = {}
    for index, label in enumerate(labels.tolist()):
        first.setdefault(int(label), index)
    return [first[c] for c in sorted(first)][:most]


def _caption(label: int, probabilities: torch.Tensor, class_names: Sequence[str] | None) -> str:
    def named(index: int) -> str:
        return class_names[index] if class_names and index < len(class_names) else str(index)

    predicted = int(probabilities.argmax())
    return f"{named(label)} / pred {named(predicted)} {float(probabilities[predicted]) * 100:.0f}%"


def validate_targets(targets: Sequence[str]) -> list[str]:
    """The target names that are not zero/class/mean (empty when all are fine)."""
    return [t for t in targets if t not in [k.value for k in TargetKind]]


def load_backbone(name: str, checkpoint: str | None, model_config: dict | None, device: torch.device) -> nn.Module:
    """A trained ``model.pt`` (CIFAR-10 backbones) or a model config to instantiate (ImageNet zoo)."""
    from robex.models.io import load_model
    from robex.utils.errors import RobexError

    if model_config is not None:
        from hydra.utils import instantiate

        return instantiate(model_config["net"], _convert_="all").to(device).eval()
    if not checkpoint:
        raise RobexError(f"backbone {name!r} has neither a checkpoint nor a model config; set explain.backbones.{name}.checkpoint")
    return load_model(checkpoint, device=device)


def check_settings(
    use_backbones: Sequence[str], backbones: dict, methods: Sequence[str], targets: Sequence[str], lots: LotsOptions
) -> None:
    """Every user error of the explain settings, before any run starts, as one sentence (RobexError)."""
    from pathlib import Path

    from robex.explain.lots import StepRule
    from robex.explain.methods import METHODS
    from robex.utils.errors import RobexError

    unknown = [b for b in use_backbones if b not in backbones]
    if unknown:
        raise RobexError(f"explain.use_backbones names {unknown}, which are not in explain.backbones {list(backbones)}")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise RobexError(f"explain.methods contains {bad}; choose from {list(METHODS)}")
    if validate_targets([lots.target, *targets]):
        raise RobexError(f"LOTS targets {validate_targets([lots.target, *targets])} are not zero, class or mean (explain.lots.target, explain.targets_table.targets)")
    if lots.target_class not in ("label", "prediction"):
        raise RobexError(f"explain.lots.target_class={lots.target_class!r} must be label (the thesis) or prediction")
    for key in ("step_rule", "fast_rule"):
        if getattr(lots, key) not in [r.value for r in StepRule]:
            raise RobexError(f"explain.lots.{key}={getattr(lots, key)!r} must be one of {[r.value for r in StepRule]}")
    if lots.blur_size < 1 or lots.blur_size % 2 == 0:
        raise RobexError(f"explain.lots.blur_size={lots.blur_size} must be a positive odd number (49 for 224 px, 7 for 32 px)")
    for name in use_backbones:
        spec = backbones[name]
        if spec.get("model") is None and spec.get("checkpoint") and not Path(spec["checkpoint"]).is_file():
            raise FileNotFoundError(f"model file {spec['checkpoint']!r} of backbone {name!r} does not exist; train it first with `python -m robex.train` or set explain.backbones.{name}.checkpoint")


def study_backbones(
    settings: dict,
    source,
    images: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device,
    cache_dir: str,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = False,
    on_backbone: Callable[[str, BackboneStudy], None] | None = None,
) -> tuple[dict, dict, list[dict]]:
    """:func:`study_backbone` for every backbone of ``settings`` (the plain ``explain`` settings
    dict); ``on_backbone(name, study)`` runs after each (logging). Returns the Table 5.2 summaries
    per backbone and method, the Table 5.1 summaries per target, and the per-image rows."""
    from robex.explain.targets import cached_target_bank, file_key

    data, lots = settings["data"], LotsOptions(**settings["lots"])
    summaries: dict[str, dict] = {}
    targets: dict[str, dict] = {}
    per_image: list[dict] = []
    for name in settings["use_backbones"]:
        spec = settings["backbones"][name]
        model = load_backbone(name, spec.get("checkpoint"), spec.get("model"), device)
        with torch.no_grad():
            num_classes = model(images[:1]).shape[1]
        identity = f"{file_key(spec.get('checkpoint'))}|{spec.get('model')}"

        def bank(target: str, model=model, spec=spec, identity=identity, name=name, num_classes=num_classes):
            return cached_target_bank(cache_dir, name, identity, target, model, num_classes, device, source, data["train_split"],
                                      data["target_images_per_class"], spec.get("lots_layer"), seed, batch_size)

        table = settings["targets_table"]
        study = study_backbone(
            name, model, images, labels, settings["methods"], spec.get("cam_layer"), spec.get("lots_layer"), lots, bank,
            table["targets"] if name == table["backbone"] else (), settings["smoothgrad"]["samples"],
            settings["smoothgrad"]["noise_level"], seed, source.class_names(data["split"]), settings["figures"]["image_indices"],
            settings["figures"]["blur_sizes"], batch_size=batch_size, steps=settings["metrics"]["steps"], progress=progress,
            substrate_blur_size=settings["metrics"]["substrate_blur_size"], substrate_blur_sigma=settings["metrics"]["substrate_blur_sigma"],
        )
        summaries[name], per_image = study.methods, per_image + study.per_image
        targets.update(study.targets)
        if on_backbone is not None:
            on_backbone(name, study)
    return summaries, targets, per_image


def target_source_text(count: int, per_class: int | None, split: str) -> str:
    """Where the class/mean F_t come from, for Table 5.1 (e.g. "all 50000 train images")."""
    return f"all {count} {split} images" if per_class is None else f"first {per_class} per class, {count} {split} images"
