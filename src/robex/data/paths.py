"""Where raw data is read from and derived data is written to."""

from __future__ import annotations

import os
from pathlib import Path

from robex.utils.io import atomic_copy

DEFAULT_DATA_ROOT = "./data"


def data_root(value: str | None = None) -> Path:
    """Raw-data root: the argument, else ``$ROBEX_DATA``, else ``./data``."""
    return Path(value or os.environ.get("ROBEX_DATA") or DEFAULT_DATA_ROOT)


def writable_copy(source_dir: Path, cache_dir: Path, pattern: str = "*") -> Path:
    """Return ``source_dir`` if writable, else a copy of its matching files under ``cache_dir``.

    torchvision extracts archives next to themselves, which fails on a read-only data root
    (such as a shared offline mirror); copying the archives once keeps the mirror untouched.
    """
    if os.access(source_dir, os.W_OK):
        return source_dir
    cache_dir.mkdir(parents=True, exist_ok=True)
    for file in source_dir.glob(pattern):
        target = cache_dir / file.name
        if file.is_file() and (not target.exists() or target.stat().st_size != file.stat().st_size):
            atomic_copy(file, target)  # a killed copy leaves no truncated archive behind
    return cache_dir
