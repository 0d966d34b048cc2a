"""Report section `attack`: Tables I/II of the C2F paper, ours beside the published values (owner: L1)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from robex.report.document import Section, shown
from robex.report.figures import add_stage_figures
from robex.report.tables import read_csv

KEY = "attack"
TITLE = "C2F paper: explainable attacks on coarse-to-fine classifiers (Tables I, II; Figs. 1, 2)"


def c2f_side_by_side(ours: pd.DataFrame, paper_columns: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """Tables I/II with "<attack> (paper)" after each of our attack columns (matched by label);
    attacks only the paper has are appended, rows only we report (iterations, time) stay blank.
    Tables the attack stage already wrote with "<attack> [paper]" columns (one per paper column,
    before our paper-literal and working configurations) are shown as they are."""
    if any(str(column).endswith("[paper]") for column in ours.columns):
        return ours
    rows = ours.iloc[:, 0]
    table = pd.DataFrame({ours.columns[0]: rows})
    for column in ours.columns[1:]:
        table[column] = ours[column].to_numpy()
        if column in paper_columns:
            table[f"{column} (paper)"] = rows.map(paper_columns[column]).to_numpy()
    for column, values in paper_columns.items():
        if column not in ours.columns:
            table[f"{column} (paper)"] = rows.map(values).to_numpy()
    return table


def build_section(spec: Mapping, reference: Mapping, options: Mapping, tracking_uri: str | None = None) -> Section:
    section = Section(KEY, TITLE)
    stage_dir = Path(spec["dir"])
    c2f = reference.get("c2f", {})
    found = False
    for name, heading in (("table1_coarse", "Table I: coarse-level attacks"), ("table2_fine", "Table II: fine-level attacks")):
        ours = read_csv(stage_dir / f"{name}.csv")
        if ours is None:
            section.missing.append(str(stage_dir / f"{name}.csv"))
            continue
        found = True
        paper = c2f.get(name, {})
        note = (f"Ours: `{shown(stage_dir / (name + '.csv'))}`. Paper: {paper.get('source', '')}; {' '.join(c2f.get('citation', '').split())}"
                if paper else "")
        section.add_table(name, c2f_side_by_side(ours, paper.get("columns", {})), heading, options.get("max_table_rows"), note)
    if not found:
        section.missing.clear()
        section.not_run(stage_dir / "table1_coarse.csv", spec.get("command", "python -m robex.attack"))
        return section
    failures = read_csv(stage_dir / "failures.csv")
    if failures is not None and len(failures):
        section.add_table("failures", failures, "Failed attacks and why (ours only)", options.get("max_table_rows"))
    add_stage_figures(section, stage_dir, spec.get("figures", []), options.get("figures_per_pattern", 3), spec.get("captions"))
    return section
