"""ImageNet from a user-provided ILSVRC2012 image-folder tree (no downloads are possible).

Expected layout: ``<root>/train/<wnid>/*.JPEG`` and ``<root>/val/<wnid>/*.JPEG``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset
from torchvision import transforms
from torchvision.datasets import ImageFolder

from robex.utils.errors import RobexError


def imagenet_transform(image_size: int = 224, resize: int = 256) -> transforms.Compose:
    """Resize + centre crop + ToTensor: inputs stay in [0, 1], models normalise themselves."""
    return transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(image_size), transforms.ToTensor()])


class WnidImageFolder(Dataset):
    """An image-folder split restricted to ``wnids``; label = position of the wnid in ``wnids``."""

    def __init__(self, split_dir: str | Path, wnids: Sequence[str], transform=None) -> None:
        split_dir = Path(split_dir)
        if not split_dir.is_dir():
            raise FileNotFoundError(f"ImageNet folder {str(split_dir)!r} does not exist; point data.imagenet_root at an ILSVRC2012 tree with train/ and val/")
        present = {p.name for p in split_dir.iterdir() if p.is_dir()}
        missing = [w for w in wnids if w not in present]
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise RobexError(
                f"ImageNet folder {str(split_dir)!r} lacks {len(missing)} of the {len(wnids)} expected class folders "
                f"({shown}); it must hold one folder per wnid"
            )
        position = {w: i for i, w in enumerate(wnids)}
        folder = ImageFolder(str(split_dir), transform=transform, allow_empty=True)
        self.folder = folder
        self.samples = [(path, position[folder.classes[label]]) for path, label in folder.samples if folder.classes[label] in position]
        self.targets = [label for _, label in self.samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index):
        path, label = self.samples[index]
        image = self.folder.loader(path)
        return (self.transform(image) if self.transform else image), label


def split_train_val(dataset: Dataset, val_fraction: float = 0.2, seed: int = 0) -> tuple[Subset, Subset]:
    """Seeded split of a training set into train/val (the C2F paper: 80/20 of ImageNet train)."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    cut = int(round(len(order) * (1 - val_fraction)))
    return Subset(dataset, order[:cut]), Subset(dataset, order[cut:])


def first_image_per_class(dataset: WnidImageFolder) -> Subset:
    """The first (sorted) image of each class: the LOTS thesis' 1,000-image ImageNet evaluation set."""
    first: dict[int, int] = {}
    for index, (_, label) in enumerate(dataset.samples):
        first.setdefault(label, index)
    return Subset(dataset, [first[label] for label in sorted(first)])
