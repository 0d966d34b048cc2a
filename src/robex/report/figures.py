"""Figures of the report: the stages' PNGs it copies, and the training curves it draws itself."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from robex.report.document import Section
from robex.utils.sharding import natural_key


def add_stage_figures(section: Section, stage_dir: Path, patterns: Iterable[str], per_pattern: int,
                      captions: Mapping[str, str] | Iterable[Mapping[str, str]] | None = None) -> None:
    """Attach up to ``per_pattern`` PNGs per glob pattern (relative to ``stage_dir``; from the shards when
    the stage folder itself has none), captioned by ``captions[pattern]`` (what the figure shows; the
    file's own name is added when a pattern matches several) or, without one, by the file name."""
    captions = captions or {}
    if not isinstance(captions, Mapping):  # the config's list of {glob, caption}
        captions = {entry["glob"]: entry["caption"] for entry in captions}
    for pattern in patterns:
        matches = sorted(stage_dir.glob(pattern), key=lambda p: natural_key(p.name))
        shards = [] if matches else sorted(stage_dir.glob(f"shards/*/{pattern}"), key=lambda p: natural_key(str(p)))
        chosen = (matches or shards)[:per_pattern]
        for path in chosen:
            name = path.stem.replace("_", " ")
            caption = captions.get(pattern)
            caption = (f"{caption} ({name})" if len(chosen) > 1 else caption) if caption else name
            section.figures.append((path, caption))


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
