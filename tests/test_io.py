"""Atomic writers and staged output folders (robex.utils.io)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from robex.utils import io
from robex.utils.io import atomic_save, atomic_write_json, atomic_write_text, publish_directory, staged_directory


def _leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


def test_staged_directory_swaps_in_on_success(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with staged_directory(out) as staging:
        assert staging != out and staging.parent == out.parent and not any(staging.iterdir())
        atomic_write_json({"b": 1, "a": 2}, staging / "metrics.json")
        assert (out / "old.txt").exists()  # the previous output stays readable while we write
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]  # old files do not survive
    assert list(json.loads((out / "metrics.json").read_text())) == ["a", "b"]
    assert _leftovers(tmp_path) == []  # neither staging nor the side copy of the old folder remains
    assert oct(out.stat().st_mode & 0o777) == oct(0o755) and oct((out / "metrics.json").stat().st_mode & 0o777) == oct(0o644)


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt(), SystemExit(1)])
def test_staged_directory_failure_keeps_previous_output(tmp_path, error):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(type(error)):
        with staged_directory(out) as staging:
            (staging / "half.txt").write_text("half")
            raise error
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    assert _leftovers(tmp_path) == []


def test_staged_directory_creates_missing_parents_and_first_output(tmp_path):
    out = tmp_path / "a" / "b" / "out"
    with staged_directory(out) as staging:
        (staging / "x").write_text("1")
    assert (out / "x").read_text() == "1" and _leftovers(out.parent) == []


def test_staging_names_are_unique(tmp_path):
    """Two jobs staging the same out_dir at once must not share (and clobber) one staging folder."""
    out = tmp_path / "out"
    with staged_directory(out) as first, staged_directory(out) as second:
        assert first != second
        (first / "who").write_text("first")
        (second / "who").write_text("second")
    assert (out / "who").read_text() == "first"  # the outer block finished last
    assert _leftovers(tmp_path) == []


def test_parallel_atomic_writers_never_expose_half_files(tmp_path):
    """Many threads writing the same metrics file: with one shared `x.tmp` name they rename each
    other's half-written temp files or fail with FileNotFoundError; unique names make each write whole."""
    path = tmp_path / "metrics.json"
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for step in range(30):
                atomic_write_json({"worker": worker, "step": step, "pad": "x" * 20000}, path)
                json.loads(path.read_text())  # whatever is there is a whole file
        except BaseException as error:  # noqa: BLE001 - collected and re-raised in the test thread
            errors.append(error)

    threads = [threading.Thread(target=write, args=(worker,)) for worker in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _leftovers(tmp_path) == []


def test_atomic_writer_failure_leaves_target_and_no_temp(tmp_path):
    path = tmp_path / "metrics.json"
    atomic_write_text("before", path)
    with pytest.raises(TypeError):
        atomic_write_json({"x": object()}, path)  # not JSON-serialisable: fails before the rename
    assert path.read_text() == "before" and _leftovers(tmp_path) == []


def test_atomic_save_roundtrip(tmp_path):
    import torch

    atomic_save({"t": torch.arange(3)}, tmp_path / "sub" / "x.pt")
    assert torch.equal(torch.load(tmp_path / "sub" / "x.pt")["t"], torch.arange(3))
    assert _leftovers(tmp_path / "sub") == []


def test_publish_directory_backwards_compatible(tmp_path):
    out, staging = tmp_path / "out", tmp_path / "out.tmp"
    out.mkdir()
    (out / "old.txt").write_text("old")
    atomic_write_json({"a": 1}, staging / "metrics.json")
    publish_directory(staging, out)
    assert not staging.exists() and sorted(p.name for p in out.iterdir()) == ["metrics.json"]
    assert _leftovers(tmp_path) == []


def test_swap_restores_previous_output_when_the_rename_fails(tmp_path, monkeypatch):
    out, staging = tmp_path / "out", tmp_path / "staging"
    out.mkdir()
    (out / "old.txt").write_text("old")
    staging.mkdir()
    real_replace = os.replace

    def failing_replace(src, dst):
        if Path(src) == staging:
            raise PermissionError("simulated")
        return real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", failing_replace)
    with pytest.raises(PermissionError):
        publish_directory(staging, out)
    assert (out / "old.txt").read_text() == "old" and _leftovers(tmp_path) == []
