"""Split per-image work across jobs (Hydra joblib / SLURM launchers) and name their outputs.

Shard ``index`` of ``count`` takes items ``index, index + count, ...`` (round robin, so shards
are balanced when cost varies along the list). Each shard writes to
``<stage output>/shards/<index>/``; ``robex.report.build.merge_shards`` concatenates them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from omegaconf import OmegaConf

from robex.utils.errors import RobexError

T = TypeVar("T")


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
