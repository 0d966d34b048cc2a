"""`dvc repro` on a temporary copy of the project with tiny data: runs, then does nothing; after a
module edit it re-runs exactly the stages that import it (deps written by scripts/dvc_deps.py)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, real_data_root
from robex.data.hierarchy import CIFAR10_CLASSES

TINY_PREPARE = """# @package _global_
double_mnist:
  num_train: 64
  num_val: 32
  num_test: 32
cifar10:
  num_train: null
  num_test: null
"""
TINY_TRAIN = """# @package _global_
trainer:
  max_epochs: 1
"""


def _write_computed_deps(project: Path) -> None:
    """The copy's dvc.yaml with every stage's code deps set to its import closure (as --write does)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("dvc_deps", REPO / "scripts" / "dvc_deps.py")
    dvc_deps = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("dvc_deps", dvc_deps)  # its dataclasses look their module up there
    spec.loader.exec_module(dvc_deps)
    dvc_deps.write(dvc_deps.stage_deps(), project / "dvc.yaml")


def _edit(path: Path) -> None:
    path.write_text(path.read_text() + "\n# edited by test_dvc_pipeline\n")  # DVC hashes content: `touch` is not enough


def _dvc(*args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    dvc = Path(sys.executable).parent / "dvc"
    return subprocess.run([str(dvc), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _tiny_project(tmp_path: Path) -> tuple[Path, dict]:
    """A copy of the project (conf, src, dvc.yaml with computed deps) and tiny raw data, in a git repo."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("conf", "src", ".dvc"):
        shutil.copytree(REPO / name, project / name, ignore=shutil.ignore_patterns("__pycache__", "tmp", "cache"))
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):  # .gitignore: outputs/ untracked by git, as in a clone
        shutil.copy2(REPO / name, project / name)
    (project / "conf" / "experiment" / "quick_prepare.yaml").write_text(TINY_PREPARE)
    (project / "conf" / "experiment" / "quick.yaml").write_text(TINY_TRAIN)
    _write_computed_deps(project)

    data = tmp_path / "data"
    (data / "MNIST").mkdir(parents=True)
    os.symlink(real_data_root() / "MNIST" / "raw", data / "MNIST" / "raw")
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in CIFAR10_CLASSES:
            (data / "cifar10" / split / name).mkdir(parents=True)
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(data / "cifar10" / split / name / "0.png")

    env = {**os.environ, "ROBEX_DATA": str(data), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "OMP_NUM_THREADS": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           # the copy's own code and conf/ (robex.utils.hydra.CONFIG_PATH follows the imported package), not the
           # editable install's: otherwise `dvc exp run -S` would change a file the stage never reads
           "PYTHONPATH": str(project / "src")}
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    return project, env


@pytest.mark.skipif(real_data_root() is None, reason="real MNIST not available (set ROBEX_DATA)")
def test_dvc_repro_runs_then_is_a_no_op(tmp_path):
    project, env = _tiny_project(tmp_path)
    target = "train_double_mnist@none"
    first = _dvc("repro", target, cwd=project, env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    model = project / "outputs" / "train" / "double_mnist_none" / "model.pt"
    assert model.is_file() and (project / "dvc.lock").is_file()
    stamp = model.stat().st_mtime_ns

    second = _dvc("repro", target, cwd=project, env=env)
    assert second.returncode == 0
    assert "Running stage" not in second.stdout
    assert model.stat().st_mtime_ns == stamp

    metrics = _dvc("metrics", "show", cwd=project, env=env)
    assert "test/exact_set_acc" in metrics.stdout

    # an edit of a module the stage does not import leaves it up to date ...
    _edit(project / "src" / "robex" / "models" / "cifar_cnn.py")
    status = _dvc("status", target, cwd=project, env=env)
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout
    # ... an edit of one it imports (through the model config's _target_) makes it stale
    _edit(project / "src" / "robex" / "models" / "double_mnist_cnn.py")
    status = _dvc("status", target, cwd=project, env=env)
    assert target in status.stdout and "src/robex/models/double_mnist_cnn.py" in status.stdout, status.stdout
    assert "prepare:" not in status.stdout  # prepare does not import the model


@pytest.mark.slow
@pytest.mark.skipif(real_data_root() is None, reason="real MNIST not available (set ROBEX_DATA)")
def test_dvc_exp_run_set_param_on_a_params_file(tmp_path):
    """`dvc exp run -S` on a declared params file (what tests/test_dvc_params.py checks statically)."""
    project, env = _tiny_project(tmp_path)
    git = ["git", "-c", "user.email=test@robex", "-c", "user.name=test"]
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", "tiny"], cwd=project, check=True)
    run = _dvc("exp", "run", "-S", "conf/experiment/quick.yaml:trainer.max_epochs=2", "train_double_mnist@none", cwd=project, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "max_epochs: 2" in (project / "conf" / "experiment" / "quick.yaml").read_text()
    rows = json.loads(_dvc("exp", "show", "--json", cwd=project, env=env).stdout)
    (baseline,) = [row for row in rows if row["rev"] != "workspace"]
    (experiment,) = [rev for exp in baseline["experiments"] or [] for rev in exp["revs"]]

    def epochs_param(row):
        return row["data"]["params"]["conf/experiment/quick.yaml"]["data"]["trainer"]["max_epochs"]

    assert (epochs_param(baseline), epochs_param(experiment)) == (1, 2)  # the committed value and the experiment's
    # the experiment's metrics are numbers, not '!' (outputs/ is gitignored: metrics must be DVC-cached),
    # and they come from a run that used the -S value (the stage's cmd must not override it)
    metrics = experiment["data"]["metrics"]["outputs/train/double_mnist_none/metrics.json"]["data"]
    assert 0.0 <= metrics["test/exact_set_acc"] <= 1.0 and metrics["parameters"] == 3818
    assert metrics["epochs"] == 2
