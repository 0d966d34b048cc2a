"""Schema of the `report` stage (conf/report.yaml): one entry per section, in report order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from robex.utils.errors import RobexError

SECTION_KEYS = ("train", "attack", "lrp_study", "explain", "verify")


@dataclass
class FigureSpec:
    glob: str = MISSING     # a figure pattern (sections.<key>.captions: as in `figures`; reproduction.figures: "<section>:<pattern>")
    caption: str = MISSING  # what the figure shows (the README's caption)


@dataclass
class SectionConfig:
    """One report section (``sections.<key>``, key = train | attack | lrp_study | explain | verify). One type for
    all keys, so ``~sections.<key>`` can drop a section; the section-specific options are optional fields."""

    dir: str = MISSING  # the stage's output folder (it may hold shards/<name>/ with the same per-image CSVs)
    experiment: str = MISSING  # the MLflow experiment that produced it
    run_names: Optional[List[str]] = None  # which MLflow runs (null: the newest FINISHED run)
    command: str = MISSING  # how to produce a missing section
    figures: List[str] = field(default_factory=list)  # globs relative to `dir`
    models: Optional[List[str]] = None  # train: the model names (null = every <name>/metrics.json found)
    lots_target: str = "zero"  # explain: the LOTS target of Table 5.2 when Tables 5.1/5.2 are recomputed from shards
    paper_backbones: Dict[str, str] = field(default_factory=dict)  # explain: our backbone -> the thesis backbone
    captions: List[FigureSpec] = field(default_factory=list)  # {glob: a pattern of `figures`, caption: what it shows}


@dataclass
class ReproductionConfig:
    """The reference reproduction report (docs/reproduction/): claims, verdicts, metrics.json."""

    output_dir: str = MISSING  # e.g. docs/reproduction (replaced as a whole: everything in it is generated)
    manifest: str = "weights/manifest.json"  # the committed reference weights (models, commits, MLflow run ids)
    stage_names: Dict[str, str] = field(default_factory=dict)  # manifest name -> the name the stages load it as
    figures: Dict[str, List[FigureSpec]] = field(default_factory=dict)  # work ("000".."003") -> figures of its section
    extra_dirs: Dict[str, List[str]] = field(default_factory=dict)  # section -> more output folders of it (verify: the binary search run)


@dataclass
class ReportConfig:
    seed: int = 0
    strict: bool = False  # true: any section whose stage outputs are missing is an error
    output_dir: str = MISSING
    paper_reference: Optional[str] = None  # YAML of published values; null = src/robex/report/paper_reference.yaml
    max_table_rows: int = 60
    figures_per_pattern: int = 3
    sections: Dict[str, SectionConfig] = field(default_factory=dict)  # in report order
    reproduction: Optional[ReproductionConfig] = None  # set (experiment=reference_report): also write docs/reproduction/
    reference_report: Optional[str] = None  # the quick report links here for the real numbers
    paths: Any = MISSING
    tracking: Any = MISSING

    def __post_init__(self) -> None:
        unknown = sorted(set(self.sections) - set(SECTION_KEYS))
        if unknown:
            raise RobexError(f"sections.{unknown[0]} is not a report section; use some of {', '.join(SECTION_KEYS)}")
        if self.max_table_rows < 1 or self.figures_per_pattern < 0:
            raise RobexError(f"max_table_rows={self.max_table_rows} must be >= 1 and figures_per_pattern={self.figures_per_pattern} >= 0")


def register(cs) -> None:
    cs.store(name="report_schema", node=ReportConfig)
