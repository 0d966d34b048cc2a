"""Stage `explain`: LOTS visualisations against CAM methods with the thesis' XAI metrics.

    python -m robex.explain                          # CIFAR-10, Table 2 CNN + ResNet-18
    python -m robex.explain explain=quick            # the quick experiment (~3 min, 2 CPU cores)
    python -m robex.explain explain=imagenet         # AlexNet, ResNet-50, DenseNet-121, ConvNeXt-Tiny
    python -m robex.explain -m explain.lots.blur_size=3,7,15 'explain.methods=[grad_cam,lots]'

Writes Tables 5.1-5.3 (CSV + Markdown), per-image metrics, overlay figures and metrics.json
under ``output_dir`` (atomically) and logs all of it to MLflow.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import hydra
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from robex.utils.io import publish_directory
from robex.explain.data import ImageSource
from robex.explain.evaluate import MethodScores
from robex.explain.figures import blur_sizes_figure, methods_figure, procedure_figure, targets_figure
from robex.explain.lots import TargetKind
from robex.explain.methods import METHODS, build_explainer, per_image_rows, score_method
from robex.explain.tables import lots_targets_table, methods_table, timing_table
from robex.explain.targets import cached_tensor, target_bank
from robex.models.io import load_model
from robex.tracking import log_figure, log_metrics, log_table, mlflow_run
from robex.utils.errors import RobexError
from robex.utils.hydra import CONFIG_PATH, user_errors_exit
from robex.utils.runtime import resolve_device, seed_everything

log = logging.getLogger("robex.explain")


def _image_source(data: DictConfig) -> ImageSource:
    return ImageSource(
        data.kind, prepared_dir=data.get("prepared_dir"), root=data.get("root"), wnids=tuple(data.wnids) if data.get("wnids") else None,
        image_size=data.get("image_size", 224), resize=data.get("resize", 256),
    )


def load_backbone(name: str, spec: DictConfig, device: torch.device) -> nn.Module:
    """A trained ``model.pt`` (CIFAR-10 backbones) or a model config to instantiate (ImageNet zoo)."""
    if spec.get("model") is not None:
        return instantiate(spec.model.net, _convert_="all").to(device).eval()
    if not spec.get("checkpoint"):
        raise RobexError(f"backbone {name!r} has neither a checkpoint nor a model config; set explain.backbones.{name}.checkpoint")
    return load_model(spec.checkpoint, device=device)


def _file_key(path: str | None) -> str:
    if not path or not Path(path).is_file():
        return "untrained"
    stat = Path(path).stat()
    return f"{stat.st_size}-{int(stat.st_mtime)}"


def _target_bank(
    kind: str, name: str, spec: DictConfig, model: nn.Module, cfg: DictConfig, device: torch.device, num_classes: int
) -> torch.Tensor | None:
    """F_t^c per class for the class/mean targets, computed once per backbone and cached on disk."""
    if TargetKind(kind) == TargetKind.zero:
        return None
    data = cfg.explain.data
    key = f"{name}|{data.kind}|{data.get('prepared_dir') or data.get('root')}|{_file_key(spec.get('checkpoint'))}|{spec.get('model')}|{spec.get('lots_layer')}|{kind}|{data.target_images_per_class}|{cfg.seed}"
    cache = Path(cfg.paths.cache_dir) / "explain" / f"{name}_{kind}_{hashlib.sha1(key.encode()).hexdigest()[:12]}.pt"
    return cached_tensor(cache, lambda: target_bank(
        kind, model, num_classes, device, _image_source(data), data.train_split, data.target_images_per_class,
        layer=spec.get("lots_layer"), seed=cfg.seed, batch_size=cfg.batch_size,
    ), device)


def _explainer(method: str, model: nn.Module, spec: DictConfig, cfg: DictConfig, bank: torch.Tensor | None):
    lots, smooth = cfg.explain.lots, cfg.explain.smoothgrad
    return build_explainer(
        method, model, cam_layer=spec.get("cam_layer"), lots_layer=spec.get("lots_layer"), bank=bank,
        lots_iterations=lots.iterations, lots_tau=lots.tau, lots_alpha=lots.alpha, lots_distance=lots.distance,
        lots_blur_size=lots.blur_size, smoothgrad_samples=smooth.samples, smoothgrad_noise=smooth.noise_level, seed=cfg.seed,
    )


def _score(method: str, explainer, model: nn.Module, images: torch.Tensor, cfg: DictConfig) -> MethodScores:
    metrics = cfg.explain.metrics
    return score_method(
        method, explainer, model, images, batch_size=cfg.batch_size, steps=metrics.steps,
        substrate_blur_size=metrics.substrate_blur_size, substrate_blur_sigma=metrics.substrate_blur_sigma, progress=cfg.progress,
    )


def validate(cfg: DictConfig) -> None:
    settings = cfg.explain
    if settings.data.kind not in ("cifar10", "imagenet"):
        raise RobexError(f"explain.data.kind={settings.data.kind!r} is not supported; use cifar10 or imagenet")
    unknown = [b for b in settings.use_backbones if b not in settings.backbones]
    if unknown:
        raise RobexError(f"explain.use_backbones names {unknown}, which are not in explain.backbones {list(settings.backbones)}")
    bad = [m for m in settings.methods if m not in METHODS]
    if bad:
        raise RobexError(f"explain.methods contains {bad}; choose from {list(METHODS)}")
    for target in [settings.lots.target, *settings.targets_table.targets]:
        if target not in [t.value for t in TargetKind]:
            raise RobexError(f"LOTS target {target!r} is not one of zero, class, mean")
    for name in settings.use_backbones:
        spec = settings.backbones[name]
        if spec.get("model") is None and spec.get("checkpoint") and not Path(spec.checkpoint).is_file():
            raise FileNotFoundError(f"model file {spec.checkpoint!r} of backbone {name!r} does not exist; train it first with `python -m robex.train` or set explain.backbones.{name}.checkpoint")
    if settings.lots.blur_size < 1 or settings.lots.blur_size % 2 == 0:
        raise RobexError(f"explain.lots.blur_size={settings.lots.blur_size} must be a positive odd number (49 for 224 px, 7 for 32 px)")


def run(cfg: DictConfig, output_dir: str | Path | None = None) -> dict:
    """The whole stage; ``output_dir`` overrides ``cfg.output_dir`` (each multirun job gets its own)."""
    validate(cfg)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    settings = cfg.explain
    images, labels = _image_source(settings.data).load(settings.data.split, settings.data.images_per_class)
    images = images.to(device)
    out_dir = Path(output_dir or cfg.output_dir)
    staging = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "figures").mkdir(parents=True)
    figure_index = min(int(settings.figures.image_index), len(images) - 1)

    summaries: dict[str, dict[str, dict]] = {}
    target_summaries: dict[str, dict] = {}
    per_image: list[dict] = []
    run_name = f"{settings.data.kind}-{'+'.join(settings.use_backbones)}"
    with mlflow_run(cfg, experiment=cfg.tracking.experiment, run_name=run_name, tracking_uri=cfg.tracking.uri):
        for backbone in settings.use_backbones:
            spec = settings.backbones[backbone]
            model = load_backbone(backbone, spec, device)
            with torch.no_grad():
                num_classes = model(images[:1]).shape[1]
            summaries[backbone] = {}
            maps, drops, lots_adversarial = {}, {}, None
            for method in settings.methods:
                bank = _target_bank(settings.lots.target, backbone, spec, model, cfg, device, num_classes) if method == "lots" else None
                result = _score(method, _explainer(method, model, spec, cfg, bank), model, images, cfg)
                summaries[backbone][method] = result.summary()
                log_metrics({f"{backbone}/{method}/{k}": v for k, v in result.summary().items()})
                per_image += per_image_rows(backbone, method, result, labels, settings.lots.target if method == "lots" else None)
                maps[method], drops[method] = result.maps[figure_index], float(result.average_drop[figure_index])
                if method == "lots":
                    lots_adversarial = result.adversarial[figure_index]
                    target_summaries_source = result
                log.info("%s %s: %s", backbone, method, {k: round(v, 2) for k, v in result.summary().items()})

            image = images[figure_index].cpu()
            title = f"{backbone}: image {figure_index} (label {int(labels[figure_index])})"
            log_figure(methods_figure(image, maps, drops, title), f"figures/methods_{backbone}.png", staging / "figures" / f"methods_{backbone}.png")
            if lots_adversarial is not None:
                blur_title = f"{title}, LOTS {settings.lots.target} F_t"
                log_figure(blur_sizes_figure(image, lots_adversarial, list(settings.figures.blur_sizes), blur_title),
                           f"figures/lots_blur_sizes_{backbone}.png", staging / "figures" / f"lots_blur_sizes_{backbone}.png")
                log_figure(procedure_figure(image, lots_adversarial, settings.lots.blur_size, blur_title),
                           f"figures/lots_procedure_{backbone}.png", staging / "figures" / f"lots_procedure_{backbone}.png")

            if backbone == settings.targets_table.backbone and settings.targets_table.targets:
                target_maps = {}
                for target in settings.targets_table.targets:
                    if target == settings.lots.target and "lots" in settings.methods:
                        result = target_summaries_source
                    else:
                        bank = _target_bank(target, backbone, spec, model, cfg, device, num_classes)
                        result = _score("lots", _explainer("lots", model, spec, cfg, bank), model, images, cfg)
                        per_image += per_image_rows(backbone, "lots", result, labels, target)
                    target_summaries[target] = result.summary()
                    target_maps[target] = result.maps[figure_index]
                    log_metrics({f"{backbone}/lots_target_{target}/{k}": v for k, v in result.summary().items()})
                log_figure(targets_figure(image, target_maps, f"{title}: LOTS targets"),
                           f"figures/lots_targets_{backbone}.png", staging / "figures" / f"lots_targets_{backbone}.png")

        tables = staging / "tables"
        if target_summaries:
            log_table(lots_targets_table(target_summaries, settings.targets_table.backbone), "tables/table_5_1_lots_targets", tables)
        log_table(methods_table(summaries), "tables/table_5_2_methods", tables)
        log_table(timing_table(summaries), "tables/table_5_3_ms_per_image", tables)
        log_table(pd.DataFrame(per_image), "tables/per_image", tables)
        metrics = {"methods": summaries, "lots_targets": target_summaries, "images": len(images)}
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

    # swap the finished folder in, so a killed run never leaves half an output behind
    publish_directory(staging, out_dir)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="explain")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    # sweep jobs write next to their Hydra job folder instead of racing for outputs/explain
    multirun = hydra_cfg.mode is not None and hydra_cfg.mode.name == "MULTIRUN"
    run(cfg, Path(hydra_cfg.runtime.output_dir) / "explain" if multirun else None)


if __name__ == "__main__":
    main()
