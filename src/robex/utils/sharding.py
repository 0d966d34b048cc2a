"""Split per-image work across jobs (Hydra joblib / SLURM launchers), name their outputs, merge them.

Shard ``index`` of ``count`` takes items ``index, index + count, ...`` (round robin, so shards
are balanced when cost varies along the list). Each shard writes to
``<stage output>/shards/<index>/``; :func:`merge_shards` concatenates their per-image tables
(the report recomputes its summaries from the merged rows).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from omegaconf import OmegaConf

from robex.utils.errors import RobexError

if TYPE_CHECKING:
    import pandas as pd

T = TypeVar("T")
log = logging.getLogger("robex.sharding")


def check_shard(index: int, count: int) -> None:
    if count < 1 or not 0 <= index < count:
        raise RobexError(f"shard.index={index} and shard.count={count} need count >= 1 and 0 <= index < count")


def take_shard(items: Sequence[T], index: int, count: int) -> list[T]:
    check_shard(index, count)
    return list(items[index::count])


def shard_suffix(index: int, count: int) -> str:
    """'' for an unsharded run, '/shards/<index>' otherwise (used in output paths)."""
    return "" if int(count) == 1 else f"/shards/{int(index)}"


if not OmegaConf.has_resolver("shard_suffix"):
    OmegaConf.register_new_resolver("shard_suffix", shard_suffix)


def natural_key(name: str) -> list:
    """'shard10' after 'shard2': digits compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def shard_dirs(stage_dir: str | Path) -> list[Path]:
    """The ``<stage_dir>/shards/*/`` folders in natural order (empty when the stage is not sharded)."""
    root = Path(stage_dir) / "shards"
    return sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name)) if root.is_dir() else []


def is_sharded(stage_dir: str | Path, filename: str) -> bool:
    """Whether some shard of ``stage_dir`` holds ``filename``."""
    return any((directory / filename).is_file() for directory in shard_dirs(stage_dir))


def merge_shards(stage_dir: str | Path, filename: str, source_column: str | None = None) -> pd.DataFrame:
    """One table from a stage's shards: ``<stage_dir>/shards/*/<filename>`` concatenated in natural
    shard order, or ``<stage_dir>/<filename>`` when the stage has no shard holding that file.

    When shards exist the top-level file is ignored (it is an older, unsharded run, not a shard);
    columns missing from a shard are filled with NaN. ``source_column`` adds a column naming the
    shard each row came from (``""`` for the top-level file).
    """
    import pandas as pd

    stage_dir = Path(stage_dir)
    sources = [directory / filename for directory in shard_dirs(stage_dir) if (directory / filename).is_file()]
    if sources and (stage_dir / filename).is_file():
        log.warning("%s: using the %d shards under %s and ignoring the top-level %s", stage_dir, len(sources), stage_dir / "shards", filename)
    if not sources:
        if not (stage_dir / filename).is_file():
            raise FileNotFoundError(
                f"neither {str(stage_dir / filename)!r} nor any {str(stage_dir / 'shards' / '*' / filename)!r} exists; run the stage that writes it first"
            )
        sources = [stage_dir / filename]
    frames = []
    for path in sources:
        frame = pd.read_csv(path)
        if source_column is not None:
            frame.insert(0, source_column, path.parent.name if path.parent.parent.name == "shards" else "")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True, sort=False)
