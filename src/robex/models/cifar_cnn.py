"""The CIFAR-10 CNN of Dieter & Zisgen (2023), Table 2."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from robex.models.normalize import CIFAR10_MEAN, CIFAR10_STD, Normalize
from robex.utils.errors import RobexError


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=True),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]


class CifarCNN(nn.Module):
    """VGG-like CNN of Table 2: three blocks of [Conv3x3-BN-ReLU] x 2, MaxPool, Dropout.

    Widths 32/64/128 with dropout 0.2/0.3/0.4, then Flatten and Dense(10): 307,936 weights
    (conv kernels, BN scale and shift, dense matrix) plus 458 biases (conv and dense), as the
    paper counts them. Returns logits; the paper's final softmax is applied by the losses.
    ``features`` (the conv blocks) and ``classifier`` are separate so that CAM methods and LOTS
    can address the last convolutional layer by name (``features.block3.3``).
    """

    def __init__(
        self,
        widths: Sequence[int] = (32, 64, 128),
        dropouts: Sequence[float] = (0.2, 0.3, 0.4),
        num_classes: int = 10,
        image_size: int = 32,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
    ) -> None:
        super().__init__()
        if len(widths) != len(dropouts):
            raise RobexError(f"widths {list(widths)} and dropouts {list(dropouts)} must have the same length")
        self.normalize = Normalize(mean, std)
        blocks: dict[str, nn.Module] = {}
        previous = 3
        for index, (width, dropout) in enumerate(zip(widths, dropouts), start=1):
            blocks[f"block{index}"] = nn.Sequential(
                *_conv_bn_relu(previous, width),
                *_conv_bn_relu(width, width),
                nn.MaxPool2d(2),
                nn.Dropout(dropout),
            )
            previous = width
        self.features = nn.Sequential()
        for name, block in blocks.items():
            self.features.add_module(name, block)
        side = image_size // 2 ** len(widths)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(previous * side * side, num_classes))
        self.num_classes = num_classes

    def forward(self, x):
        return self.classifier(self.features(self.normalize(x)))
