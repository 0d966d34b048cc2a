"""Schema of the `prepare` stage (conf/prepare.yaml): DOUBLE-MNIST generation and the CIFAR-10 cache."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import MISSING

from robex.utils.errors import RobexError

DATASETS = ("double_mnist", "cifar10")
CIFAR_SOURCES = ("auto", "torchvision", "imagefolder")


@dataclass
class DoubleMnistPrepareConfig:
    out_dir: str = MISSING
    num_train: int = 60000
    num_val: int = 5000
    num_test: int = 10000
    val_fraction_of_pool: float = 0.1  # share of MNIST train reserved for val digits
    canvas_size: int = 64
    max_offset_x: int = 4  # x offset within the digit's own 32-px half, in [0, 4)
    max_offset_y: int = 36  # y offset in [0, 36)
    mask_threshold: int = 0  # mask = digit pixels above this value (0..255)

    def __post_init__(self) -> None:
        if min(self.num_train, self.num_val, self.num_test) < 1:
            raise RobexError(f"double_mnist.num_train/num_val/num_test={self.num_train}/{self.num_val}/{self.num_test} must all be >= 1")
        if not 0.0 < self.val_fraction_of_pool < 1.0:
            raise RobexError(f"double_mnist.val_fraction_of_pool={self.val_fraction_of_pool} must lie in (0, 1)")
        if not 0 <= self.mask_threshold <= 255:
            raise RobexError(f"double_mnist.mask_threshold={self.mask_threshold} must lie in [0, 255]")


@dataclass
class Cifar10PrepareConfig:
    out_dir: str = MISSING
    source: str = "auto"  # auto | torchvision | imagefolder
    image_folder: str = MISSING
    num_train: Optional[int] = None  # null = all 50,000
    num_test: Optional[int] = None  # null = all 10,000

    def __post_init__(self) -> None:
        if self.source not in CIFAR_SOURCES:
            raise RobexError(f"cifar10.source={self.source!r} is unknown; use one of {', '.join(CIFAR_SOURCES)}")
        for key in ("num_train", "num_test"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise RobexError(f"cifar10.{key}={getattr(self, key)} must be >= 1 or null (all images)")


@dataclass
class PrepareConfig:
    seed: int = 0
    datasets: List[str] = field(default_factory=lambda: list(DATASETS))
    double_mnist: DoubleMnistPrepareConfig = field(default_factory=DoubleMnistPrepareConfig)
    cifar10: Cifar10PrepareConfig = field(default_factory=Cifar10PrepareConfig)
    paths: Any = MISSING
    tracking: Any = MISSING

    def __post_init__(self) -> None:
        unknown = [name for name in self.datasets if name not in DATASETS]
        if unknown:
            raise RobexError(f"datasets={list(self.datasets)} names unknown datasets {unknown}; choose from {list(DATASETS)}")


def register(cs) -> None:
    cs.store(name="prepare_schema", node=PrepareConfig)
