"""CIFAR-10 from torchvision (download) or from any image-folder tree, cached as uint8 tensors."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from robex.data.hierarchy import CIFAR10_CLASSES
from robex.utils.errors import RobexError
from robex.utils.io import atomic_save, staged_directory


class Cifar10Source(str, Enum):
    auto = "auto"
    torchvision = "torchvision"
    imagefolder = "imagefolder"


def _from_image_folder(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image
    from torchvision.datasets import ImageFolder

    folder = root / split
    if not folder.is_dir():
        raise FileNotFoundError(f"CIFAR-10 image folder {str(folder)!r} does not exist; it needs train/ and test/ with one folder per class")
    dataset = ImageFolder(str(folder))
    unknown = sorted(set(dataset.classes) - set(CIFAR10_CLASSES))
    if unknown:
        raise RobexError(f"CIFAR-10 image folder {str(folder)!r} has unknown class folders {unknown}; expected {list(CIFAR10_CLASSES)}")
    # class index follows CIFAR10_CLASSES, not the folder order, so labels match torchvision's
    remap = [CIFAR10_CLASSES.index(name) for name in dataset.classes]
    images = np.empty((len(dataset.samples), 32, 32, 3), dtype=np.uint8)
    labels = np.empty(len(dataset.samples), dtype=np.int64)
    for index, (path, label) in enumerate(tqdm(dataset.samples, desc=f"decode cifar10/{split}", mininterval=2)):
        with Image.open(path) as image:
            images[index] = np.asarray(image.convert("RGB"))
        labels[index] = remap[label]
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)


def _from_torchvision(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import CIFAR10

    try:
        dataset = CIFAR10(str(root), train=split == "train", download=True)
    except Exception as error:  # noqa: BLE001 - offline download errors come in many types
        raise FileNotFoundError(
            f"CIFAR-10 was not found under {str(root)!r} and could not be downloaded ({type(error).__name__}); "
            "set ROBEX_DATA to a folder holding cifar10/{train,test}/<class>/ images or allow downloads"
        ) from error
    return torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(dataset.targets)


def read_cifar10(data_root: Path, split: str, source: Cifar10Source | str = "auto", image_folder: Path | None = None):
    """uint8 images (N,3,32,32) and labels (N,) of one split ("train" or "test")."""
    source = Cifar10Source(source)
    folder = image_folder or data_root / "cifar10"
    if source == Cifar10Source.imagefolder or (source == Cifar10Source.auto and folder.is_dir()):
        return _from_image_folder(folder, split)
    return _from_torchvision(data_root, split)


def prepare_cifar10(
    data_root: Path,
    out_dir: Path,
    source: str = "auto",
    image_folder: Path | None = None,
    num_train: int | None = None,
    num_test: int | None = None,
    seed: int = 0,
) -> dict[str, Path]:
    """Decode once into ``out_dir/{train,test}.pt``; optional seeded subsets for quick runs."""
    with staged_directory(out_dir) as staging:  # both splits appear at once (a killed run keeps the old ones)
        for split, count in (("train", num_train), ("test", num_test)):
            images, labels = read_cifar10(data_root, split, source, image_folder)
            if count is not None and count < len(images):
                keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:count].sort().values
                images, labels = images[keep], labels[keep]
            atomic_save({"images": images, "labels": labels, "classes": list(CIFAR10_CLASSES)}, staging / f"{split}.pt")
    return {split: Path(out_dir) / f"{split}.pt" for split in ("train", "test")}


def load_cifar10(prepared_dir: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The prepared uint8 images (N,3,32,32) and labels (N,); divide by 255 for model input."""
    path = Path(prepared_dir) / f"{split}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"prepared CIFAR-10 split {str(path)!r} does not exist; run `python -m robex.prepare` first")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        return blob["images"], blob["labels"]
    except Exception as error:  # noqa: BLE001 - a truncated or foreign file fails in many ways
        raise RobexError(f"prepared CIFAR-10 split {str(path)!r} is corrupt or not a prepared split ({type(error).__name__}); "
                         "re-run `python -m robex.prepare` or point to another file") from error
