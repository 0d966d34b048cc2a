"""Report section `lrp_study`: Tables 3-5 of the LRP paper (owner: L2).

The lrp_study tables already carry the paper's values in "(paper)" columns: shown as written."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from robex.report.document import Section, shown
from robex.report.figures import add_stage_figures
from robex.report.tables import metrics_block, read_csv, read_json

KEY = "lrp_study"
TITLE = "LRP paper: explanatory power of LRP measured with adversarial examples (Tables 3, 4, 5)"
LRP_TABLES = (
    ("attack_summary", "L-BFGS attack (Sect. 4.1)"),
    ("table3_adversarial_quantiles", "Table 3: quantiles of the adversarial examples' relevance scores"),
    ("table4_original_quantiles", "Table 4: quantiles of the original images' relevance scores"),
    ("relevance_summary", "Relevance score summary (Sect. 4.2.2)"),
    ("table5_ranking_shares", "Table 5 and Sect. 4.2.3: ranking shares"),
    ("ranking_shifts", "Ranking shifts (Sect. 4.2.3, Figs. 7-9)"),
)


def build_section(spec: Mapping, reference: Mapping, options: Mapping, tracking_uri: str | None = None) -> Section:
    section = Section(KEY, TITLE)
    tables_dir = Path(spec["dir"]) / "statistics" / "tables"
    citation = " ".join(reference.get("lrp", {}).get("citation", "").split())
    found = False
    for name, heading in LRP_TABLES:
        frame = read_csv(tables_dir / f"{name}.csv")
        if frame is None:
            section.missing.append(str(tables_dir / f"{name}.csv"))
            continue
        found = True
        section.add_table(name, frame, heading, options.get("max_table_rows"))
    if not found:
        section.missing.clear()
        section.not_run(tables_dir / "table3_adversarial_quantiles.csv", spec.get("command", "python -m robex.lrp_study lrp=quick"))
        return section
    section.blocks.insert(0, f"Ours: `{shown(tables_dir)}`. Columns marked \"(paper)\" are the published values, written by the "
                             f"lrp_study stage itself; `<rule> [layer]` columns give BatchNorm the rule of the paper's code (the "
                             f"Tables 3-5 default), `[merge]` folds BatchNorm into the convolution first (docs/lrp_study.md). "
                             f"Paper: {citation}")
    for step in ("attack", "relevance"):
        metrics = read_json(Path(spec["dir"]) / step / "metrics.json")
        if metrics:
            section.blocks.append(f"#### {step} step metrics\n\n" + metrics_block(metrics))
    add_stage_figures(section, Path(spec["dir"]), spec.get("figures", []), options.get("figures_per_pattern", 3), spec.get("captions"))
    return section
