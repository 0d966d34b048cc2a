"""The pipeline report: every stage's tables next to the papers' published values.

Reads only what the stages wrote (``outputs/<stage>/`` tables, ``metrics.json``, figures) and the
MLflow store, never recomputes a stage. Paper values come from the stages' own "(paper)" columns
or, where a stage has none, from ``paper_reference.yaml`` beside this module (typed from the
papers, with table/section/page). A stage whose outputs are missing gives a section that says
"not run" instead of an error; :meth:`Report.missing` lists them so a caller can be strict.

Sharded runs: a stage folder may hold ``shards/<name>/`` folders with the same per-image CSV files
(one shard per machine or job); :func:`merge_shards` concatenates them and the summaries (verify
per-model table, explain Tables 5.1/5.2) are recomputed from the merged per-image rows.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

log = logging.getLogger("robex.report")

PAPER_REFERENCE_PATH = Path(__file__).with_name("paper_reference.yaml")
SECTION_TITLES = {
    "train": "Trained models",
    "attack": "C2F paper: explainable attacks on coarse-to-fine classifiers (Tables I, II; Figs. 1, 2)",
    "lrp_study": "LRP paper: explanatory power of LRP measured with adversarial examples (Tables 3, 4, 5)",
    "explain": "LOTS thesis: LOTS against CAM methods (Tables 5.1, 5.2, 5.3)",
    "verify": "Multi-label robustness: maximal robust layered neighbourhoods (DOUBLE-MNIST)",
}
NOT_RUN = "not run"


# ------------------------------------------------------------------------------------ inputs
def _natural_key(name: str) -> list:
    """'shard10' after 'shard2': digits compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def shard_dirs(stage_dir: str | Path) -> list[Path]:
    """The ``<stage_dir>/shards/*/`` folders in natural order (empty when the stage is not sharded)."""
    root = Path(stage_dir) / "shards"
    return sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: _natural_key(p.name)) if root.is_dir() else []


def merge_shards(stage_dir: str | Path, filename: str, source_column: str | None = None) -> pd.DataFrame:
    """One table from a stage's shards: ``<stage_dir>/shards/*/<filename>`` concatenated in natural
    shard order, or ``<stage_dir>/<filename>`` when the stage has no shard holding that file.

    When shards exist the top-level file is ignored (it is an older, unsharded run, not a shard);
    columns missing from a shard are filled with NaN. ``source_column`` adds a column naming the
    shard each row came from (``""`` for the top-level file).
    """
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


def _sharded(stage_dir: Path, filename: str) -> bool:
    return any((directory / filename).is_file() for directory in shard_dirs(stage_dir))


def _shown(path: str | Path) -> str:
    """A path as the report prints it: relative to the working directory when inside it."""
    path = Path(path)
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def _read_csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def load_paper_reference(path: str | Path | None = None) -> dict:
    """The published values (``paper_reference.yaml`` beside this module unless ``path`` is given)."""
    path = Path(path) if path else PAPER_REFERENCE_PATH
    if not path.is_file():
        raise FileNotFoundError(f"paper reference file {str(path)!r} does not exist; pass paper_reference=null for the packaged one")
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


# ------------------------------------------------------------------------------------ MLflow
def latest_finished_runs(tracking_uri: str, experiment: str, run_names: Iterable[str] | None = None) -> list[dict[str, str]]:
    """The newest FINISHED run of ``experiment`` (or, with ``run_names``, the newest of each name;
    if none of the names exists, the newest run of the experiment). Sweep parent runs are skipped.
    Returns [] when the experiment does not exist or the store cannot be read."""
    import mlflow

    try:
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return []
        runs = client.search_runs([found.experiment_id], filter_string="attributes.status = 'FINISHED'",
                                  order_by=["attributes.start_time DESC"], max_results=1000)
    except Exception as error:  # noqa: BLE001 - a broken store must not stop the report
        log.warning("could not read MLflow runs of %s from %s: %s", experiment, tracking_uri, error)
        return []
    runs = [run for run in runs if run.data.tags.get("robex.sweep_parent") != "true"]
    chosen = []
    if run_names:
        for name in run_names:
            newest = next((run for run in runs if run.info.run_name == name), None)
            if newest is not None:
                chosen.append(newest)
    if not chosen and runs:
        chosen = [runs[0]]
    return [
        {"experiment": experiment, "run_name": run.info.run_name or "", "run_id": run.info.run_id,
         "git_commit": run.data.tags.get("git_commit", ""),
         "started": pd.Timestamp(run.info.start_time, unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M UTC")}
        for run in chosen
    ]


def metric_histories(tracking_uri: str, run_id: str, keys: Iterable[str]) -> dict[str, list[tuple[int, float]]]:
    """Per metric key, the (step, value) history logged in one run (missing keys are left out)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    histories = {}
    for key in keys:
        points = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        if points:
            histories[key] = points
    return histories


def run_param(tracking_uri: str, run_id: str, name: str) -> str | None:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=tracking_uri).get_run(run_id).data.params.get(name)


# ------------------------------------------------------------------------------------ tables
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


def markdown_table(frame: pd.DataFrame, max_rows: int | None = None, csv_name: str | None = None) -> str:
    """GitHub Markdown of a table, numbers to 4 significant digits; long tables are cut with a note."""
    shown = frame if max_rows is None or len(frame) <= max_rows else frame.head(max_rows)
    text = shown.map(format_number).to_markdown(index=False, disable_numparse=True)
    if shown is not frame:
        where = f" (all rows: `{csv_name}`)" if csv_name else ""
        text += f"\n\n*First {max_rows} of {len(frame)} rows{where}.*"
    return text


def c2f_side_by_side(ours: pd.DataFrame, paper_columns: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """Tables I/II with "<attack> (paper)" after each of our attack columns (matched by label);
    attacks only the paper has are appended, rows only we report (iterations, time) stay blank."""
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


def _paper_metric_frame(rows: Mapping[str, list[float]], metrics: list[str], key: str) -> pd.DataFrame:
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


# ------------------------------------------------------------------------------------ sections
@dataclass
class Section:
    """One part of the report: Markdown blocks, tables to save as CSV, figures to copy, runs."""

    key: str
    title: str
    ran: bool = True
    blocks: list[str] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: list[tuple[Any, str]] = field(default_factory=list)  # (source PNG path or a matplotlib Figure, caption)
    runs: list[dict[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    complete: bool = True  # False: it ran, but an expected input (e.g. one trained model) is missing

    def add_table(self, name: str, frame: pd.DataFrame, heading: str, max_rows: int | None, note: str = "") -> None:
        self.tables[name] = frame
        text = f"#### {heading}\n\n" + (f"{note}\n\n" if note else "")
        self.blocks.append(text + markdown_table(frame, max_rows, f"tables/{self.key}/{name}.csv"))

    def not_run(self, expected: Path, command: str) -> None:
        self.ran = False
        self.missing.append(str(expected))
        self.blocks.append(f"> **Stage `{self.key}`: {NOT_RUN}.** `{_shown(expected)}` does not exist; produce it with `{command}` (or `dvc repro`).")


def _figures(section: Section, stage_dir: Path, patterns: Iterable[str], per_pattern: int) -> None:
    for pattern in patterns:
        matches = sorted(stage_dir.glob(pattern), key=lambda p: _natural_key(p.name))
        shards = [] if matches else sorted(stage_dir.glob(f"shards/*/{pattern}"), key=lambda p: _natural_key(str(p)))
        for path in (matches or shards)[:per_pattern]:
            section.figures.append((path, path.stem.replace("_", " ")))


def _metrics_block(metrics: Mapping[str, Any], keys: Iterable[str] | None = None) -> str:
    flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and (keys is None or k in keys)}
    if not flat:
        return ""
    frame = pd.DataFrame({"metric": list(flat), "value": list(flat.values())})
    return markdown_table(frame)


def train_section(spec: Mapping, reference: Mapping, tracking_uri: str | None, options: Mapping) -> Section:
    """Test metrics of every trained model (``<train_dir>/<name>/metrics.json``), the accuracies the
    papers state, and the learning curves from the MLflow metric history."""
    section = Section("train", SECTION_TITLES["train"])
    train_dir = Path(spec["dir"])
    names = spec.get("models") or sorted(p.parent.name for p in train_dir.glob("*/metrics.json"))
    rows, histories, monitors = [], {}, {}
    papers = reference.get("training", {})
    for name in names:
        metrics = _read_json(train_dir / name / "metrics.json")
        if metrics is None:
            section.missing.append(str(train_dir / name / "metrics.json"))
            section.complete = False
            rows.append({"model": name, "status": NOT_RUN})
            continue
        row = {"model": name, "status": "trained", **{k: v for k, v in sorted(metrics.items())}}
        paper = papers.get(name)
        if paper:
            row["paper metric"], row["paper value"] = paper["metric"], paper["value"]
        rows.append(row)
    if not rows:
        section.not_run(train_dir / "<name>" / "metrics.json", spec.get("command", "python -m robex.train"))
        return section
    section.ran = any(row["status"] == "trained" for row in rows)
    table = pd.DataFrame(rows)
    paper_columns = [c for c in ("paper metric", "paper value") if c in table.columns]
    table = table[[c for c in table.columns if c not in paper_columns] + paper_columns]
    if tracking_uri:
        trained = [row["model"] for row in rows if row["status"] == "trained"]
        section.runs = [run for name in trained for run in latest_finished_runs(tracking_uri, spec.get("experiment", "robex-train"), [name])
                        if run["run_name"] == name]
        for run in section.runs:
            try:
                monitor = run_param(tracking_uri, run["run_id"], "data.monitor") or "val/acc"
                histories[run["run_name"]] = metric_histories(tracking_uri, run["run_id"], [monitor, "train/loss", "val/loss"])
                monitors[run["run_name"]] = monitor
            except Exception as error:  # noqa: BLE001 - curves are optional
                section.warnings.append(f"no metric history for {run['run_name']}: {error}")
    sources = "; ".join(f"{name}: {paper['source'].strip()}" for name, paper in papers.items() if name in names)
    section.add_table("test_metrics", table, "Test metrics (`outputs/train/<name>/metrics.json`)", options.get("max_table_rows"),
                      note=f"Paper values: {sources}" if sources else "")
    if any(histories.values()):
        section.figures.append((training_curves_figure(histories, monitors), "training curves (MLflow metric history)"))
    return section


def training_curves_figure(histories: Mapping[str, Mapping[str, list[tuple[int, float]]]], monitors: Mapping[str, str]):
    """Validation monitor metric and losses per epoch, one line per model (a matplotlib Figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (name, history) in enumerate(histories.items()):
        colour = colours[index % len(colours)]  # one colour per model in both panels
        monitor = monitors.get(name, "val/acc")
        if monitor in history:
            steps, values = zip(*history[monitor])
            left.plot(steps, values, marker="o", color=colour, label=f"{name} ({monitor})")
        for key, style in (("train/loss", "-"), ("val/loss", "--")):
            if key in history:
                steps, values = zip(*history[key])
                right.plot(steps, values, style, color=colour, label=f"{name} {key.split('/')[0]}")
    left.set(xlabel="epoch", ylabel="validation metric", title="monitored validation metric")
    right.set(xlabel="epoch", ylabel="loss", title="loss (solid: train, dashed: val)")
    if left.lines:
        left.legend(fontsize=7)  # colours name the models in both panels
    for axis in (left, right):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def attack_section(spec: Mapping, reference: Mapping, options: Mapping) -> Section:
    section = Section("attack", SECTION_TITLES["attack"])
    stage_dir = Path(spec["dir"])
    c2f = reference.get("c2f", {})
    found = False
    for name, heading in (("table1_coarse", "Table I: coarse-level attacks"), ("table2_fine", "Table II: fine-level attacks")):
        ours = _read_csv(stage_dir / f"{name}.csv")
        if ours is None:
            section.missing.append(str(stage_dir / f"{name}.csv"))
            continue
        found = True
        paper = c2f.get(name, {})
        note = (f"Ours: `{_shown(stage_dir / (name + '.csv'))}`. Paper: {paper.get('source', '')}; {' '.join(c2f.get('citation', '').split())}"
                if paper else "")
        section.add_table(name, c2f_side_by_side(ours, paper.get("columns", {})), heading, options.get("max_table_rows"), note)
    if not found:
        section.missing.clear()
        section.not_run(stage_dir / "table1_coarse.csv", spec.get("command", "python -m robex.attack"))
        return section
    failures = _read_csv(stage_dir / "failures.csv")
    if failures is not None and len(failures):
        section.add_table("failures", failures, "Failed attacks and why (ours only)", options.get("max_table_rows"))
    _figures(section, stage_dir, spec.get("figures", []), options.get("figures_per_pattern", 3))
    return section


LRP_TABLES = (
    ("attack_summary", "L-BFGS attack (Sect. 4.1)"),
    ("table3_adversarial_quantiles", "Table 3: quantiles of the adversarial examples' relevance scores"),
    ("table4_original_quantiles", "Table 4: quantiles of the original images' relevance scores"),
    ("relevance_summary", "Relevance score summary (Sect. 4.2.2)"),
    ("table5_ranking_shares", "Table 5 and Sect. 4.2.3: ranking shares"),
    ("ranking_shifts", "Ranking shifts (Sect. 4.2.3, Figs. 7-9)"),
)


def lrp_section(spec: Mapping, reference: Mapping, options: Mapping) -> Section:
    """The lrp_study tables already carry the paper's values in "(paper)" columns: shown as written."""
    section = Section("lrp_study", SECTION_TITLES["lrp_study"])
    tables_dir = Path(spec["dir"]) / "statistics" / "tables"
    citation = " ".join(reference.get("lrp", {}).get("citation", "").split())
    found = False
    for name, heading in LRP_TABLES:
        frame = _read_csv(tables_dir / f"{name}.csv")
        if frame is None:
            section.missing.append(str(tables_dir / f"{name}.csv"))
            continue
        found = True
        section.add_table(name, frame, heading, options.get("max_table_rows"))
    if not found:
        section.missing.clear()
        section.not_run(tables_dir / "table3_adversarial_quantiles.csv", spec.get("command", "python -m robex.lrp_study lrp=quick"))
        return section
    section.blocks.insert(0, f"Ours: `{_shown(tables_dir)}`. Columns marked \"(paper)\" are the published values, written by the "
                             f"lrp_study stage itself. Paper: {citation}")
    for step in ("attack", "relevance"):
        metrics = _read_json(Path(spec["dir"]) / step / "metrics.json")
        if metrics:
            section.blocks.append(f"#### {step} step metrics\n\n" + _metrics_block(metrics))
    _figures(section, Path(spec["dir"]), spec.get("figures", []), options.get("figures_per_pattern", 3))
    return section


def _explain_tables_from_per_image(per_image: pd.DataFrame, lots_target: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tables 5.1 and 5.2 as the explain stage writes them, recomputed as means over (merged) images."""
    from robex.explain.tables import lots_targets_table, methods_table

    per_image = per_image.assign(target=per_image["target"].fillna("").astype(str))
    metric_keys = ["average_drop", "average_increase", "coherency", "insertion", "deletion"]
    main = per_image[(per_image["method"] != "lots") | (per_image["target"] == lots_target)]
    summaries: dict[str, dict[str, dict[str, float]]] = {}
    for (model, method), group in main.groupby(["model", "method"], sort=False):
        summaries.setdefault(model, {})[method] = group[metric_keys].mean().to_dict()
    lots = per_image[per_image["method"] == "lots"]
    targets_by_model = lots.groupby("model")["target"].nunique()
    table_5_1 = pd.DataFrame()
    if len(targets_by_model) and targets_by_model.max() > 1:
        backbone = targets_by_model.idxmax()
        target_rows = lots[lots["model"] == backbone]
        table_5_1 = lots_targets_table({t: g[metric_keys].mean().to_dict() for t, g in target_rows.groupby("target", sort=False)}, backbone)
    return table_5_1, methods_table(summaries)


def _weighted_timing(stage_dir: Path) -> pd.DataFrame | None:
    """Table 5.3 over shards: each shard's ms/image weighted by its number of images."""
    frames = []
    for directory in shard_dirs(stage_dir):
        timing, per_image = _read_csv(directory / "tables" / "table_5_3_ms_per_image.csv"), _read_csv(directory / "tables" / "per_image.csv")
        if timing is None or per_image is None:
            continue
        images = per_image.groupby("model")["image"].nunique()
        long = timing.melt(id_vars=timing.columns[0], var_name="model", value_name="ms")
        long["images"] = long["model"].map(images).fillna(0)
        frames.append(long)
    if not frames:
        return None
    merged = pd.concat(frames)
    key = merged.columns[0]
    merged["weighted"] = merged["ms"] * merged["images"]
    grouped = merged.groupby([key, "model"], sort=False)[["weighted", "images"]].sum()
    grouped["ms"] = grouped["weighted"] / grouped["images"].where(grouped["images"] > 0)
    return grouped["ms"].unstack("model").reset_index()


def explain_section(spec: Mapping, reference: Mapping, options: Mapping) -> Section:
    section = Section("explain", SECTION_TITLES["explain"])
    stage_dir = Path(spec["dir"])
    tables_dir = stage_dir / "tables"
    lots = reference.get("lots", {})
    metrics = list(lots.get("metrics", []))
    sharded = _sharded(stage_dir, "tables/per_image.csv")
    if sharded:
        per_image = merge_shards(stage_dir, "tables/per_image.csv")
        table_5_1, table_5_2 = _explain_tables_from_per_image(per_image, spec.get("lots_target", "zero"))
        table_5_3 = _weighted_timing(stage_dir)
        section.blocks.append(f"Merged {len(shard_dirs(stage_dir))} shards ({len(per_image)} per-image rows); "
                              "Tables 5.1/5.2 are means over the merged images, Table 5.3 is weighted by images per shard.")
    else:
        table_5_1, table_5_2, table_5_3 = (_read_csv(tables_dir / f"{n}.csv") for n in
                                           ("table_5_1_lots_targets", "table_5_2_methods", "table_5_3_ms_per_image"))
    if table_5_2 is None or not len(table_5_2):
        section.not_run(tables_dir / "table_5_2_methods.csv", spec.get("command", "python -m robex.explain explain=quick"))
        return section
    backbones = dict(spec.get("paper_backbones", {}))
    citation = " ".join(lots.get("citation", "").split())
    section.blocks.append(f"Paper: {citation} Our backbones are compared with the thesis backbone named in each heading "
                          "(`paper_backbones` in conf/report.yaml); the thesis' dataset and image size differ from ours.")
    max_rows = options.get("max_table_rows")

    if table_5_1 is not None and len(table_5_1):
        paper = lots.get("table_5_1", {})
        ours = table_5_1.drop(columns=["Model"]) if "Model" in table_5_1 else table_5_1
        model = table_5_1["Model"].iloc[0] if "Model" in table_5_1 else "?"
        combined = interleave(ours, _paper_metric_frame(paper.get("rows", {}), metrics, "Target"), "Target", metrics,
                              f"paper {paper.get('backbone', '')}".strip())
        section.add_table("table_5_1", combined, f"Table 5.1: LOTS targets (ours: {model})", max_rows, paper.get("source", ""))
    else:
        section.missing.append(str(tables_dir / "table_5_1_lots_targets.csv"))

    paper_5_2 = lots.get("table_5_2", {})
    for model, ours in table_5_2.groupby("Model", sort=False):
        paper_backbone = backbones.get(model)
        paper_rows = paper_5_2.get("backbones", {}).get(paper_backbone, {}) if paper_backbone else {}
        ours = ours.drop(columns=["Model"])
        if paper_rows:
            combined = interleave(ours, _paper_metric_frame(paper_rows, metrics, "Method"), "Method", metrics, f"paper {paper_backbone}")
        else:
            combined = ours
        heading = f"Table 5.2: methods on {model}" + (f" vs the thesis' {paper_backbone}" if paper_rows else " (no thesis backbone mapped)")
        section.add_table(f"table_5_2_{model}", combined, heading, max_rows, paper_5_2.get("source", "") if paper_rows else "")

    if table_5_3 is not None and len(table_5_3):
        paper = lots.get("table_5_3", {})
        key = table_5_3.columns[0]
        ours = table_5_3.rename(columns={c: f"{c} (ours)" for c in table_5_3.columns[1:]}).rename(columns={key: "Method"})
        paper_frame = pd.DataFrame([{"Method": m, **{f"{b} (paper)": v for b, v in zip(paper.get("backbones", []), values)}}
                                    for m, values in paper.get("rows", {}).items()])
        combined = outer_join_in_order(ours, paper_frame, "Method") if len(paper_frame) else ours
        section.add_table("table_5_3", combined, "Table 5.3: milliseconds per image", max_rows,
                          f"{paper.get('source', '')}. Ours are measured on this run's hardware and batch size.")
    else:
        section.missing.append(str(tables_dir / "table_5_3_ms_per_image.csv"))
    stage_metrics = _read_json(stage_dir / "metrics.json")
    if stage_metrics:
        lots_rows = [{"model": m, **{k: v for k, v in by_method.get("lots", {}).items() if k.startswith("lots_")}}
                     for m, by_method in stage_metrics.get("methods", {}).items() if "lots" in by_method]
        if lots_rows and len(lots_rows[0]) > 1:
            section.add_table("lots_convergence", pd.DataFrame(lots_rows), "LOTS convergence (ours)", max_rows)
    _figures(section, stage_dir, spec.get("figures", []), options.get("figures_per_pattern", 3))
    return section


def verify_per_model(per_image: pd.DataFrame) -> pd.DataFrame:
    """The verify stage's per-model table, recomputed so that merged shards are summarised together."""
    from robex.verify.tables import per_model_table

    return per_model_table(per_image)


def verify_section(spec: Mapping, reference: Mapping, options: Mapping) -> Section:
    section = Section("verify", SECTION_TITLES["verify"])
    stage_dir = Path(spec["dir"])
    try:
        per_image = merge_shards(stage_dir, "per_image.csv")
    except FileNotFoundError:
        section.not_run(stage_dir / "per_image.csv", spec.get("command", "python -m robex.verify"))
        return section
    citation = " ".join(reference.get("verify", {}).get("citation", "").split())
    shards = len(shard_dirs(stage_dir)) if _sharded(stage_dir, "per_image.csv") else 0
    section.blocks.append(f"Paper: {citation}" + (f" Merged {shards} shards ({len(per_image)} rows)." if shards else ""))
    max_rows = options.get("max_table_rows")
    section.add_table("per_model", verify_per_model(per_image), "Per model: neighbourhood size per defense and search variant", max_rows)
    eps_columns = sorted([c for c in per_image.columns if re.fullmatch(r"eps_\d+", c)], key=lambda c: int(c.split("_")[1]))
    shown = [c for c in ["defense", "image", "target", "variant", "size", *eps_columns, "queries", "seconds", "stop_reason", "final_verdict"]
             if c in per_image.columns]
    section.add_table("per_image", per_image[shown], "Per image: eps* per layer d", max_rows)
    if shards:
        from robex.verify.figures import size_distribution

        section.figures.append((size_distribution(per_image), "size distribution (merged shards)"))
    metrics = _read_json(stage_dir / "metrics.json")
    if metrics and not shards:
        section.blocks.append("#### Run metrics\n\n" + _metrics_block(metrics, [k for k in metrics if "." not in k]))
    _figures(section, stage_dir, spec.get("figures", []), options.get("figures_per_pattern", 3))
    return section


BUILDERS = {"attack": attack_section, "lrp_study": lrp_section, "explain": explain_section, "verify": verify_section}


# ------------------------------------------------------------------------------------ report
@dataclass
class Report:
    sections: list[Section]
    git_commit: str
    git_dirty: bool = False
    tracking_uri: str | None = None

    def missing(self) -> dict[str, list[str]]:
        """Sections that did not run (or ran without an expected input), with the files they lacked."""
        return {s.key: s.missing for s in self.sections if not (s.ran and s.complete)}

    def run_ids(self) -> dict[str, list[str]]:
        return {s.key: [r["run_id"] for r in s.runs] for s in self.sections}

    def render_markdown(self, figure_paths: Mapping[int, list[str]] | None = None, report_run_id: str | None = None) -> str:
        figure_paths = figure_paths or {}
        commit = self.git_commit + (" (working tree had uncommitted changes)" if self.git_dirty else "")
        lines = [
            "# robex report",
            "",
            "Generated by `python -m robex.report` from the stages' outputs and the MLflow store; every number of "
            "ours is read from a stage's files, every paper number from the stage's \"(paper)\" columns or from "
            "`src/robex/report/paper_reference.yaml` (typed from the papers, with table and page).",
            "",
            f"- git commit: `{commit}`",
            f"- MLflow tracking URI: `{self.tracking_uri}`" if self.tracking_uri else "- MLflow: not read",
        ]
        if report_run_id:
            lines.append(f"- this report: MLflow run `{report_run_id}` (experiment `robex-report`)")
        lines += ["", "## Contents and MLflow runs", "", self._runs_table(), ""]
        for index, section in enumerate(self.sections):
            lines += [f"## {section.title}", ""]
            for block in section.blocks:
                lines += [block, ""]
            if section.missing and section.ran:
                lines += ["Not produced by this run: " + ", ".join(f"`{_shown(m)}`" for m in section.missing), ""]
            for warning in section.warnings:
                lines += [f"*Warning: {warning}*", ""]
            for path, (_, caption) in zip(figure_paths.get(index, []), section.figures):
                lines += [f"![{caption}]({path})", "", f"*{caption}*", ""]
        return "\n".join(lines).rstrip() + "\n"

    def _runs_table(self) -> str:
        rows = []
        for section in self.sections:
            status = NOT_RUN if not section.ran else "ok" if section.complete else "incomplete"
            if not section.runs:
                rows.append({"section": section.key, "status": status, "run name": "", "MLflow run id": "(none found)", "started": "", "run's git commit": ""})
            for run in section.runs:
                rows.append({"section": section.key, "status": status, "run name": run["run_name"], "MLflow run id": f"`{run['run_id']}`",
                             "started": run["started"], "run's git commit": run["git_commit"][:10]})
        return pd.DataFrame(rows).to_markdown(index=False)

    def write(self, out_dir: str | Path, report_run_id: str | None = None) -> dict[str, list[Path]]:
        """README.md, tables/<section>/<name>.csv and figures/<section>/*.png under ``out_dir``."""
        import matplotlib.pyplot as plt

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        written: dict[str, list[Path]] = {"tables": [], "figures": []}
        figure_paths: dict[int, list[str]] = {}
        for index, section in enumerate(self.sections):
            for name, frame in section.tables.items():
                path = out_dir / "tables" / section.key / f"{name}.csv"
                path.parent.mkdir(parents=True, exist_ok=True)
                frame.to_csv(path, index=False)
                written["tables"].append(path)
            for number, (source, caption) in enumerate(section.figures):
                if isinstance(source, Path):
                    target = out_dir / "figures" / section.key / source.name
                    if target.exists():  # same file name in two shards
                        target = target.with_name(f"{source.parent.parent.name}_{source.name}")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, target)
                else:  # a matplotlib figure made by the report itself
                    target = out_dir / "figures" / section.key / f"{re.sub(r'[^a-z0-9]+', '_', caption.lower()).strip('_') or number}.png"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    source.savefig(target, dpi=130, bbox_inches="tight")
                    plt.close(source)
                    section.figures[number] = (target, caption)
                figure_paths.setdefault(index, []).append(target.relative_to(out_dir).as_posix())
                written["figures"].append(target)
        (out_dir / "README.md").write_text(self.render_markdown(figure_paths, report_run_id), encoding="utf-8")
        return written


def build_report(
    sections: Mapping[str, Mapping],
    reference: Mapping,
    git_commit: str,
    tracking_uri: str | None = None,
    git_dirty: bool = False,
    max_table_rows: int | None = 40,
    figures_per_pattern: int = 3,
) -> Report:
    """Collect every configured section (keys of ``sections``: train, attack, lrp_study, explain,
    verify; each a plain dict with ``dir``, ``experiment``, optional ``run_names``, ``figures``
    (glob patterns relative to ``dir``), ``command`` and section options)."""
    options = {"max_table_rows": max_table_rows, "figures_per_pattern": figures_per_pattern}
    built = []
    for key, spec in sections.items():
        if key == "train":
            section = train_section(spec, reference, tracking_uri, options)
        elif key in BUILDERS:
            section = BUILDERS[key](spec, reference, options)
            if tracking_uri and section.ran:
                section.runs = latest_finished_runs(tracking_uri, spec.get("experiment", f"robex-{key}"), spec.get("run_names"))
        else:
            raise ValueError(f"report section {key!r} is unknown; use some of {['train', *BUILDERS]}")
        if not (section.ran and section.complete):
            log.warning("report: stage %s %s (missing %s)", key, NOT_RUN if not section.ran else "incomplete", ", ".join(section.missing))
        built.append(section)
    return Report(built, git_commit=git_commit, git_dirty=git_dirty, tracking_uri=tracking_uri)
