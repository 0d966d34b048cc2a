"""Image subsets the explain stage runs on: the first images of each class, as the thesis did
("the first image per class from the [ImageNet] validation set", Sect. 5.1)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Subset
from tqdm.auto import tqdm

from robex.data.cifar10 import load_cifar10


def first_indices_per_class(labels: torch.Tensor, per_class: int) -> torch.Tensor:
    """Indices of the first ``per_class`` samples of every class, sorted by index."""
    if per_class < 1:
        raise ValueError(f"images_per_class must be >= 1 (got {per_class})")
    order = torch.argsort(labels, stable=True)  # grouped by class, original order inside a class
    counts = torch.bincount(labels)
    starts = torch.cumsum(counts, 0) - counts
    position_in_class = torch.arange(len(labels)) - starts[labels[order]]
    return order[position_in_class < per_class].sort().values


def cifar10_subset(prepared_dir: str | Path, split: str, per_class: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """[0, 1] float images and labels of the first ``per_class`` images per class (None = all)."""
    images, labels = cifar10_uint8_subset(prepared_dir, split, per_class)
    return images.float() / 255, labels


def cifar10_uint8_subset(prepared_dir: str | Path, split: str, per_class: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`cifar10_subset` but uint8 (a whole training split fits in memory only this way)."""
    images, labels = load_cifar10(prepared_dir, split)
    if per_class is not None:
        keep = first_indices_per_class(labels, per_class)
        images, labels = images[keep], labels[keep]
    return images, labels


def imagenet_wnids(split_dir: str | Path, wnids: list[str] | None) -> list[str]:
    """The class list: given, or the sorted class folders (torchvision's ImageNet class order)."""
    if wnids:
        return list(wnids)
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise FileNotFoundError(f"ImageNet folder {str(split_dir)!r} does not exist; set explain.data.root to an ILSVRC2012 tree with train/ and val/")
    found = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if not found:
        raise ValueError(f"ImageNet folder {str(split_dir)!r} holds no class folders; it must hold one folder per wnid")
    return found


def imagenet_dataset(
    root: str | Path,
    split: str,
    wnids: list[str] | None,
    per_class: int | None,
    image_size: int = 224,
    resize: int = 256,
) -> tuple[Subset, torch.Tensor]:
    """The first ``per_class`` images of each class of an image-folder split (lazy) and their labels."""
    from robex.data.imagenet import WnidImageFolder, first_image_per_class, imagenet_transform

    split_dir = Path(root) / split
    dataset = WnidImageFolder(split_dir, imagenet_wnids(split_dir, wnids), transform=imagenet_transform(image_size, resize))
    if len(dataset) == 0:
        raise ValueError(f"ImageNet folder {str(split_dir)!r} holds no images; put JPEG files in its class folders")
    if per_class == 1:
        subset = first_image_per_class(dataset)
    elif per_class is None:
        subset = Subset(dataset, list(range(len(dataset))))
    else:
        subset = Subset(dataset, first_indices_per_class(torch.tensor(dataset.targets), per_class).tolist())
    return subset, torch.tensor([dataset.targets[i] for i in subset.indices])


def imagenet_subset(
    root: str | Path,
    split: str,
    wnids: list[str] | None,
    per_class: int | None,
    image_size: int = 224,
    resize: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`imagenet_dataset`, decoded into one [0, 1] float tensor (the evaluation images)."""
    subset, labels = imagenet_dataset(root, split, wnids, per_class, image_size, resize)
    images = [subset[i][0] for i in tqdm(range(len(subset)), desc=f"decode imagenet/{split}", mininterval=2)]
    return torch.stack(images), labels



@dataclass(frozen=True)
class ImageSource:
    """Where images come from: a prepared CIFAR-10 folder (``prepared_dir``) or an ImageNet
    image-folder tree (``root``, optional class list ``wnids``, resize then centre crop)."""

    kind: str  # cifar10 | imagenet
    prepared_dir: str | Path | None = None
    root: str | Path | None = None
    wnids: tuple[str, ...] | None = None
    image_size: int = 224
    resize: int = 256

    def __post_init__(self) -> None:
        if self.kind not in ("cifar10", "imagenet"):
            raise ValueError(f"image data kind {self.kind!r} is not supported; use cifar10 or imagenet")

    def load(self, split: str, per_class: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """[0, 1] float images and labels of the first ``per_class`` images per class of ``split``."""
        if self.kind == "cifar10":
            return cifar10_subset(self.prepared_dir, split, per_class)
        return imagenet_subset(self.root, split, self._wnids(), per_class, self.image_size, self.resize)

    def batches(self, split: str, per_class: int | None, batch_size: int, device: torch.device):
        """(images in [0, 1] on ``device``, labels) batches of the same images as :meth:`load`, decoded
        batch by batch (a whole training split is streamed, never held as floats) and their count."""
        if self.kind == "cifar10":
            images, labels = cifar10_uint8_subset(self.prepared_dir, split, per_class)
            stream = ((images[s : s + batch_size].to(device).float() / 255, labels[s : s + batch_size].to(device))
                      for s in range(0, len(labels), batch_size))
            return stream, labels
        from torch.utils.data import DataLoader

        subset, labels = self.dataset(split, per_class)
        loader = DataLoader(subset, batch_size=batch_size, num_workers=0)
        return ((x.to(device), y.to(device)) for x, y in loader), labels

    def dataset(self, split: str, per_class: int | None) -> tuple[Subset, torch.Tensor]:
        """ImageNet only: the same images as :meth:`load`, decoded lazily (see :func:`imagenet_dataset`)."""
        return imagenet_dataset(self.root, split, self._wnids(), per_class, self.image_size, self.resize)

    def class_names(self, split: str) -> list[str] | None:
        """Human-readable class names for figures: CIFAR-10's from the prepared file, else wnids."""
        if self.kind == "cifar10":
            path = Path(self.prepared_dir) / f"{split}.pt"
            names = torch.load(path, map_location="cpu", weights_only=True).get("classes") if path.is_file() else None
            return [str(n) for n in names] if names else None
        try:
            return imagenet_wnids(Path(self.root) / split, self._wnids())
        except (FileNotFoundError, ValueError):
            return None

    def _wnids(self) -> list[str] | None:
        return list(self.wnids) if self.wnids else None
