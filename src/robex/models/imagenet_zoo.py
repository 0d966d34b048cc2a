"""The LOTS thesis' ImageNet backbones (Weber 2023, Sect. 5.1.2): AlexNet, ResNet-50,
DenseNet-121 and ConvNeXt-Tiny from torchvision, with normalisation inside.

No downloads are possible, so weights come from a local file or from the torch hub cache that
the user filled beforehand (``torch.hub.get_dir()/checkpoints/<torchvision file name>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision.models import get_model, get_model_weights

from robex.models.normalize import IMAGENET_MEAN, IMAGENET_STD, Normalize
from robex.models.vgg import load_local_state_dict
from robex.utils.errors import RobexError

# The thesis used "the latest ImageNet 1k" weights: V2 where torchvision has one (ResNet-50).
DEFAULT_WEIGHTS = {
    "alexnet": "IMAGENET1K_V1",
    "resnet50": "IMAGENET1K_V2",
    "densenet121": "IMAGENET1K_V1",
    "convnext_tiny": "IMAGENET1K_V1",
}
# Last convolutional block of each architecture, addressed inside ImageNetClassifier (``net.``),
# as in the pytorch-grad-cam README.
LAST_CONV_LAYER = {
    "alexnet": "net.features.11",
    "resnet50": "net.layer4",
    "densenet121": "net.features",
    "convnext_tiny": "net.features.7",
}


def hub_cache_weights_path(arch: str, weights_name: str | None = None) -> Path:
    """Where torchvision would have cached ``arch``'s pretrained weights (nothing is fetched)."""
    if arch not in DEFAULT_WEIGHTS:
        raise RobexError(f"ImageNet architecture {arch!r} is not one of {sorted(DEFAULT_WEIGHTS)}")
    enum = get_model_weights(arch)
    name = weights_name or DEFAULT_WEIGHTS[arch]
    try:
        weights = enum[name]
    except KeyError as error:
        raise RobexError(f"torchvision has no weights {name!r} for {arch}; choose one of {[w.name for w in enum]}") from error
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


class ImageNetClassifier(nn.Module):
    """A torchvision ImageNet classifier that takes [0, 1] images and returns logits.

    ``weights``: ``None`` for random initialisation (tests), ``"hub"`` for torchvision's default
    file in the torch hub cache, or a path to a local ``.pth`` state dict. The network sits in
    ``.net``, so CAM layers are named ``net.<torchvision name>`` (see :data:`LAST_CONV_LAYER`).
    """

    def __init__(
        self,
        arch: str = "resnet50",
        weights: str | None = None,
        weights_name: str | None = None,
        num_classes: int = 1000,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if arch not in DEFAULT_WEIGHTS:
            raise RobexError(f"ImageNet architecture {arch!r} is not one of {sorted(DEFAULT_WEIGHTS)}; set model.arch accordingly")
        self.arch = arch
        self.normalize = Normalize(mean, std)
        self.net = get_model(arch, weights=None, num_classes=num_classes)
        if weights is not None:
            path = hub_cache_weights_path(arch, weights_name) if weights == "hub" else Path(weights)
            if not path.is_file():
                raise FileNotFoundError(
                    f"ImageNet weights {str(path)!r} for {arch} do not exist; copy torchvision's file there "
                    "(downloads are impossible here) or set model.weights to a local .pth path"
                )
            try:
                load_local_state_dict(self.net, path, strict=True)
            except RuntimeError as error:  # missing keys: a file for another architecture
                raise RobexError(f"ImageNet weights {str(path)!r} do not fit {arch} ({str(error).splitlines()[0]}); pass {arch}'s file") from error
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))
