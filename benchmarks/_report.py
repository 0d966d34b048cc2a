"""The one output convention of the benchmark scripts: the JSON report on stdout, and in ``out`` when given."""

from __future__ import annotations

import json
from pathlib import Path


def emit(report: dict, out: str | Path | None, indent: int = 2) -> None:
    """Print ``report`` as JSON and, if ``out`` is set, write the same text there (parent folders created)."""
    text = json.dumps(report, indent=indent)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
