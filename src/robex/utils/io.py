"""Atomic writes: a killed stage never leaves a half-written file or folder that DVC would accept.

Every temporary name is unique (``tempfile.mkstemp``/``mkdtemp`` beside the target), so parallel
sweep jobs writing the same target never race on one ``x.tmp``: the last finished job wins whole.

    with staged_directory(out_dir) as staging:      # every stage output folder
        atomic_write_json(metrics, staging / "metrics.json")
    # out_dir now holds exactly what was written to staging; on an exception (also
    # KeyboardInterrupt/SystemExit) staging is removed and out_dir is left as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def _temporary_file(path: Path) -> Path:
    """A fresh, unique, empty file beside ``path`` (same file system, so ``os.replace`` is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    return Path(name)


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` to a unique temporary name, then rename it to ``path``; no temp left on failure."""
    path = Path(path)
    tmp = _temporary_file(path)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs should read like ordinary files
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_save(obj, path: Path) -> None:
    """torch.save to a unique temporary name, then rename, so a killed stage leaves no half file."""
    import torch

    _atomic_write(Path(path), lambda tmp: torch.save(obj, tmp))


def atomic_write_text(text: str, path: Path) -> None:
    """Text to a unique temporary name, then rename."""
    _atomic_write(Path(path), lambda tmp: tmp.write_text(text))


def atomic_copy(source: Path, path: Path) -> None:
    """Copy a file (with its metadata) to a unique temporary name, then rename."""
    _atomic_write(Path(path), lambda tmp: shutil.copy2(source, tmp))


def atomic_write_json(payload: dict, path: Path, sort_keys: bool = True) -> None:
    """JSON to a unique temporary name, then rename, so DVC never reads half a metrics file."""
    atomic_write_text(json.dumps(payload, indent=2, sort_keys=sort_keys) + "\n", Path(path))


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Move the finished ``staging`` folder to ``out_dir``; the previous ``out_dir`` (if any) goes to a
    unique side name first and is deleted only once the new folder is in place.

    Linux has no portable atomic exchange of two directories, so there is an instant where ``out_dir``
    is absent; it is never half-written. If another job publishes the same ``out_dir`` in between
    (parallel sweep jobs), we retry: the last job to finish wins with its whole folder.
    """
    for _ in range(10):
        old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".old"))
        moved_old = False
        try:
            if out_dir.exists():
                os.replace(out_dir, old)  # replaces the empty placeholder directory `old`
                moved_old = True
            os.replace(staging, out_dir)
        except OSError:
            if not moved_old or out_dir.exists():  # lost a race with a parallel publisher: try again
                shutil.rmtree(old, ignore_errors=True)
                continue
            os.replace(old, out_dir)  # put the previous output back
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    raise OSError(f"could not publish {staging} as {out_dir}: other jobs kept replacing it")


@contextmanager
def staged_directory(out_dir: Path | str) -> Iterator[Path]:
    """Yield an empty temporary folder with a unique name beside ``out_dir``; when the block ends
    normally it replaces ``out_dir`` (a killed or failed stage leaves the previous ``out_dir`` intact
    and no staging folder: it is removed on any exception, KeyboardInterrupt and SystemExit included)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".staging"))
    os.chmod(staging, 0o755)  # mkdtemp creates 0700
    try:
        yield staging
        _swap_in(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # no-op after a successful swap


def publish_directory(staging: Path, out_dir: Path) -> None:
    """Backwards-compatible name: swap a finished ``staging`` folder in as ``out_dir``.

    Prefer :func:`staged_directory`, which also picks a unique staging name and cleans up on failure.
    """
    _swap_in(Path(staging), Path(out_dir))
