"""The train and prepare stages as a user runs them: subprocesses (and in-process runs where only the
stage's own behaviour matters) with an isolated MLflow store. Bad inputs: tests/test_bad_inputs.py."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch

from conftest import compose_config, run_cli, runs_by_status

TINY = ["trainer.max_epochs=1", "data.module.batch_size=16", "trainer.log_every_n_steps=1"]
QUIET = ["trainer.enable_progress_bar=false"]
OUTPUT_FILES = ("model.pt", "metrics.json", "history.csv", "training_curves.png", "checkpoints/best.ckpt",
                "checkpoints/last.ckpt", "checkpoints/mlflow_run.json")


def train_in_process(root, *overrides):
    """`python -m robex.train <overrides>` without a subprocess: the same config, the same run()."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from robex.stages.train import run

    cfg = compose_config("train", [*QUIET, "data.module.batch_size=16", *overrides], root=root, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return run(cfg)


def _runs(uri, experiment="robex-train"):
    client = mlflow.MlflowClient(tracking_uri=uri)
    return client, client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def test_single_run_writes_model_and_logs_to_mlflow(tmp_path, tiny_prepared, tracking_uri):
    result = run_cli("robex.train", *TINY, "name=dm", cwd=tmp_path, env_extra={"MLFLOW_TRACKING_URI": tracking_uri})
    assert result.returncode == 0, result.stderr[-2000:]
    out = tmp_path / "outputs" / "train" / "dm"
    assert all((out / name).is_file() for name in OUTPUT_FILES)
    metrics = json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in metrics.json"))
    assert all(isinstance(v, float) for v in metrics.values())  # flat numbers: `dvc exp show` can compare them
    assert 0.0 <= metrics["test/exact_set_acc"] <= 1.0 and metrics["parameters"] == 3818 and metrics["epochs"] == 1
    client, (run,) = _runs(tracking_uri)
    assert run.info.status == "FINISHED"
    assert run.data.params["defense.name"] == "none" and run.data.params["model.net.channels"] == "[8, 16]"
    assert "git_commit" in run.data.tags
    history = client.get_metric_history(run.info.run_id, "val/exact_set_acc")
    assert len(history) == 1 and history[0].step == 0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)} | {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {"model", "metrics.json", "history.csv", "figures/training_curves.png", "config.yaml"} <= artifacts
    # the whole resolved config as a file, with the same values as the flattened params
    import yaml

    from robex.tracking.mlflow_utils import flatten

    logged = yaml.safe_load(Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))).read_text())
    assert {k: str(v) for k, v in flatten(logged).items()} == {k: v for k, v in run.data.params.items()}
    assert logged["defense"]["name"] == "none" and logged["model"]["net"]["channels"] == [8, 16]
    # quiet edge: Lightning's tips and the known pytree deprecation warning are filtered
    assert "Tip:" not in result.stderr + result.stdout and "LeafSpec" not in result.stderr


def test_resume_last_continues_the_same_mlflow_run(tmp_path, tiny_prepared, tracking_uri, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    train_in_process(tmp_path, "name=dm", "trainer.max_epochs=1")
    last = tmp_path / "outputs" / "train" / "dm" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 4  # 64 samples / 16
    train_in_process(tmp_path, "name=dm", "trainer.max_epochs=3", "resume=last")
    assert torch.load(last, weights_only=False)["global_step"] == 12  # two more epochs, continued
    client, runs = _runs(tracking_uri)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # the resumed run IS the first run
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "val/exact_set_acc")] == [0, 1, 2]
    assert "trainer.max_epochs=3" in runs[0].data.tags["robex.resume_changed_params"]
    rows = (tmp_path / "outputs" / "train" / "dm" / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["0", "1", "2"]  # the epochs before the resume are kept


def test_killed_and_resumed_training_equals_uninterrupted_bitwise(tmp_path, tiny_prepared, tracking_uri, monkeypatch):
    """Stop after epoch 1 of 3 (max_epochs=1), resume=last to 3: the same weights, bit for bit, as one
    uninterrupted run. defense=l0 draws from its own generator and the loader shuffles, so a resume
    that does not restore random states differs: the second half checks this test would see it."""
    from robex.training.callbacks import ResumableRandomness

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    common = ("defense=l0",)
    full = train_in_process(tmp_path, "name=full", "trainer.max_epochs=3", *common)
    train_in_process(tmp_path, "name=part", "trainer.max_epochs=1", *common)
    resumed = train_in_process(tmp_path, "name=part", "trainer.max_epochs=3", "resume=last", *common)
    train_dir = tmp_path / "outputs" / "train"
    full_last, part_last = _weights(train_dir / "full/checkpoints/last.ckpt"), _weights(train_dir / "part/checkpoints/last.ckpt")
    assert all(torch.equal(full_last[k], part_last[k]) for k in full_last)
    assert resumed == full
    assert (train_dir / "full/history.csv").read_text() == (train_dir / "part/history.csv").read_text()

    monkeypatch.setattr(ResumableRandomness, "on_train_epoch_start", lambda self, trainer, module: None)
    train_in_process(tmp_path, "name=naive", "trainer.max_epochs=1", *common)
    train_in_process(tmp_path, "name=naive", "trainer.max_epochs=3", "resume=last", *common)
    naive_last = _weights(train_dir / "naive/checkpoints/last.ckpt")
    assert not all(torch.equal(full_last[k], naive_last[k]) for k in full_last)


def test_second_run_of_a_name_overwrites_its_checkpoints(tmp_path, tiny_prepared, tracking_uri, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    train_in_process(tmp_path, "name=dm", "trainer.max_epochs=1")
    checkpoints = tmp_path / "outputs" / "train" / "dm" / "checkpoints"
    first = _weights(checkpoints / "last.ckpt")
    train_in_process(tmp_path, "name=dm", "trainer.max_epochs=1", "seed=1")
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt", "mlflow_run.json"]  # no last-v1.ckpt
    _, runs = _runs(tracking_uri)
    newest = max(runs, key=lambda r: r.info.start_time)
    assert json.loads((checkpoints / "mlflow_run.json").read_text())["run_id"] == newest.info.run_id
    second = _weights(checkpoints / "last.ckpt")
    assert not all(torch.equal(first[k], second[k]) for k in first)  # the second run's weights, not the first's


def test_multirun_leaves_one_finished_run_and_one_folder_per_job(tmp_path, tiny_prepared, tracking_uri):
    result = run_cli("robex.train", "-m", "defense=none,l0", *TINY, cwd=tmp_path, env_extra={"MLFLOW_TRACKING_URI": tracking_uri})
    assert result.returncode == 0, result.stderr[-2000:]
    assert runs_by_status(tracking_uri) == {"FINISHED": 3}  # parent + 2 jobs
    _, runs = _runs(tracking_uri)
    (parent,) = [r for r in runs if r.data.tags.get("robex.sweep_parent") == "true"]
    jobs = [r for r in runs if r is not parent]
    assert {r.data.params["defense.name"] for r in jobs} == {"none", "l0"}
    assert {r.data.tags["mlflow.parentRunId"] for r in jobs} == {parent.info.run_id}
    assert {r.data.tags["sweep_id"] for r in jobs} == {parent.data.tags["sweep_id"]}
    assert {r.info.run_name for r in jobs} == {"defense=none", "defense=l0"}
    # `name` interpolates ${defense.name}: the jobs' folders differ already, no suffix is added
    folders = sorted(p.name for p in (tmp_path / "outputs" / "train").iterdir())
    assert folders == ["double_mnist_double_mnist_cnn_l0", "double_mnist_double_mnist_cnn_none"]


@pytest.mark.slow  # a subprocess sweep: ~30-80 s on 2 shared cores
def test_parallel_sweep_leaves_two_complete_different_outputs(tmp_path, tiny_prepared, tracking_uri):
    result = run_cli("robex.train", "-m", "hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2", "seed=0,1", *TINY,
                     cwd=tmp_path, env_extra={"MLFLOW_TRACKING_URI": tracking_uri})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Joblib.Parallel" in result.stdout + result.stderr
    _, runs = _runs(tracking_uri)
    (parent,) = [r for r in runs if r.data.tags.get("robex.sweep_parent") == "true"]
    jobs = {r.info.run_name: r for r in runs if r is not parent}
    assert sorted(jobs) == ["seed=0", "seed=1"] and parent.info.status == "FINISHED"
    assert all(r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in jobs.values())
    train_dir = tmp_path / "outputs" / "train"
    outs = {seed: train_dir / f"double_mnist_double_mnist_cnn_none-seed={seed}" for seed in (0, 1)}
    assert sorted(p.name for p in train_dir.iterdir()) == sorted(p.name for p in outs.values())  # no temp names left
    for seed, out in outs.items():
        assert all((out / name).is_file() for name in OUTPUT_FILES), sorted(p.name for p in out.rglob("*"))
        assert json.loads((out / "checkpoints" / "mlflow_run.json").read_text())["run_id"] == jobs[f"seed={seed}"].info.run_id
        assert torch.load(out / "model.pt", weights_only=False)["extra"]["run_id"] == jobs[f"seed={seed}"].info.run_id
    first, second = _weights(outs[0] / "model.pt"), _weights(outs[1] / "model.pt")
    assert not all(torch.equal(first[k], second[k]) for k in first)  # two different seeds, two different models


def test_sweep_parent_fails_when_a_job_value_does_not_compose(tmp_path, tracking_uri):
    result = run_cli("robex.train", "-m", "seed=0,foo", *TINY, cwd=tmp_path, env_extra={"MLFLOW_TRACKING_URI": tracking_uri})
    assert result.returncode == 1
    assert [line for line in result.stderr.splitlines() if line.startswith("robex: error:")] == [
        "robex: error: seed is invalid: Value 'foo' of type 'str' could not be converted to Integer; fix it on the command line or in conf/"]
    assert runs_by_status(tracking_uri) == {"FAILED": 1}  # the parent; no job started


@pytest.mark.slow  # a subprocess sweep: ~30-80 s on 2 shared cores
def test_sweep_parent_fails_when_a_job_fails(tmp_path, tiny_prepared, tracking_uri):
    result = run_cli("robex.train", "-m", "resume=/nowhere/last.ckpt,null", *TINY, cwd=tmp_path, env_extra={"MLFLOW_TRACKING_URI": tracking_uri})
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("robex: error:")]
    assert errors == ["robex: error: resume=/nowhere/last.ckpt: '/nowhere/last.ckpt' does not exist; pass resume=last, the path of an existing .ckpt, or resume=null"]
    statuses = runs_by_status(tracking_uri)
    assert "RUNNING" not in statuses and statuses.get("FAILED") == 1


def _sqlite_run_statuses(path) -> list[str]:
    import sqlite3

    if not path.exists():
        return []
    try:
        with sqlite3.connect(path, timeout=1) as connection:
            return [row[0] for row in connection.execute("select status from runs")]
    except sqlite3.Error:
        return []


def _start_and_terminate(tmp_path, args, running_runs: int):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    process = subprocess.Popen([sys.executable, "-m", "robex.train", *args], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            # read the store with plain sqlite: an MLflow client here would race the child's schema set-up
            if _sqlite_run_statuses(tmp_path / "mlflow.db").count("RUNNING") == running_runs:
                time.sleep(3)  # let training start
                break
            time.sleep(0.5)
        assert process.poll() is None, process.communicate()[1][-2000:]
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, stderr


def test_sigterm_ends_the_mlflow_run_killed_and_leaves_no_output(tmp_path, tiny_prepared, tracking_uri):
    code, stderr = _start_and_terminate(tmp_path, ["trainer.max_epochs=1000", "data.module.batch_size=4", "name=long"], running_runs=1)
    assert code == 128 + signal.SIGTERM, stderr[-3000:]
    assert [line for line in stderr.splitlines() if line.startswith("robex: error:")] == [
        "robex: error: stopped by SIGTERM; the MLflow run was marked KILLED and no output was published"]
    assert runs_by_status(tracking_uri) == {"KILLED": 1}
    out = tmp_path / "outputs" / "train" / "long"
    assert not (out / "model.pt").exists() and (out / "checkpoints" / "last.ckpt").is_file()  # resumable
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.slow  # a subprocess sweep: ~30-80 s on 2 shared cores
def test_sigterm_ends_the_sweep_parent_killed(tmp_path, tiny_prepared, tracking_uri):
    code, stderr = _start_and_terminate(tmp_path, ["-m", "seed=0,1", "trainer.max_epochs=1000", "data.module.batch_size=4"], running_runs=2)
    assert code == 128 + signal.SIGTERM, stderr[-3000:]
    assert runs_by_status(tracking_uri) == {"KILLED": 2}  # the parent and the job it stopped; seed=1 never started


@pytest.mark.slow  # a subprocess sweep: ~30-80 s on 2 shared cores
def test_prepare_writes_double_mnist(tmp_path, tracking_uri):
    from conftest import real_data_root

    if real_data_root() is None:
        pytest.skip("needs MNIST under ROBEX_DATA")
    result = run_cli("robex.prepare", "datasets=[double_mnist]", "double_mnist.num_train=20", "double_mnist.num_val=10",
                     "double_mnist.num_test=10", cwd=tmp_path,
                     env_extra={"MLFLOW_TRACKING_URI": tracking_uri, "ROBEX_DATA": str(real_data_root())})
    assert result.returncode == 0, result.stderr[-2000:]
    assert {p.name for p in (tmp_path / "outputs" / "data" / "double_mnist").iterdir()} >= {"train.pt", "val.pt", "test.pt"}
    client, (run,) = _runs(tracking_uri, "robex-prepare")
    assert run.info.status == "FINISHED" and run.data.metrics["double_mnist_test_mask_pixels_mean"] > 0
