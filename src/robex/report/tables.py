"""Table helpers of the report: reading stage tables, number formatting, Markdown, joining ours with the papers'."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd


def read_csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def format_number(value: Any) -> Any:
    """4 significant digits below 100 (0.02941, 87.1), 2 decimals above (608.73, 25488.27), so the
    papers' values show as printed; NaN is left blank. Non-floats pass through."""
    if isinstance(value, bool) or not isinstance(value, float):
        return value
    if value != value:  # NaN
        return ""
    if abs(value) >= 100:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.4g}"


def _escape_pipes(value: Any) -> Any:
    """A "|" inside a cell or header (e.g. "|shift| q0.5") would end the Markdown cell."""
    return value.replace("|", "\\|") if isinstance(value, str) else value


def markdown_table(frame: pd.DataFrame, max_rows: int | None = None, csv_name: str | None = None) -> str:
    """GitHub Markdown of a table, numbers to 4 significant digits; long tables are cut with a note."""
    shown = frame if max_rows is None or len(frame) <= max_rows else frame.head(max_rows)
    shown = shown.map(format_number).map(_escape_pipes).rename(columns=lambda c: _escape_pipes(str(c)))
    text = shown.to_markdown(index=False, disable_numparse=True)
    if len(frame) > len(shown):
        where = f" (all rows: `{csv_name}`)" if csv_name else ""
        text += f"\n\n*First {max_rows} of {len(frame)} rows{where}.*"
    return text


def metrics_block(metrics: Mapping[str, Any], keys: Iterable[str] | None = None) -> str:
    """The numeric entries of a stage's metrics.json as a two-column Markdown table ('' if none)."""
    flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and (keys is None or k in keys)}
    if not flat:
        return ""
    frame = pd.DataFrame({"metric": list(flat), "value": list(flat.values())})
    return markdown_table(frame)


def paper_metric_frame(rows: Mapping[str, list[float]], metrics: list[str], key: str) -> pd.DataFrame:
    """A paper table typed as ``{row name: [value per metric]}`` as a frame with ``key`` + ``metrics`` columns."""
    return pd.DataFrame([{key: name, **dict(zip(metrics, values))} for name, values in rows.items()])


def outer_join_in_order(ours: pd.DataFrame, paper: pd.DataFrame, key: str) -> pd.DataFrame:
    """Outer join on ``key``: our rows in our order, then the rows only the paper has, in its order."""
    joined = ours.merge(paper, on=key, how="outer", sort=False)
    names = list(ours[key]) + [n for n in paper[key] if n not in set(ours[key])]
    order = {name: index for index, name in enumerate(names)}
    return joined.sort_values(key, key=lambda column: column.map(order)).reset_index(drop=True)


def interleave(ours: pd.DataFrame, paper: pd.DataFrame, key: str, columns: list[str], paper_label: str) -> pd.DataFrame:
    """Join on ``key`` and put "<column> (<paper_label>)" right after each of our ``columns``.
    Rows of ours keep their order; rows only the paper has are appended."""
    paper = paper.rename(columns={c: f"{c} ({paper_label})" for c in columns})
    joined = outer_join_in_order(ours[[key, *[c for c in columns if c in ours.columns]]], paper, key)
    ordered = [key]
    for column in columns:
        ordered += [c for c in (column, f"{column} ({paper_label})") if c in joined.columns]
    return joined[ordered]


# Short column names for narrow Markdown tables (the CSVs keep the full names); each used
# abbreviation is explained in a legend under the table.
ABBREVIATIONS = (
    (r" \(paper_literal\)$", " lit", "lit = the paper-literal configuration (docs/attack.md)"),
    (r" \(working\)$", " wrk", "wrk = the working configuration (docs/attack.md)"),
    (r" \(working_unguarded\)$", " ung", "ung = the working configuration without LRPF's coarse-label guard"),
    (r" [\[(]paper[\])]$", " P", "P = the paper's value"),
    (r" \(paper ([^)]*)\)$", r" P", "P = the thesis' value for the backbone named in the heading"),
    (r" \[layer\]$", " L", "L = BatchNorm by the layer rule of the paper's code (the Tables 3-5 default)"),
    (r" \[merge\]$", " M", "M = BatchNorm folded into the convolution"),
    (r"^epsilon_", "ε=", "ε=x: the epsilon rule with epsilon x"),
    (r"^alpha_beta_", "αβ=", "αβ=a: the alpha-beta rule with alpha a"),
    (r"^test/", "", "metrics without a prefix are on the test split"),
    (r"^relevance/", "", ""),
    (r"^attack/", "", ""),
)
SUFFIXES = (" lit", " wrk", " ung", " P", " L", " M")


def shorten_columns(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Columns renamed by :data:`ABBREVIATIONS`, and the legend lines of the abbreviations used."""
    import re

    names, legend = {}, []
    for column in frame.columns:
        name = str(column)
        for pattern, replacement, meaning in ABBREVIATIONS:
            new = re.sub(pattern, replacement, name)
            if new != name and meaning and meaning not in legend:
                legend.append(meaning)
            name = new
        names[column] = name
    if len(set(names.values())) < len(names):  # never merge two columns into one name
        return frame, []
    return frame.rename(columns=names), legend


def split_wide(frame: pd.DataFrame, max_columns: int = 8) -> list[pd.DataFrame]:
    """A wide table as several narrow ones: the first (key) column repeated, the others in order,
    keeping columns that differ only by a suffix of :data:`SUFFIXES` (ours / the paper's) together."""
    if len(frame.columns) <= max_columns:
        return [frame]
    key, rest = frame.columns[0], list(frame.columns[1:])

    def group(column: str) -> str:
        column = str(column)
        for suffix in SUFFIXES:
            if column.endswith(suffix):
                return column[: -len(suffix)]
        return column

    groups: list[list[str]] = []
    for column in rest:
        if groups and group(groups[-1][0]) == group(column):
            groups[-1].append(column)
        else:
            groups.append([column])
    import math

    if len(frame.columns) <= max_columns + 2:  # two columns too many: one table still reads better than a split
        return [frame]
    count = math.ceil(len(rest) / (max_columns - 1))
    target = math.ceil(len(rest) / count)  # balanced parts, not a full part and a stub
    parts, current = [], []
    for columns in groups:
        if current and (len(current) + len(columns) > max_columns - 1 or len(current) >= target):
            parts.append(current)
            current = []
        current += columns
    if current:
        parts.append(current)
    return [frame[[key, *columns]] for columns in parts]
