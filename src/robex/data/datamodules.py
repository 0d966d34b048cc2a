"""Lightning DataModules over the prepared tensor caches (and ImageNet folders)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from robex.data.cifar10 import load_cifar10
from robex.data.double_mnist import DoubleMnistDataset, DoubleMnistSplit
from robex.data.hierarchy import Hierarchy
from robex.utils.errors import RobexError


class _Uint8Images(Dataset):
    """uint8 images kept compact in memory, converted to [0, 1] floats per sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index].float().div_(255.0), self.labels[index]


class _LoaderMixin:
    batch_size: int
    eval_batch_size: int
    num_workers: int

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size if shuffle else self.eval_batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(0) if shuffle else None,
        )

    def train_dataloader(self):
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self):
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self):
        return self._loader(self.test_set, shuffle=False)


class DoubleMnistDataModule(_LoaderMixin, L.LightningDataModule):
    """Prepared DOUBLE-MNIST splits (``python -m robex.prepare``): 2-hot multi-label targets."""

    task = "multi_label"

    def __init__(self, prepared_dir: str, batch_size: int = 128, eval_batch_size: int = 512, num_workers: int = 0) -> None:
        super().__init__()
        self.prepared_dir = Path(prepared_dir)
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers

    def setup(self, stage: str | None = None) -> None:
        self.train_set = DoubleMnistDataset(DoubleMnistSplit.load(self.prepared_dir / "train.pt"))
        self.val_set = DoubleMnistDataset(DoubleMnistSplit.load(self.prepared_dir / "val.pt"))
        self.test_set = DoubleMnistDataset(DoubleMnistSplit.load(self.prepared_dir / "test.pt"))


class Cifar10DataModule(_LoaderMixin, L.LightningDataModule):
    """Prepared CIFAR-10 (uint8 cache); the last ``val_size`` of a seeded shuffle of train is val."""

    task = "single_label"

    def __init__(self, prepared_dir: str, batch_size: int = 128, eval_batch_size: int = 512, num_workers: int = 0, val_size: int = 5000, seed: int = 0) -> None:
        super().__init__()
        self.prepared_dir = Path(prepared_dir)
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.val_size, self.seed = val_size, seed

    def setup(self, stage: str | None = None) -> None:
        images, labels = load_cifar10(self.prepared_dir, "train")
        if not 0 <= self.val_size < len(images):
            raise RobexError(f"data.module.val_size={self.val_size} must be below the {len(images)} prepared training images; lower it or prepare more (cifar10.num_train)")
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.seed))
        train_idx, val_idx = order[: len(images) - self.val_size], order[len(images) - self.val_size :]
        self.train_set = _Uint8Images(images[train_idx], labels[train_idx])
        self.val_set = _Uint8Images(images[val_idx], labels[val_idx])
        self.test_set = _Uint8Images(*load_cifar10(self.prepared_dir, "test"))


class ImageNetC2FDataModule(_LoaderMixin, L.LightningDataModule):
    """A user's ILSVRC2012 tree restricted to a hierarchy's fine classes; train split 80/20 into train/val."""

    task = "c2f"

    def __init__(self, root: str, hierarchy: Hierarchy, batch_size: int = 64, eval_batch_size: int = 128, num_workers: int = 4, image_size: int = 224, val_fraction: float = 0.2, seed: int = 0) -> None:
        super().__init__()
        self.root, self.hierarchy = Path(root), hierarchy
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.image_size, self.val_fraction, self.seed = image_size, val_fraction, seed

    def setup(self, stage: str | None = None) -> None:
        from robex.data.imagenet import WnidImageFolder, imagenet_transform, split_train_val

        transform = imagenet_transform(self.image_size, int(self.image_size * 256 / 224))
        train = WnidImageFolder(self.root / "train", self.hierarchy.fine_ids, transform)
        self.train_set, self.val_set = split_train_val(train, self.val_fraction, self.seed)
        self.test_set = WnidImageFolder(self.root / "val", self.hierarchy.fine_ids, transform)


def tensor_datamodule(images: torch.Tensor, labels: torch.Tensor, batch_size: int = 32) -> L.LightningDataModule:
    """Tiny in-memory DataModule (train = val = test), for notebooks and tests."""
    dataset = TensorDataset(images, labels)
    return L.LightningDataModule.from_datasets(dataset, dataset, dataset, batch_size=batch_size)
