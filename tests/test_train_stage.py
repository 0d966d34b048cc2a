"""The train and prepare stages as a user runs them: subprocesses with an isolated MLflow store."""

import json

import mlflow
import pytest
import torch

from conftest import run_cli, runs_by_status

TINY = ["trainer.max_epochs=1", "data.module.batch_size=16", "trainer.log_every_n_steps=1"]


def test_single_run_writes_model_and_logs_to_mlflow(tmp_path, tiny_prepared, tracking_uri):
    result = run_cli("robex.train", *TINY, "name=dm", cwd=tmp_path, env_extra={"MLFLOW_TRACKING_URI": tracking_uri})
    assert result.returncode == 0, result.stderr[-2000:]
    out = tmp_path / "outputs" / "train" / "dm"
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["test/exact_set_acc"] <= 1.0 and metrics["parameters"] == 3818
    assert (out / "checkpoints" / "best.ckpt").is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("robex-train")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["defense.name"] == "none" and run.data.params["model.net.channels"] == "[8, 16]"
    assert "git_commit" in run.data.tags
    history = client.get_metric_history(run.info.run_id, "val/exact_set_acc")
    assert len(history) == 1 and history[0].step == 0
    assert any(a.path == "model" for a in client.list_artifacts(run.info.run_id))


def test_resume_from_last_checkpoint(tmp_path, tiny_prepared, tracking_uri):
    env = {"MLFLOW_TRACKING_URI": tracking_uri}
    assert run_cli("robex.train", *TINY, "name=dm", cwd=tmp_path, env_extra=env).returncode == 0
    last = tmp_path / "outputs" / "train" / "dm" / "checkpoints" / "last.ckpt"
    steps_before = torch.load(last, weights_only=False)["global_step"]
    result = run_cli("robex.train", "trainer.max_epochs=2", "data.module.batch_size=16", "name=dm", f"resume={last}", cwd=tmp_path, env_extra=env)
    assert result.returncode == 0, result.stderr[-2000:]
    # one more epoch over the same 64 samples (4 batches of 16), continued from the checkpoint
    assert torch.load(last, weights_only=False)["global_step"] == steps_before + 4
    assert "Restoring states from the checkpoint" in result.stdout + result.stderr


def test_multirun_leaves_one_finished_run_per_job(tmp_path, tiny_prepared, tracking_uri):
    result = run_cli("robex.train", "-m", "defense=none,l0", *TINY, cwd=tmp_path, env_extra={"MLFLOW_TRACKING_URI": tracking_uri})
    assert result.returncode == 0, result.stderr[-2000:]
    assert runs_by_status(tracking_uri) == {"FINISHED": 3}  # parent + 2 jobs
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("robex-train").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("robex.sweep_parent") == "true"]
    jobs = [r for r in runs if r is not parent]
    assert {r.data.params["defense.name"] for r in jobs} == {"none", "l0"}
    assert {r.data.tags["mlflow.parentRunId"] for r in jobs} == {parent.info.run_id}
    assert {r.data.tags["sweep_id"] for r in jobs} == {parent.data.tags["sweep_id"]}
    assert {r.info.run_name for r in jobs} == {"defense=none", "defense=l0"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["defense=pgd", "defense.obj.eps=-0.5"], "defense.eps=-0.5 is out of range"),
        (["defense=pgd", "defense.obj.eps=abc"], "defense.eps='abc' is invalid"),
        (["trainer.max_epochs=-3"], "trainer.max_epochs=-3 must be >= 0"),
        (["resume=/nonexistent/last.ckpt"], "resume checkpoint '/nonexistent/last.ckpt' does not exist"),
    ],
)
def test_bad_training_input_gives_one_clear_sentence(tmp_path, tiny_prepared, tracking_uri, overrides, message, monkeypatch):
    """In-process (composing the config as Hydra does) to keep the suite fast; the exit path is
    covered by the subprocess tests around it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from robex.stages.train import train
    from robex.utils.errors import RobexError
    from robex.utils.hydra import CONFIG_PATH

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    with initialize_config_dir(CONFIG_PATH, version_base="1.3", job_name="train"):
        cfg = compose("train", overrides=[*TINY, *overrides, f"paths.root_dir={tmp_path}"], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with pytest.raises(RobexError) as error:
            train(cfg)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert "RUNNING" not in runs_by_status(tracking_uri)


def test_corrupt_resume_checkpoint_exits_nonzero_with_one_line(tmp_path, tiny_prepared, tracking_uri):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"garbage")
    result = run_cli("robex.train", *TINY, f"resume={bad}", cwd=tmp_path, env_extra={"MLFLOW_TRACKING_URI": tracking_uri})
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("robex: error:")]
    assert errors == [f"robex: error: resume checkpoint '{bad}' is corrupt (UnpicklingError); delete it or pass another .ckpt"]


def test_unknown_group_option_lists_the_choices(tmp_path, tracking_uri):
    result = run_cli("robex.train", "defense=fgsm", cwd=tmp_path, env_extra={"MLFLOW_TRACKING_URI": tracking_uri})
    assert result.returncode != 0
    assert "Could not find 'defense/fgsm'" in result.stderr and "pgd" in result.stderr


def test_missing_prepared_data_names_the_path_and_fails_the_run(tmp_path, tracking_uri):
    result = run_cli("robex.train", *TINY, cwd=tmp_path, env_extra={"MLFLOW_TRACKING_URI": tracking_uri})
    assert result.returncode == 1
    assert "double_mnist/train.pt' does not exist; run `python -m robex.prepare` first" in result.stderr
    assert runs_by_status(tracking_uri) == {"FAILED": 1}


def test_prepare_with_missing_data_root(tmp_path, tracking_uri):
    result = run_cli("robex.prepare", cwd=tmp_path, env_extra={"MLFLOW_TRACKING_URI": tracking_uri, "ROBEX_DATA": str(tmp_path / "nowhere")})
    assert result.returncode == 1
    assert f"data root '{tmp_path / 'nowhere'}' does not exist" in result.stderr


def _sqlite_run_statuses(path) -> list[str]:
    import sqlite3

    if not path.exists():
        return []
    try:
        with sqlite3.connect(path, timeout=1) as connection:
            return [row[0] for row in connection.execute("select status from runs")]
    except sqlite3.Error:
        return []


def test_sigterm_ends_the_mlflow_run_killed_not_running(tmp_path, tiny_prepared, tracking_uri):
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": tracking_uri}
    process = subprocess.Popen(
        [sys.executable, "-m", "robex.train", "trainer.max_epochs=1000", "data.module.batch_size=4", "name=long"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            # read the store with plain sqlite: an MLflow client here would race the child's schema set-up
            if _sqlite_run_statuses(tmp_path / "mlflow.db") == ["RUNNING"]:
                time.sleep(3)  # let training start
                break
            time.sleep(0.5)
        assert process.poll() is None, process.communicate()[1][-2000:]
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0
    statuses = runs_by_status(tracking_uri)
    assert "RUNNING" not in statuses and sum(statuses.values()) == 1
    assert set(statuses) <= {"KILLED", "FAILED"}
    assert not (tmp_path / "outputs" / "train" / "long" / "model.pt").exists()


def test_joblib_launcher_runs_jobs_in_parallel_processes_grouped_in_mlflow(tmp_path, tiny_prepared, tracking_uri):
    result = run_cli("robex.train", "-m", "hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2", "seed=0,1", *TINY,
                     cwd=tmp_path, env_extra={"MLFLOW_TRACKING_URI": tracking_uri})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Joblib.Parallel" in result.stdout + result.stderr
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("robex-train").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("robex.sweep_parent") == "true"]
    jobs = [r for r in runs if r is not parent]
    assert sorted(r.info.run_name for r in jobs) == ["seed=0", "seed=1"]
    assert all(r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in jobs)
    assert parent.info.status == "FINISHED"
