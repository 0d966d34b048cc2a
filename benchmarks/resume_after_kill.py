"""A training killed by SIGTERM mid-run and resumed with ``resume=last`` reaches the uninterrupted run's
metrics: same final weights (bit for bit), same metrics.json and history.csv, same MLflow run.

Three real CLI runs of ``python -m robex.train`` on a small DOUBLE-MNIST cache (prepared first with
``python -m robex.prepare``, real MNIST digits): ``name=full`` uninterrupted; ``name=part`` sent
SIGTERM as soon as its first ``last.ckpt`` exists (so it dies during epoch 2), then run again with
``resume=last``. ``defense=l0`` draws its own random masks and the loader shuffles, so a resume that
lost any random state would differ.

    OMP_NUM_THREADS=1 python benchmarks/resume_after_kill.py --out docs/benchmarks/resume_after_kill.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import emit

ROOT = Path(__file__).resolve().parents[1]


def _env(root: Path) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "MKL_NUM_THREADS": "1",
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "ROBEX_DATA": os.environ.get("ROBEX_DATA", str(ROOT.parent / "shared" / "data"))}


def prepare(root: Path, sizes: tuple[int, int, int]) -> float:
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "robex.prepare", "datasets=[double_mnist]", f"double_mnist.num_train={sizes[0]}",
                    f"double_mnist.num_val={sizes[1]}", f"double_mnist.num_test={sizes[2]}", f"paths.root_dir={root}"],
                   cwd=root, env=_env(root), check=True, capture_output=True)
    return time.monotonic() - start


def train_args(root: Path, name: str, args) -> list[str]:
    return [sys.executable, "-m", "robex.train", f"paths.root_dir={root}", f"name={name}", f"trainer.max_epochs={args.epochs}",
            "defense=l0", f"data.module.batch_size={args.batch_size}", "trainer.enable_progress_bar=false", f"seed={args.seed}"]


def run(command: list[str], root: Path) -> tuple[int, float, str]:
    start = time.monotonic()
    done = subprocess.run(command, cwd=root, env=_env(root), capture_output=True, text=True)
    return done.returncode, time.monotonic() - start, done.stderr


def kill_after_first_epoch(command: list[str], root: Path, last: Path) -> dict:
    start = time.monotonic()
    process = subprocess.Popen(command, cwd=root, env=_env(root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while process.poll() is None and not last.exists():
        time.sleep(0.05)
    sent = process.poll() is None
    if sent:
        process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    errors = [line for line in stderr.splitlines() if line.startswith("robex: error:")]
    return {"sigterm_sent_while_running": sent, "exit_code": process.returncode, "seconds": time.monotonic() - start, "error_line": errors[-1] if errors else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--sizes", type=int, nargs=3, default=(512, 128, 128), metavar=("TRAIN", "VAL", "TEST"))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import mlflow
    import torch

    root = (args.root or Path(tempfile.mkdtemp(prefix="resume_after_kill_"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    report: dict = {"sizes": dict(zip(("train", "val", "test"), args.sizes)), "epochs": args.epochs, "batch_size": args.batch_size,
                    "defense": "l0", "seed": args.seed, "omp_num_threads": _env(root)["OMP_NUM_THREADS"], "root": str(root)}
    report["prepare_seconds"] = prepare(root, tuple(args.sizes))
    train_dir = root / "outputs" / "train"

    code, seconds, stderr = run(train_args(root, "full", args), root)
    assert code == 0, stderr[-2000:]
    report["uninterrupted"] = {"exit_code": code, "seconds": seconds}

    last = train_dir / "part" / "checkpoints" / "last.ckpt"
    report["killed"] = kill_after_first_epoch(train_args(root, "part", args), root, last)
    killed_ckpt = torch.load(last, map_location="cpu", weights_only=False)
    report["killed"].update({"last_ckpt_epoch": int(killed_ckpt["epoch"]), "last_ckpt_global_step": int(killed_ckpt["global_step"]),
                             "model_pt_written": (train_dir / "part" / "model.pt").exists()})
    run_file = train_dir / "part" / "checkpoints" / "mlflow_run.json"
    killed_run_id = json.loads(run_file.read_text())["run_id"]
    client = mlflow.MlflowClient(tracking_uri=_env(root)["MLFLOW_TRACKING_URI"])
    report["killed"]["mlflow_status"] = client.get_run(killed_run_id).info.status

    code, seconds, stderr = run([*train_args(root, "part", args), "resume=last"], root)
    assert code == 0, stderr[-2000:]
    resumed_run_id = json.loads(run_file.read_text())["run_id"]
    resumed = client.get_run(resumed_run_id)
    steps = [m.step for m in client.get_metric_history(resumed_run_id, "val/exact_set_acc")]
    report["resumed"] = {"exit_code": code, "seconds": seconds, "same_mlflow_run": resumed_run_id == killed_run_id,
                         "mlflow_status": resumed.info.status, "val_metric_steps": steps}

    full_metrics = json.loads((train_dir / "full" / "metrics.json").read_text())
    part_metrics = json.loads((train_dir / "part" / "metrics.json").read_text())
    full_weights = torch.load(train_dir / "full" / "model.pt", weights_only=False)["state_dict"]
    part_weights = torch.load(train_dir / "part" / "model.pt", weights_only=False)["state_dict"]
    report["uninterrupted"]["metrics"] = full_metrics
    report["resumed"]["metrics"] = part_metrics
    report["equal"] = {
        "metrics_json": full_metrics == part_metrics,
        "model_weights_bitwise": sorted(full_weights) == sorted(part_weights) and all(torch.equal(full_weights[k], part_weights[k]) for k in full_weights),
        "history_csv": (train_dir / "full" / "history.csv").read_text() == (train_dir / "part" / "history.csv").read_text(),
    }
    emit(report, args.out, indent=1)
    return 0 if all(report["equal"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
