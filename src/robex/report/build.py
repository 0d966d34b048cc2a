"""The pipeline report, assembled: every stage's section, in the configured order.

Reads only what the stages wrote (``outputs/<stage>/`` tables, ``metrics.json``, figures) and the
MLflow store, never recomputes a stage. Paper values come from the stages' own "(paper)" columns
or, where a stage has none, from ``paper_reference.yaml`` beside this module (typed from the
papers, with table/section/page). A stage whose outputs are missing gives a section that says
"not run" instead of an error; :meth:`Report.missing` lists them so a caller can be strict.

One module per section: ``models`` (train), ``attack``, ``lrp`` (lrp_study), ``explain``, ``verify``,
each with ``KEY``, ``TITLE`` and ``build_section(spec, reference, options, tracking_uri)``;
``document`` (Section, Report: Markdown + files), ``tables`` / ``figures`` (shared helpers).
Sharded stage folders are merged with :func:`robex.utils.sharding.merge_shards`.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping
from pathlib import Path

import yaml

from robex.report import attack, explain, lrp, models, verify
from robex.report.document import NOT_RUN, Report, Section
from robex.report.overview import overview
from robex.tracking.queries import latest_finished_runs
from robex.utils.errors import RobexError

log = logging.getLogger("robex.report")

PAPER_REFERENCE_PATH = Path(__file__).with_name("paper_reference.yaml")
SECTIONS = {module.KEY: module for module in (models, attack, lrp, explain, verify)}
SECTION_TITLES = {key: module.TITLE for key, module in SECTIONS.items()}

__all__ = ["NOT_RUN", "PAPER_REFERENCE_PATH", "Report", "SECTIONS", "SECTION_TITLES", "Section", "build_report", "git_dirty", "load_paper_reference"]


def load_paper_reference(path: str | Path | None = None) -> dict:
    """The published values (``paper_reference.yaml`` beside this module unless ``path`` is given)."""
    path = Path(path) if path else PAPER_REFERENCE_PATH
    if not path.is_file():
        raise FileNotFoundError(f"paper reference file {str(path)!r} does not exist; pass paper_reference=null for the packaged one")
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def git_dirty() -> bool:
    """Whether the working tree of this checkout has uncommitted changes to tracked files (False without git)."""
    try:
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                                timeout=10, cwd=Path(__file__).resolve().parent, check=True)
    except (OSError, subprocess.SubprocessError):
        return False
    return bool(status.stdout.strip())


def build_report(
    sections: Mapping[str, Mapping],
    reference: Mapping,
    git_commit: str,
    tracking_uri: str | None = None,
    git_dirty: bool = False,
    max_table_rows: int | None = 40,
    figures_per_pattern: int = 3,
    reference_report: str | None = None,
) -> Report:
    """Collect every configured section (keys of ``sections``: train, attack, lrp_study, explain,
    verify; each a plain dict with ``dir``, ``experiment``, optional ``run_names``, ``figures``
    (glob patterns relative to ``dir``), ``captions``, ``command`` and section options). ``reference_report``:
    the reproduction report the opening links to for the real numbers (None: no link)."""
    options = {"max_table_rows": max_table_rows, "figures_per_pattern": figures_per_pattern}
    built = []
    for key, spec in sections.items():
        if key not in SECTIONS:
            raise RobexError(f"report section {key!r} is unknown; use some of {list(SECTIONS)}")
        section = SECTIONS[key].build_section(spec, reference, options, tracking_uri)
        if tracking_uri and section.ran and not section.runs and key != "train":  # train finds one run per model itself
            section.runs = latest_finished_runs(tracking_uri, spec.get("experiment", f"robex-{key}"), spec.get("run_names"))
        if not (section.ran and section.complete):
            log.warning("report: stage %s %s (missing %s)", key, NOT_RUN if not section.ran else "incomplete", ", ".join(section.missing))
        built.append(section)
    return Report(built, git_commit=git_commit, git_dirty=git_dirty, tracking_uri=tracking_uri, overview=overview(sections),
                  reference_report=reference_report)
