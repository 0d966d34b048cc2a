"""Every sweepable stage gives each multirun job its own output folder (issue 14: sweep jobs
overwrote each other). The folder is the stage's own ``output_dir``/``out_dir`` plus the job's swept
values, unless the folder's value already interpolates the swept key (``${attack.label}`` carries
``attack.eps``), so a 2-job sweep leaves two complete, different folders. train: tests/test_train_stage.py."""

from __future__ import annotations

import json

import pytest
from omegaconf import open_dict

from conftest import compose_config, run_cli, runs_by_status
from robex.utils.hydra import job_output_dir, job_output_name


@pytest.fixture
def multirun(monkeypatch, tmp_path):
    """``multirun(stage, overrides, swept)`` -> the job's config, with Hydra's runtime config set as
    in job 1 of a sweep over ``swept`` (what the launcher and robex's sweep callback provide)."""
    from hydra.core.hydra_config import HydraConfig

    before = HydraConfig.instance().cfg

    def make(stage: str, overrides: list[str], swept: list[str]):
        cfg = compose_config(stage, overrides, root=tmp_path, return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.mode = "MULTIRUN"
            cfg.hydra.job.num = 1
        HydraConfig.instance().set_config(cfg)
        monkeypatch.setenv("ROBEX_SWEPT_KEYS", ",".join(swept))
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg

    yield make
    HydraConfig.instance().cfg = before


CASES = [  # stage, folder key, the job's overrides, the swept keys, keys the stage tells apart itself, the folder
    ("attack", "output_dir", ["attack=pgdc", "seed=1"], ["seed"], (), "attack/c2f_cifar/pgdc_eps8-seed=1"),
    ("attack", "output_dir", ["attack=pgdc", "attack.eps=4"], ["attack.eps"], (), "attack/c2f_cifar/pgdc_eps4"),  # label has eps
    ("attack", "output_dir", ["attack=pgdc", "attack.eps=4", "attack.steps=3"], ["attack.eps", "attack.steps"], (),
     "attack/c2f_cifar/pgdc_eps4-attack.steps=3"),
    ("attack", "output_dir", ["attack=lrpc", "target=c2f_imagenet"], ["target"], (), "attack/c2f_imagenet/lrpc_eps10"),
    ("lrp_study", "out_dir", ["lrp=quick", "seed=1"], ["seed"], (), "lrp_study/quick-seed=1"),
    ("lrp_study", "out_dir", ["lrp=paper"], ["lrp"], (), "lrp_study/paper"),
    ("verify", "output_dir", ["num_images=3"], ["num_images"], ("shard.index", "shard.count"), "verify-num_images=3"),
    ("verify", "output_dir", ["shard.index=1", "shard.count=2"], ["shard.index"], ("shard.index", "shard.count"), "verify"),
    ("report", "output_dir", ["max_table_rows=5"], ["max_table_rows"], (), "report-max_table_rows=5"),
    ("explain", "output_dir", ["explain=quick", "seed=2"], ["seed"], (), "explain-seed=2"),
]


@pytest.mark.parametrize(("stage", "key", "overrides", "swept", "apart", "expected"), CASES, ids=[f"{c[0]}:{','.join(c[2])}" for c in CASES])
def test_each_sweep_job_gets_its_own_folder(multirun, tmp_path, stage, key, overrides, swept, apart, expected):
    cfg = multirun(stage, overrides, swept)
    assert job_output_dir(cfg, key, apart=apart) == tmp_path / "outputs" / expected


def test_a_single_run_keeps_the_configured_folder(tmp_path):
    cfg = compose_config("attack", ["attack=pgdc", "seed=1"], root=tmp_path)
    assert job_output_dir(cfg) == tmp_path / "outputs" / "attack" / "c2f_cifar" / "pgdc_eps8"


def test_unknown_swept_keys_fall_back_to_the_job_number(multirun, monkeypatch):
    multirun("report", ["max_table_rows=5"], [])
    monkeypatch.delenv("ROBEX_SWEPT_KEYS")  # e.g. a sweep started without robex's Hydra callback
    assert job_output_name("outputs/report") == "outputs/report-job1"


@pytest.mark.slow  # two attack jobs in parallel subprocesses: ~40-90 s on 2 shared cores
def test_parallel_attack_sweep_leaves_two_complete_different_outputs(tmp_path):
    """A non-train stage, swept with the joblib launcher as the README documents: two folders, each
    with every table, figure and its own metrics (num_images differs), nothing left under a temp name."""
    import torch
    from test_attack_stage import MODEL_CONFIG, _synthetic_cifar  # the attack tests' tiny C2F model and data

    from robex.data.hierarchy import CIFAR10_CLASSES
    from robex.models.io import build_model, save_model
    from robex.utils.io import atomic_save

    torch.manual_seed(0)
    save_model(build_model(MODEL_CONFIG), tmp_path / "train" / "c2f_cifar" / "model.pt", MODEL_CONFIG)
    images, labels = _synthetic_cifar(64, seed=2)
    atomic_save({"images": images, "labels": labels, "classes": list(CIFAR10_CLASSES)}, tmp_path / "data" / "cifar10" / "test.pt")
    result = run_cli(
        "robex.attack", "-m", "hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2", "attack=pgdc", "attack.steps=2",
        "num_images=1,2", "batch_size=2", "figure_examples=1", f"paths.output_dir={tmp_path / 'outputs'}",
        f"paths.train_dir={tmp_path / 'train'}", f"paths.prepared_dir={tmp_path / 'data'}", cwd=tmp_path,
        env_extra={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    parent = tmp_path / "outputs" / "attack" / "c2f_cifar"
    assert sorted(p.name for p in parent.iterdir()) == ["pgdc_eps8-num_images=1", "pgdc_eps8-num_images=2"]  # no temp names
    for count in (1, 2):
        out = parent / f"pgdc_eps8-num_images={count}"
        assert {"table1_coarse.csv", "table1_coarse.md", "failures.csv", "metrics.json"} <= {p.name for p in out.iterdir()}
        assert list((out / "figures").glob("*.png"))
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["attacked_images"] == count, metrics


@pytest.mark.slow  # a 2-job report sweep in a subprocess: ~20-40 s on 2 shared cores
def test_report_sweep_leaves_one_complete_report_per_job(tmp_path):
    """The report stage with no stage outputs yet (every section "not run"), swept over max_table_rows:
    two report folders, each with its README.md and its own MLflow run, none under a temp name."""
    outputs = tmp_path / "stage_outputs"  # not ./outputs, where Hydra keeps its sweep folder
    result = run_cli("robex.report", "-m", "max_table_rows=10,20", f"paths.output_dir={outputs}", f"paths.train_dir={outputs / 'train'}",
                     cwd=tmp_path, env_extra={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in outputs.iterdir()) == ["report-max_table_rows=10", "report-max_table_rows=20"]
    readmes = {p.parent.name: p.read_text() for p in outputs.glob("report-*/README.md")}
    assert len(readmes) == 2 and all("not run" in text for text in readmes.values())
    assert runs_by_status(f"sqlite:///{tmp_path / 'mlflow.db'}") == {"FINISHED": 3}  # the sweep parent and two jobs
