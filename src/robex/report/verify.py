"""Report section `verify`: maximal robust layered neighbourhoods per defense model (owner: V).

Sharded runs: the per-model table is recomputed from the merged per-image rows."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from robex.report.document import Section
from robex.report.figures import add_stage_figures
from robex.report.tables import metrics_block, read_json
from robex.utils.sharding import is_sharded, merge_shards, shard_dirs

KEY = "verify"
TITLE = "Multi-label robustness: maximal robust layered neighbourhoods (DOUBLE-MNIST)"


def verify_per_model(per_image: pd.DataFrame) -> pd.DataFrame:
    """The verify stage's per-model table, recomputed so that merged shards are summarised together."""
    from robex.verify.tables import per_model_table

    return per_model_table(per_image)


def build_section(spec: Mapping, reference: Mapping, options: Mapping, tracking_uri: str | None = None) -> Section:
    section = Section(KEY, TITLE)
    stage_dir = Path(spec["dir"])
    try:
        per_image = merge_shards(stage_dir, "per_image.csv")
    except FileNotFoundError:
        section.not_run(stage_dir / "per_image.csv", spec.get("command", "python -m robex.verify"))
        return section
    citation = " ".join(reference.get("verify", {}).get("citation", "").split())
    shards = len(shard_dirs(stage_dir)) if is_sharded(stage_dir, "per_image.csv") else 0
    section.blocks.append(f"Paper: {citation}" + (f" Merged {shards} shards ({len(per_image)} rows)." if shards else ""))
    max_rows = options.get("max_table_rows")
    section.add_table("per_model", verify_per_model(per_image), "Per model: neighbourhood size per defense and search variant", max_rows)
    eps_columns = sorted([c for c in per_image.columns if re.fullmatch(r"eps_\d+", c)], key=lambda c: int(c.split("_")[1]))
    shown = [c for c in ["defense", "image", "target", "variant", "size", *eps_columns, "queries", "refuted_share", "seconds", "stop_reason", "final_verdict", "final_proved_by"]
             if c in per_image.columns]
    section.add_table("per_image", per_image[shown], "Per image: eps* per layer d", max_rows)
    if shards:
        from robex.verify.figures import size_distribution

        section.figures.append((size_distribution(per_image), "size distribution (merged shards)"))
    metrics = read_json(stage_dir / "metrics.json")
    if metrics and not shards:
        section.blocks.append("#### Run metrics\n\n" + metrics_block(metrics, [k for k in metrics if "." not in k]))
    add_stage_figures(section, stage_dir, spec.get("figures", []), options.get("figures_per_pattern", 3), spec.get("captions"))
    return section
