"""VGG-16 (torchvision) for ImageNet and a width/resolution-scaled VGG for CIFAR-sized inputs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision.models import vgg16

from robex.models.normalize import IMAGENET_MEAN, IMAGENET_STD, Normalize
from robex.utils.errors import RobexError


def load_local_state_dict(module: nn.Module, weights_path: str | Path, strict: bool = False) -> None:
    """Load weights from a local file (no downloads are possible); the classifier head may differ.

    Keys whose shapes do not match (e.g. a 1000-way head loaded into a 4-way one) are skipped,
    so ImageNet-pretrained backbones can seed fine classifiers with fewer classes.
    """
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file {str(path)!r} does not exist; pass a local .pth path or null")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means the same to the user
        raise RobexError(f"pretrained weights file {str(path)!r} is not a readable torch state dict ({error})") from error
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = module.state_dict()
    compatible = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not compatible:
        raise RobexError(f"pretrained weights file {str(path)!r} shares no parameter with {type(module).__name__}")
    module.load_state_dict(compatible, strict=strict)


class VGG16(nn.Module):
    """torchvision VGG-16 with normalisation inside; ``weights_path`` is an optional local file."""

    def __init__(
        self,
        num_classes: int = 1000,
        weights_path: str | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = vgg16(weights=None, num_classes=num_classes)
        if weights_path:
            load_local_state_dict(self.net, weights_path)
        self.num_classes = num_classes

    def forward(self, x):
        return self.net(self.normalize(x))


class SmallVGG(nn.Module):
    """VGG-16's layout (2-2-3-3-3 convs per stage) scaled in width and resolution.

    ``widths`` gives the channels of the five stages; ``image_size`` must be divisible by 32.
    Used for the CIFAR-10 coarse-to-fine hierarchy and tests where VGG-16 is too big.
    """

    def __init__(
        self,
        num_classes: int = 10,
        widths: Sequence[int] = (16, 32, 64, 64, 64),
        convs_per_stage: Sequence[int] = (2, 2, 3, 3, 3),
        image_size: int = 32,
        hidden: int = 128,
        dropout: float = 0.3,
        mean: Sequence[float] = (0.4914, 0.4822, 0.4465),
        std: Sequence[float] = (0.2470, 0.2435, 0.2616),
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        layers: list[nn.Module] = []
        previous = 3
        for width, count in zip(widths, convs_per_stage):
            for _ in range(count):
                layers += [nn.Conv2d(previous, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
                previous = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        side = image_size // 2 ** len(widths)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(previous * side * side, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        self.num_classes = num_classes

    def forward(self, x):
        return self.classifier(self.features(self.normalize(x)))
