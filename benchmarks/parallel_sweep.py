"""A 2-job parallel sweep as the README documents it leaves two intact, different outputs.

    python -m robex.train -m hydra/launcher=local_parallel hydra.launcher.n_jobs=2 seed=0,1 name=sweep ...

on a small DOUBLE-MNIST cache (prepared first). Checked: one folder per job (``sweep-seed=0``,
``sweep-seed=1``) with every output file, no temporary names left, different weights, each folder's
``model.pt`` naming its own MLflow child run, all runs FINISHED under one parent, and whether the two
jobs really overlapped in time (MLflow start/end times).

    OMP_NUM_THREADS=1 python benchmarks/parallel_sweep.py --out docs/benchmarks/parallel_sweep.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit
from resume_after_kill import _env, prepare  # noqa: E402 - the same small data and environment

OUTPUT_FILES = ("model.pt", "metrics.json", "history.csv", "training_curves.png", "checkpoints/best.ckpt",
                "checkpoints/last.ckpt", "checkpoints/mlflow_run.json")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path)
    parser.add_argument("--sizes", type=int, nargs=3, default=(512, 128, 128), metavar=("TRAIN", "VAL", "TEST"))
    parser.add_argument("--epochs", type=int, default=8)  # long enough for the two jobs to overlap in time
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import mlflow
    import torch

    root = (args.root or Path(tempfile.mkdtemp(prefix="parallel_sweep_"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    prepare_seconds = prepare(root, tuple(args.sizes))
    command = ["-m", "hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2", "seed=0,1", "name=sweep",
               f"trainer.max_epochs={args.epochs}", "data.module.batch_size=32", "trainer.enable_progress_bar=false", f"paths.root_dir={root}"]
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "robex.train", *command], cwd=root, env=_env(root), capture_output=True, text=True)
    seconds = time.monotonic() - start
    report: dict = {"command": "python -m robex.train " + " ".join(command), "exit_code": done.returncode, "seconds": seconds,
                    "prepare_seconds": prepare_seconds, "sizes": dict(zip(("train", "val", "test"), args.sizes)),
                    "joblib_launcher_used": "Joblib.Parallel" in done.stdout + done.stderr}
    if done.returncode != 0:
        report["stderr_tail"] = done.stderr[-2000:]
        print(json.dumps(report, indent=1))
        return 1
    train_dir = root / "outputs" / "train"
    client = mlflow.MlflowClient(tracking_uri=_env(root)["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("robex-train")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("robex.sweep_parent") == "true"]
    jobs = {r.info.run_name: r for r in runs if r not in parents}
    report["folders"] = sorted(p.name for p in train_dir.iterdir())
    report["mlflow"] = {"parent_status": [p.info.status for p in parents],
                        "jobs": {name: {"status": r.info.status, "parent": r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}
                                 for name, r in sorted(jobs.items())}}
    weights, outputs = {}, {}
    for seed in (0, 1):
        out = train_dir / f"sweep-seed={seed}"
        run = jobs.get(f"seed={seed}")
        saved = torch.load(out / "model.pt", weights_only=False) if (out / "model.pt").exists() else {}
        weights[seed] = saved.get("state_dict", {})
        outputs[f"sweep-seed={seed}"] = {
            "complete": all((out / name).is_file() for name in OUTPUT_FILES),
            "model_names_its_run": bool(run) and saved.get("extra", {}).get("run_id") == run.info.run_id,
            "metrics": json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else None,
        }
    report["outputs"] = outputs
    report["weights_differ"] = bool(weights[0]) and not all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    if len(jobs) == 2:
        (a, b) = jobs.values()
        overlap = min(a.info.end_time, b.info.end_time) - max(a.info.start_time, b.info.start_time)
        report["jobs_overlap_seconds"] = overlap / 1000.0
    ok = (report["folders"] == ["sweep-seed=0", "sweep-seed=1"] and report["weights_differ"]
          and all(o["complete"] and o["model_names_its_run"] for o in outputs.values())
          and report["mlflow"]["parent_status"] == ["FINISHED"] and all(j["status"] == "FINISHED" and j["parent"] for j in report["mlflow"]["jobs"].values()))
    report["intact_and_different"] = ok
    emit(report, args.out, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
