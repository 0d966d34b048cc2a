"""CNNs for multi-label DOUBLE-MNIST (k = 2 labels per 64x64 canvas).

Only Conv2d / ReLU / MaxPool2d / Flatten / Linear layers, so that the exact MILP verifier
(``robex.verify``) can encode every layer. No normalisation layer: inputs are already in [0, 1]
and an affine input map would only add variables to the MILP.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from robex.utils.errors import RobexError


class DoubleMnistCNN(nn.Module):
    """Plain conv/ReLU stack followed by one max-pool and a linear read-out.

    The defaults are the thesis network (Mour 2023, Sect. 4): 1x64x64 -> Conv(1->8, 3x3, s2, p1)
    -> ReLU -> Conv(8->16, 3x3, s2, p1) -> ReLU -> MaxPool 4x4 -> FC(256->10), 3,818 parameters.
    ``channels`` widens or deepens it (each conv halves the resolution), and ``hidden`` adds
    fully connected ReLU layers before the read-out; both stay MILP-verifiable.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 64,
        channels: Sequence[int] = (8, 16),
        pool: int = 4,
        hidden: Sequence[int] = (),
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        if image_size % (2 ** len(channels) * pool) != 0:
            raise RobexError(
                f"image_size={image_size} is not divisible by 2**{len(channels)} convs x pool {pool}; "
                "choose channels/pool so the feature map stays whole"
            )
        layers: list[nn.Module] = []
        previous = in_channels
        for width in channels:
            layers += [nn.Conv2d(previous, width, kernel_size=3, stride=2, padding=1), nn.ReLU()]
            previous = width
        layers += [nn.MaxPool2d(pool), nn.Flatten()]
        side = image_size // (2 ** len(channels) * pool)
        features = previous * side * side
        for width in hidden:
            layers += [nn.Linear(features, width), nn.ReLU()]
            features = width
        layers.append(nn.Linear(features, num_classes))
        self.net = nn.Sequential(*layers)
        self.num_classes = num_classes

    def forward(self, x):
        return self.net(x)
