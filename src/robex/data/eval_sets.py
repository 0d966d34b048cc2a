"""Evaluation sets of the attack stage: whole splits as tensors (images in [0, 1], global fine labels).

Referenced by ``_target_`` from ``conf/attack.yaml`` (``targets.<name>.images``).
"""

from __future__ import annotations

from pathlib import Path

import torch


def cifar10_eval_set(prepared_dir: str | Path, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """Prepared CIFAR-10 split as float images in [0, 1] and global fine labels (= CIFAR classes)."""
    from robex.data.cifar10 import load_cifar10

    images, labels = load_cifar10(prepared_dir, split)
    return images.float() / 255, labels.long()


def imagenet_eval_set(root: str | Path, split: str = "val", limit: int = 1000,
                      mapping_path: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` images (sorted paths) of an ImageNet split restricted to the C2F classes.

    The C2F paper evaluates on "the first 1000 RGB images of the validation set"; labels are
    global fine indices of :func:`robex.data.hierarchy.imagenet_hierarchy`.
    """
    from tqdm.auto import tqdm

    from robex.data.hierarchy import imagenet_hierarchy
    from robex.data.imagenet import WnidImageFolder, imagenet_transform

    hierarchy = imagenet_hierarchy(mapping_path)
    dataset = WnidImageFolder(Path(root) / split, hierarchy.fine_ids, transform=imagenet_transform())
    count = min(limit, len(dataset))
    if count == 0:
        raise FileNotFoundError(f"ImageNet folder {str(Path(root) / split)!r} holds no images of the C2F classes; check data.imagenet_root")
    # decoding JPEGs is per file by nature; this loop is I/O, not a tensor hot path
    pairs = [dataset[i] for i in tqdm(range(count), desc="decode imagenet", mininterval=2)]
    return torch.stack([image for image, _ in pairs]), torch.tensor([label for _, label in pairs])
