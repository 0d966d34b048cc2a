"""`dvc metrics show` / `dvc exp show` read real numbers from the stages' metrics files.

outputs/ is gitignored, so a metrics file declared ``cache: false`` is kept by neither git nor DVC: the
workspace shows it, but every commit and every experiment shows ``!`` (issue 14). Cached metrics (the
default) are read from the DVC cache through dvc.lock's hash. The first test checks the declarations
statically; the second runs DVC on a toy project that declares a metrics file exactly like dvc.yaml's
train stage, under the project's own .gitignore, and written the way the stages write it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).parent / "dvc"


def metrics_outputs():
    from dvc.repo import Repo

    return [out for stage in Repo(str(REPO)).index.stages for out in stage.outs if out.metric]


def _gitignored(paths: list[str], cwd: Path) -> set[str]:
    found = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=cwd, capture_output=True, text=True)
    return set(found.stdout.split())


def test_every_metrics_file_is_kept_by_git_or_by_dvc():
    outs = metrics_outputs()
    paths = {str(out.def_path): out for out in outs}
    assert len(paths) >= 10  # 6 trainings, attack, 3 lrp_study steps, explain, verify
    ignored = _gitignored(sorted(paths), REPO)
    lost = sorted(path for path in ignored if not paths[path].use_cache)
    assert not lost, f"gitignored metrics declared cache: false (dvc exp show prints '!'): {lost}"


def _dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{DVC.parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run([str(DVC), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", "-c", "user.email=test@robex", "-c", "user.name=test", *args], cwd=cwd, check=True,
                   capture_output=True)


WRITER = """import sys, yaml
from pathlib import Path
from robex.utils.io import atomic_write_json
lr = yaml.safe_load(open("params.yaml"))["lr"]
atomic_write_json({"test/acc": lr * 2, "best_val": 0.5}, Path(sys.argv[1]))
"""


def test_exp_show_reads_the_metrics_of_a_commit_and_of_an_experiment(tmp_path):
    """The toy stage's metrics entry is the train stage's (path pattern and cache flag from dvc.yaml)."""
    (train_metrics,) = [out for out in metrics_outputs() if str(out.def_path) == "outputs/train/cifar_cnn/metrics.json"]
    project = tmp_path / "toy"
    project.mkdir()
    shutil.copy2(REPO / ".gitignore", project / ".gitignore")
    (project / "write.py").write_text(WRITER)
    (project / "params.yaml").write_text("lr: 0.1\n")
    path = "outputs/train/toy/metrics.json"
    entry = path if train_metrics.use_cache else {path: {"cache": False}}
    stage = {"cmd": f"{sys.executable} write.py {path}", "deps": ["write.py"], "params": ["lr"], "metrics": [entry]}
    (project / "dvc.yaml").write_text(json.dumps({"stages": {"train": stage}}))  # JSON is YAML
    _git("init", "-q", cwd=project)
    _dvc("init", "-q", cwd=project)
    _dvc("repro", "-q", cwd=project)
    _git("add", "-A", cwd=project)
    _git("commit", "-qm", "baseline", cwd=project)

    shown = json.loads(_dvc("metrics", "show", "--json", cwd=project).stdout)
    assert shown[""]["data"][path]["data"] == {"best_val": 0.5, "test/acc": 0.2}  # "": the workspace

    _dvc("exp", "run", "-q", "-S", "lr=0.3", cwd=project)
    rows = json.loads(_dvc("exp", "show", "--json", cwd=project).stdout)
    (baseline,) = [row for row in rows if row["rev"] != "workspace"]
    (experiment,) = [rev for exp in baseline["experiments"] for rev in exp["revs"]]

    def acc(row):
        return (row["data"]["metrics"].get(path) or {}).get("data", {}).get("test/acc")

    assert acc(baseline) == pytest.approx(0.2)  # the committed run, read from the DVC cache
    assert acc(experiment) == pytest.approx(0.6)  # the experiment's own number, not '!'


def test_python_bytecode_does_not_change_a_directory_dependency(tmp_path: Path):
    """Stages depend on source folders (src/robex/schemas, src/robex/utils, ...). Python writes __pycache__ into
    them, with bytes that differ between machines and runs; unless .dvcignore drops it, a committed dvc.lock
    looks changed on every clone that ran Python. A toy repo with the project's .dvcignore: its folder
    dependency hashes the same before and after bytecode appears."""
    if not DVC.is_file():
        pytest.skip("dvc is not installed in this environment")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    assert _dvc("init", "-q", cwd=tmp_path).returncode == 0
    shutil.copyfile(REPO / ".dvcignore", tmp_path / ".dvcignore")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "code.py").write_text("X = 1\n")
    (tmp_path / "dvc.yaml").write_text("stages:\n  s:\n    cmd: echo ok > out.txt\n    deps: [pkg]\n    outs: [out.txt]\n")
    assert _dvc("repro", "-q", cwd=tmp_path).returncode == 0
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "code.cpython-311.pyc").write_bytes(os.urandom(64))
    status = _dvc("status", "s", cwd=tmp_path)
    assert status.returncode == 0 and "modified" not in status.stdout, status.stdout
    (tmp_path / "pkg" / "code.py").write_text("X = 2\n")  # a real change is still seen
    assert "modified" in _dvc("status", "s", cwd=tmp_path).stdout
