"""LOTS target banks F_t^c (thesis Sect. 4.2) from a training split, cached on disk."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from robex.explain.data import ImageSource, cifar10_uint8_subset
from robex.explain.lots import TargetKind, extract_features, mean_target_bank, random_index_per_class


def target_bank(
    kind: TargetKind | str,
    model: nn.Module,
    num_classes: int,
    device: torch.device,
    source: ImageSource,
    split: str,
    per_class: int | None,
    layer: str | None = None,
    seed: int = 0,
    batch_size: int = 64,
) -> torch.Tensor | None:
    """F_t^c per class for the ``class`` / ``mean`` targets (None for ``zero``), thesis Sect. 4.2.

    ``mean``: the mean feature of each class over the whole ``split`` (``per_class`` None, the
    thesis: "across the entire training dataset") or over its first ``per_class`` images per
    class, streamed in batches. ``class``: the features of one seeded random image per class.
    """
    kind = TargetKind(kind)
    if kind == TargetKind.zero:
        return None
    if kind == TargetKind.mean:
        batches, _ = source.batches(split, per_class, batch_size, device)
        return mean_target_bank(model, batches, num_classes, layer)
    generator = torch.Generator().manual_seed(seed)
    if source.kind == "imagenet":
        subset, labels = source.dataset(split, per_class)
        chosen = random_index_per_class(labels, num_classes, generator).tolist()
        return extract_features(model, torch.stack([subset[i][0] for i in chosen]).to(device), layer, batch_size)
    images, labels = cifar10_uint8_subset(source.prepared_dir, split, per_class)
    chosen = random_index_per_class(labels, num_classes, generator)
    return extract_features(model, images[chosen].to(device).float() / 255, layer, batch_size)


def target_image_count(source: ImageSource, split: str, per_class: int | None) -> int:
    """How many training images the class/mean targets are drawn from (a column of Table 5.1)."""
    if source.kind == "cifar10":
        return len(cifar10_uint8_subset(source.prepared_dir, split, per_class)[1])
    return len(source.dataset(split, per_class)[1])


def cached_tensor(cache: Path, compute: Callable[[], torch.Tensor | None], device: torch.device) -> torch.Tensor | None:
    """``compute()`` once: later calls load the tensor saved (atomically) at ``cache``; None is not cached."""
    if cache.is_file():
        return torch.load(cache, map_location=device, weights_only=True)
    value = compute()
    if value is None:
        return None
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + ".tmp")
    torch.save(value.cpu(), tmp)
    os.replace(tmp, cache)
    return value


def file_key(path: str | Path | None) -> str:
    """Size and mtime of a weights file (part of a cache key), or "untrained"."""
    if not path or not Path(path).is_file():
        return "untrained"
    stat = Path(path).stat()
    return f"{stat.st_size}-{int(stat.st_mtime)}"


def cached_target_bank(
    cache_dir: str | Path,
    backbone: str,
    identity: str,
    kind: TargetKind | str,
    model: nn.Module,
    num_classes: int,
    device: torch.device,
    source: ImageSource,
    split: str,
    per_class: int | None,
    layer: str | None = None,
    seed: int = 0,
    batch_size: int = 64,
) -> torch.Tensor | None:
    """:func:`target_bank`, computed once per (backbone weights ``identity``, data, layer, kind) and
    kept under ``cache_dir/explain/`` (a mean over a whole training split takes minutes)."""
    import hashlib

    if TargetKind(kind) == TargetKind.zero:
        return None
    key = f"{backbone}|{identity}|{source}|{split}|{per_class}|{layer}|{TargetKind(kind).value}|{seed}"
    cache = Path(cache_dir) / "explain" / f"{backbone}_{TargetKind(kind).value}_{hashlib.sha1(key.encode()).hexdigest()[:12]}.pt"
    return cached_tensor(cache, lambda: target_bank(kind, model, num_classes, device, source, split, per_class, layer, seed, batch_size), device)
