"""Commit a trained model as a reference weight: copy it to weights/<name>/ and add its manifest entry.

    python scripts/add_reference_weights.py --train-dir outputs/reference/train/resnet18_cifar --name resnet18_cifar \
        --command "python -m robex.train ..." --description "..." --hardware "2 CPU cores, ..."

The entry records what `robex.models.io.checked_reference_file` checks (file, sha256, bytes) and
the provenance the reproduction report prints (seed, commit, MLflow run id, command, test metrics),
all read from the training run's folder (metrics.json, checkpoints/mlflow_run.json), never typed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

LIMIT_BYTES = 5 * 1024 * 1024  # each reference weight stays well under 5 MB (the project's rule)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-dir", required=True, type=Path, help="the training run's folder (model.pt, metrics.json)")
    parser.add_argument("--name", required=True, help="manifest name, e.g. resnet18_cifar")
    parser.add_argument("--command", required=True, help="the exact training command")
    parser.add_argument("--description", required=True)
    parser.add_argument("--hardware", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights-dir", type=Path, default=Path("weights"))
    args = parser.parse_args(argv)

    model = args.train_dir / "model.pt"
    if not model.is_file():
        print(f"error: {model} does not exist; train the model first", file=sys.stderr)
        return 1
    size = model.stat().st_size
    if size >= LIMIT_BYTES:
        print(f"error: {model} has {size:,} bytes, over the {LIMIT_BYTES:,}-byte limit for committed weights", file=sys.stderr)
        return 1
    target = args.weights_dir / args.name
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model, target / "model.pt")
    if (args.train_dir / "history.csv").is_file():
        shutil.copyfile(args.train_dir / "history.csv", target / "history.csv")
    run = json.loads((args.train_dir / "checkpoints" / "mlflow_run.json").read_text())
    metrics = json.loads((args.train_dir / "metrics.json").read_text())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    manifest_path = args.weights_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest[args.name] = {
        "file": str(target / "model.pt"),
        "sha256": hashlib.sha256((target / "model.pt").read_bytes()).hexdigest(),
        "bytes": size,
        "seed": args.seed,
        "code_commit": commit,
        "mlflow_run_id": run["run_id"],
        "command": args.command,
        "test_metrics": metrics,
        "description": args.description,
        "hardware": args.hardware,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"added {args.name}: {size:,} bytes, sha256 {manifest[args.name]['sha256'][:12]}..., test metrics {metrics}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
