"""Report section `explain`: Tables 5.1-5.3 of the LOTS thesis, ours beside the thesis' (owner: E).

Sharded runs: Tables 5.1/5.2 are recomputed as means over the merged per-image rows, Table 5.3 is
weighted by the images of each shard."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from robex.report.document import Section
from robex.report.figures import add_stage_figures
from robex.report.tables import interleave, outer_join_in_order, paper_metric_frame, read_csv, read_json
from robex.utils.sharding import is_sharded, merge_shards, shard_dirs

KEY = "explain"
PROCEDURE_FIGURES = {  # shown whatever the spec lists (the thesis' Fig. 4.2 and Fig. 5.6)
    "figures/lots_procedure_*.png": "The LOTS visualisation procedure (thesis Fig. 4.2), one row per test image: (a) original, (b) LOTS "
                                    "image, signed difference, (c, d) grayscale, (e) |difference| min-max, (f) blurred map, "
                                    "(g) explanation map, (h) heatmap",
    "figures/lots_blur_sizes_*.png": "LOTS maps at blur filter sizes 1, 3, 7 and 15, one row per test image (thesis Fig. 5.6)",
}
TITLE = "LOTS thesis: LOTS against CAM methods (Tables 5.1, 5.2, 5.3)"


def tables_from_per_image(per_image: pd.DataFrame, lots_target: str) -> tuple[pd.DataFrame, pd.DataFrame]:
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


def weighted_timing(stage_dir: Path) -> pd.DataFrame | None:
    """Table 5.3 over shards: each shard's ms/image weighted by its number of images."""
    frames = []
    for directory in shard_dirs(stage_dir):
        timing, per_image = read_csv(directory / "tables" / "table_5_3_ms_per_image.csv"), read_csv(directory / "tables" / "per_image.csv")
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


def build_section(spec: Mapping, reference: Mapping, options: Mapping, tracking_uri: str | None = None) -> Section:
    section = Section(KEY, TITLE)
    stage_dir = Path(spec["dir"])
    tables_dir = stage_dir / "tables"
    lots = reference.get("lots", {})
    metrics = list(lots.get("metrics", []))
    sharded = is_sharded(stage_dir, "tables/per_image.csv")
    if sharded:
        per_image = merge_shards(stage_dir, "tables/per_image.csv")
        table_5_1, table_5_2 = tables_from_per_image(per_image, spec.get("lots_target", "zero"))
        table_5_3 = weighted_timing(stage_dir)
        section.blocks.append(f"Merged {len(shard_dirs(stage_dir))} shards ({len(per_image)} per-image rows); "
                              "Tables 5.1/5.2 are means over the merged images, Table 5.3 is weighted by images per shard.")
    else:
        table_5_1, table_5_2, table_5_3 = (read_csv(tables_dir / f"{n}.csv") for n in
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
        combined = interleave(ours, paper_metric_frame(paper.get("rows", {}), metrics, "Target"), "Target", metrics,
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
            combined = interleave(ours, paper_metric_frame(paper_rows, metrics, "Method"), "Method", metrics, f"paper {paper_backbone}")
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
    stage_metrics = read_json(stage_dir / "metrics.json")
    if stage_metrics:
        lots_rows = [{"model": m, "method": method, **{k: v for k, v in by_method[method].items() if k.startswith("lots_")}}
                     for m, by_method in stage_metrics.get("methods", {}).items() for method in ("lots", "lots_fast") if method in by_method]
        if lots_rows and len(lots_rows[0]) > 2:
            section.add_table("lots_convergence", pd.DataFrame(lots_rows), "LOTS convergence (ours)", max_rows)
    # the procedure (Fig. 4.2) and blur-size (Fig. 5.6) figures belong in the report too, whatever the spec lists
    patterns = list(spec.get("figures", []))
    patterns += [p for p in PROCEDURE_FIGURES if p not in patterns]
    add_stage_figures(section, stage_dir, patterns, options.get("figures_per_pattern", 3), {**PROCEDURE_FIGURES, **{c["glob"]: c["caption"] for c in spec.get("captions", [])}})
    return section
