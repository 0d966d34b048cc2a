"""Schema of the `explain` stage (conf/explain.yaml and the conf/explain/ presets, Weber 2023 Sect. 5.1)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from robex.utils.errors import RobexError

METHODS = ("random_cam", "grad_cam", "grad_cam_plusplus", "smoothgrad_cam_plusplus", "layer_cam", "hires_cam", "lots", "lots_fast")
TARGETS = ("zero", "class", "mean")
STEP_RULES = ("thesis", "backtracking", "polyak")


@dataclass
class ExplainDataConfig:
    kind: str = "cifar10"  # cifar10 | imagenet
    prepared_dir: Optional[str] = None
    root: Optional[str] = None
    split: str = "test"
    wnids: Optional[List[str]] = None
    image_size: int = 224
    resize: int = 256
    images_per_class: Optional[int] = None  # null = every image of the split
    train_split: str = "train"
    target_images_per_class: Optional[int] = None  # null = the whole training split (thesis)

    def __post_init__(self) -> None:
        if self.kind not in ("cifar10", "imagenet"):
            raise RobexError(f"explain.data.kind={self.kind!r} is not supported; use cifar10 or imagenet")
        for key in ("images_per_class", "target_images_per_class"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise RobexError(f"explain.data.{key}={getattr(self, key)} must be >= 1 or null (all images)")


@dataclass
class BackboneConfig:
    checkpoint: Optional[str] = None
    model: Any = None  # a model config (conf/model/imagenet_*.yaml) instead of a checkpoint
    cam_layer: Optional[str] = None
    lots_layer: Optional[str] = None  # null = network output (the thesis' "last layer")


@dataclass
class LotsConfig:
    target: str = "zero"
    target_class: str = "label"  # label (thesis Sect. 5.1.1) | prediction
    iterations: int = 500
    tau: float = 0.1
    alpha: float = 0.00392156862745098
    distance: str = "euclidean"
    blur_size: int = 49
    step_rule: str = "thesis"
    max_alpha: Optional[float] = None
    micro_batch: int = 4
    fast_rule: str = "polyak"  # step rule of the "lots_fast" method row

    def __post_init__(self) -> None:
        if self.fast_rule not in STEP_RULES:
            raise RobexError(f"explain.lots.fast_rule={self.fast_rule!r} is not one of {', '.join(STEP_RULES)}")
        if self.target not in TARGETS:
            raise RobexError(f"explain.lots.target={self.target!r} is not one of {', '.join(TARGETS)}")
        if self.target_class not in ("label", "prediction"):
            raise RobexError(f"explain.lots.target_class={self.target_class!r} must be label (the thesis) or prediction")
        if self.step_rule not in STEP_RULES:
            raise RobexError(f"explain.lots.step_rule={self.step_rule!r} is not one of {', '.join(STEP_RULES)}")
        if self.distance not in ("euclidean", "cosine"):
            raise RobexError(f"explain.lots.distance={self.distance!r} must be euclidean or cosine")
        if self.iterations < 0 or self.tau < 0 or self.alpha <= 0 or self.micro_batch < 1:
            raise RobexError("explain.lots needs iterations >= 0, tau >= 0, alpha > 0 and micro_batch >= 1")
        if self.blur_size < 1 or self.blur_size % 2 == 0:
            raise RobexError(f"explain.lots.blur_size={self.blur_size} must be a positive odd number (49 for 224 px, 7 for 32 px)")


@dataclass
class TargetsTableConfig:
    backbone: Optional[str] = None
    targets: List[str] = field(default_factory=lambda: list(TARGETS))


@dataclass
class SmoothGradConfig:
    samples: int = 4
    noise_level: float = 0.15


@dataclass
class XaiMetricsConfig:
    steps: int = 224
    substrate_blur_size: int = 11
    substrate_blur_sigma: float = 5.0


@dataclass
class FiguresConfig:
    image_indices: List[int] = field(default_factory=lambda: [0])
    blur_sizes: List[int] = field(default_factory=lambda: [1, 3, 7, 15])


@dataclass
class ExplainSettings:
    data: ExplainDataConfig = field(default_factory=ExplainDataConfig)
    backbones: Dict[str, BackboneConfig] = field(default_factory=dict)
    use_backbones: List[str] = field(default_factory=list)
    methods: List[str] = field(default_factory=lambda: list(METHODS))
    lots: LotsConfig = field(default_factory=LotsConfig)
    targets_table: TargetsTableConfig = field(default_factory=TargetsTableConfig)
    smoothgrad: SmoothGradConfig = field(default_factory=SmoothGradConfig)
    metrics: XaiMetricsConfig = field(default_factory=XaiMetricsConfig)
    figures: FiguresConfig = field(default_factory=FiguresConfig)

    def __post_init__(self) -> None:
        unknown = [b for b in self.use_backbones if b not in self.backbones]
        if unknown:
            raise RobexError(f"explain.use_backbones names {unknown}, which are not in explain.backbones {list(self.backbones)}")
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise RobexError(f"explain.methods contains {bad}; choose from {list(METHODS)}")


@dataclass
class ExplainStageConfig:
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:<n>
    batch_size: int = 64
    progress: bool = True
    output_dir: str = MISSING
    explain: Any = MISSING  # the conf/explain/ preset, checked by ExplainSettings
    paths: Any = MISSING
    tracking: Any = MISSING

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise RobexError(f"batch_size={self.batch_size} must be an integer >= 1, e.g. batch_size=64")


def register(cs) -> None:
    cs.store(name="explain_stage_schema", node=ExplainStageConfig)
    cs.store(group="explain", name="explain_schema", node=ExplainSettings)
