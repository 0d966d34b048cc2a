"""DOUBLE-MNIST: two different MNIST digits on one canvas, a multi-label (k = 2) task.

Each 28x28 digit is placed in its own half of the canvas (left half: first digit, right half:
second) at a random offset x in [0, max_offset_x), y in [0, max_offset_y), as in Mour (2023),
Sect. 4. Labels are 10-dim 2-hot vectors. Every sample carries the pixel mask of each digit
(pixels of the digit image above ``mask_threshold`` on the 0..255 scale), from which the
verification stage builds its layered neighbourhoods. Train/val digits come from disjoint parts
of MNIST train, test digits from MNIST test. Generation is vectorised and fully determined by
the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from robex.data.paths import writable_copy
from robex.utils.errors import RobexError
from robex.utils.io import atomic_save, staged_directory


@dataclass
class DoubleMnistSplit:
    """One generated split. images: uint8 (N,1,H,W); digits: long (N,2) as (left, right);
    masks: bool (N,2,H,W), mask[:, j] = pixels of digit j; offsets: long (N,2,2) as (y, x)."""

    images: torch.Tensor
    digits: torch.Tensor
    masks: torch.Tensor
    offsets: torch.Tensor
    meta: dict

    def __len__(self) -> int:
        return len(self.images)

    def two_hot(self) -> torch.Tensor:
        labels = torch.zeros(len(self), 10)
        labels.scatter_(1, self.digits, 1.0)
        return labels

    def float_images(self) -> torch.Tensor:
        return self.images.float() / 255.0

    def save(self, path: str | Path) -> None:
        packed = np.packbits(self.masks.numpy(), axis=-1)  # 8x smaller than bool on disk
        atomic_save(
            {
                "images": self.images,
                "digits": self.digits,
                "masks_packed": torch.from_numpy(packed),
                "mask_width": self.masks.shape[-1],
                "offsets": self.offsets,
                "meta": self.meta,
            },
            Path(path),
        )

    @classmethod
    def load(cls, path: str | Path) -> DoubleMnistSplit:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"DOUBLE-MNIST split {str(path)!r} does not exist; run `python -m robex.prepare` first")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            masks = np.unpackbits(blob["masks_packed"].numpy(), axis=-1, count=blob["mask_width"]).astype(bool)
        except Exception as error:  # noqa: BLE001 - a truncated or foreign file fails in many ways
            raise RobexError(f"DOUBLE-MNIST split {str(path)!r} is corrupt or not a prepared split ({type(error).__name__}); "
                             "re-run `python -m robex.prepare` or point to another file") from error
        return cls(blob["images"], blob["digits"], torch.from_numpy(masks), blob["offsets"], blob["meta"])


def generate_double_mnist(
    digit_images: torch.Tensor,
    digit_labels: torch.Tensor,
    num_samples: int,
    seed: int,
    canvas_size: int = 64,
    max_offset_x: int = 4,
    max_offset_y: int = 36,
    mask_threshold: int = 0,
) -> DoubleMnistSplit:
    """Compose ``num_samples`` canvases from a pool of uint8 digits (M,28,28) with labels (M,)."""
    digit_size = digit_images.shape[-1]
    half = canvas_size // 2
    if max_offset_x < 1 or max_offset_y < 1:
        raise RobexError(f"double_mnist.max_offset_x={max_offset_x} and double_mnist.max_offset_y={max_offset_y} must be >= 1")
    if max_offset_x - 1 + digit_size > half or max_offset_y - 1 + digit_size > canvas_size:
        raise RobexError(
            f"a {digit_size}px digit at offsets up to x={max_offset_x - 1}, y={max_offset_y - 1} leaves its "
            f"{half}px half of a {canvas_size}px canvas; lower the offsets (double_mnist.max_offset_x/max_offset_y) or enlarge double_mnist.canvas_size"
        )
    generator = torch.Generator().manual_seed(seed)
    # two *different* digit classes: the second is the first plus a shift in 1..9 (mod 10)
    first = torch.randint(0, 10, (num_samples,), generator=generator)
    second = (first + torch.randint(1, 10, (num_samples,), generator=generator)) % 10
    digits = torch.stack([first, second], dim=1)

    by_class = [torch.nonzero(digit_labels == c).flatten() for c in range(10)]
    counts = torch.tensor([len(indices) for indices in by_class])
    if (counts == 0).any():
        raise RobexError(f"the MNIST pool lacks digit classes {torch.nonzero(counts == 0).flatten().tolist()}")
    offsets_in_class = (torch.rand(num_samples, 2, generator=generator) * counts[digits]).long()
    pool_index = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)[:-1]])
    sorted_pool = torch.cat(by_class)
    chosen = sorted_pool[pool_index[digits] + offsets_in_class]  # (N, 2) indices into the pool

    ys = torch.randint(0, max_offset_y, (num_samples, 2), generator=generator)
    xs = torch.randint(0, max_offset_x, (num_samples, 2), generator=generator) + torch.tensor([0, half])
    images = torch.zeros(num_samples, canvas_size, canvas_size, dtype=torch.uint8)
    masks = torch.zeros(num_samples, 2, canvas_size, canvas_size, dtype=torch.bool)
    span = torch.arange(digit_size)
    sample = torch.arange(num_samples).view(-1, 1, 1)
    for slot in range(2):
        rows = (ys[:, slot : slot + 1] + span).unsqueeze(2)  # (N, 28, 1)
        cols = (xs[:, slot : slot + 1] + span).unsqueeze(1)  # (N, 1, 28)
        patch = digit_images[chosen[:, slot]]
        images[sample, rows, cols] = torch.maximum(images[sample, rows, cols], patch)
        masks[:, slot][sample, rows, cols] = patch > mask_threshold
    meta = {
        "seed": seed,
        "canvas_size": canvas_size,
        "max_offset_x": max_offset_x,
        "max_offset_y": max_offset_y,
        "mask_threshold": mask_threshold,
    }
    return DoubleMnistSplit(images.unsqueeze(1), digits, masks, torch.stack([ys, xs], dim=2), meta)


def load_mnist(data_root: Path, cache_dir: Path, train: bool):
    """MNIST digits (uint8 (M,28,28), labels (M,)) through torchvision.

    Uses ``data_root/MNIST/raw`` when present (copied to ``cache_dir`` if read-only, because
    torchvision extracts next to the archives); otherwise torchvision downloads into data_root.
    """
    from torchvision.datasets import MNIST

    raw = data_root / "MNIST" / "raw"
    root = data_root
    if raw.is_dir():
        root = writable_copy(raw, cache_dir / "MNIST" / "raw", "*").parent.parent
    try:
        dataset = MNIST(str(root), train=train, download=True)
    except Exception as error:  # noqa: BLE001 - offline download errors come in many types
        raise FileNotFoundError(
            f"MNIST was not found under {str(raw)!r} and could not be downloaded ({type(error).__name__}); "
            "set ROBEX_DATA to a folder holding MNIST/raw/*.gz"
        ) from error
    return dataset.data, dataset.targets


def prepare_double_mnist(
    data_root: Path,
    cache_dir: Path,
    out_dir: Path,
    num_train: int,
    num_val: int,
    num_test: int,
    seed: int = 0,
    val_fraction_of_pool: float = 0.1,
    canvas_size: int = 64,
    max_offset_x: int = 4,
    max_offset_y: int = 36,
    mask_threshold: int = 0,
) -> dict[str, Path]:
    """Write train/val/test splits to ``out_dir``; val digits come from a held-out part of MNIST train."""
    train_images, train_labels = load_mnist(data_root, cache_dir, train=True)
    test_images, test_labels = load_mnist(data_root, cache_dir, train=False)
    permutation = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(seed))
    num_pool_val = int(len(train_images) * val_fraction_of_pool)
    val_pool, train_pool = permutation[:num_pool_val], permutation[num_pool_val:]
    geometry = dict(canvas_size=canvas_size, max_offset_x=max_offset_x, max_offset_y=max_offset_y, mask_threshold=mask_threshold)
    splits = {
        "train": (train_images[train_pool], train_labels[train_pool], num_train, seed),
        "val": (train_images[val_pool], train_labels[val_pool], num_val, seed + 1),
        "test": (test_images, test_labels, num_test, seed + 2),
    }
    with staged_directory(out_dir) as staging:  # all three splits appear at once (a killed run keeps the old ones)
        for name, (pool_images, pool_labels, count, split_seed) in splits.items():
            generate_double_mnist(pool_images, pool_labels, count, split_seed, **geometry).save(staging / f"{name}.pt")
    return {name: Path(out_dir) / f"{name}.pt" for name in splits}


class DoubleMnistDataset(Dataset):
    """(image float [0,1] (1,H,W), 2-hot label) pairs of one split; masks stay on ``split``."""

    def __init__(self, split: DoubleMnistSplit) -> None:
        self.split = split
        self.images = split.float_images()
        self.labels = split.two_hot()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index], self.labels[index]
