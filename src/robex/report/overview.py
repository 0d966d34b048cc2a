"""What was run, read from the stages' own outputs: each study's size and the models it used, with
their test accuracy (the opening of both reports; issue 14 item 9, issue 15)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from robex.report.tables import read_json
from robex.utils.sharding import merge_shards

HEADLINES = (("test/acc", "acc"), ("test/exact_set_acc", "exact-set acc"), ("test/fine_acc", "fine acc"))


def headline(metrics: Mapping | None) -> str:
    """A model's main test metric as 'acc 0.861' ('' when it has none)."""
    for key, label in HEADLINES:
        value = metrics.get(key) if metrics else None
        if isinstance(value, (int, float)) and value == value:  # NaN: a column another kind of model has
            return f"{label} {metrics[key]:.3f}"
    return ""


def study_size(key: str, directory: Path) -> tuple[str, list[str]]:
    """(size, model names) of one study as its outputs state them; ('', []) when they are missing."""
    if key == "lrp_study":
        metrics = read_json(directory / "attack" / "metrics.json") or {}
        if "attack/originals" in metrics:
            return (f"{int(metrics['attack/originals'])} correctly classified originals x 9 targets "
                    f"({int(metrics.get('attack/pairs', 0))} L-BFGS attacks)"), ["cifar_cnn"]
    elif key == "attack":
        metrics = read_json(directory / "metrics.json") or {}
        images = {int(v) for k, v in metrics.items() if k.endswith(".images")}
        if images:
            return f"{max(images)} test images per attack, {len({k.rsplit('.', 1)[0] for k in metrics if k.endswith('.images')})} attacks", \
                [directory.parent.name]
    elif key == "explain":
        metrics = read_json(directory / "metrics.json") or {}
        if "images" in metrics:
            return f"{int(metrics['images'])} test images per backbone", list(metrics.get("methods", {}))
    elif key == "verify":
        try:
            per_image = merge_shards(directory, "per_image.csv")
        except FileNotFoundError:
            return "", []
        counts = per_image.groupby("defense")["image"].nunique()
        variants = ", ".join(sorted(per_image["variant"].astype(str).unique()))
        return f"{int(counts.min())}-{int(counts.max())} test images per defense; {variants}" if counts.min() != counts.max() \
            else f"{int(counts.min())} test images per defense; {variants}", [f"double_mnist_{d}" for d in counts.index]
    return "", []


STUDY_NAMES = {"attack": "C2F attacks (Tables I, II)", "lrp_study": "LRP study (Tables 3-5)", "explain": "LOTS vs CAMs (Tables 5.1-5.3)",
               "verify": "robust neighbourhoods (DOUBLE-MNIST)"}


def overview(sections: Mapping[str, Mapping]) -> pd.DataFrame:
    """One row per study that ran (size, models with their test metric) and one per trained model."""
    train_dir = Path(sections["train"]["dir"]) if "train" in sections else None

    def with_accuracy(name: str) -> str:
        metric = headline(read_json(train_dir / name / "metrics.json")) if train_dir else ""
        return f"{name} ({metric})" if metric else name

    rows = []
    for key, spec in sections.items():
        if key == "train":
            continue
        size, models = study_size(key, Path(spec["dir"]))
        rows.append({"study": STUDY_NAMES.get(key, key), "size": size or "not run",
                     "models (test metric)": ", ".join(with_accuracy(m) for m in models) or "—"})
    return pd.DataFrame(rows, columns=["study", "size", "models (test metric)"])
