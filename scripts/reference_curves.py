"""Training curves of the committed reference weights: weights/<name>/history.csv -> training_curves.png.

The reproduction report shows each reference model's training curves. They must come from the run
that produced the committed weights, and they must exist on a fresh clone, where no training folder
exists. So both files live beside the weights. For a model whose folder has no history.csv yet, the
per-epoch train/* and val/* metrics are exported from the manifest's MLflow run (``--tracking-uri``),
if that store holds it. The figure is drawn by the train stage's own plotting function.

    python scripts/reference_curves.py --tracking-uri sqlite:///outputs/reference/mlflow.db
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from robex.training.curves import plot_training_curves  # noqa: E402


def export_history(tracking_uri: str, run_id: str, path: Path) -> bool:
    """Per-epoch train/* and val/* metrics of an MLflow run as history.csv; False if the store lacks the run."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    try:
        run = client.get_run(run_id)
    except Exception:  # noqa: BLE001 - another store, or a deleted run
        return False
    keys = sorted(k for k in run.data.metrics if k.split("/", 1)[0] in ("train", "val"))
    rows: dict[int, dict[str, float]] = {}
    for key in keys:
        for metric in client.get_metric_history(run_id, key):
            rows.setdefault(int(metric.step), {"epoch": int(metric.step)})[key] = metric.value
    if not rows:
        return False
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["epoch", *keys])
        writer.writeheader()
        writer.writerows(rows[epoch] for epoch in sorted(rows))
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights-dir", type=Path, default=ROOT / "weights")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store to export a missing history.csv from")
    args = parser.parse_args(argv)

    manifest = json.loads((args.weights_dir / "manifest.json").read_text())
    for name, entry in sorted(manifest.items()):
        folder = args.weights_dir / name
        history = folder / "history.csv"
        if not history.is_file():
            exported = bool(args.tracking_uri) and export_history(args.tracking_uri, entry["mlflow_run_id"], history)
            print(f"{name}: history.csv {'exported from MLflow run ' + entry['mlflow_run_id'] if exported else 'missing, no figure'}")
            if not exported:
                continue
        with history.open() as handle:
            rows = [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]
        metric = next(k for k in entry["test_metrics"] if k.startswith("test/") and k != "test/loss")
        figure = plot_training_curves(rows, f"{name} (committed weights): {metric} {entry['test_metrics'][metric]:.4f}")
        figure.savefig(folder / "training_curves.png", dpi=110)
        print(f"{name}: {folder / 'training_curves.png'} from {len(rows)} epochs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
