"""The reference pipeline (reference/dvc.yaml): true deps, every committed model materialised, every
study in outputs/reference/ with its MLflow store there, and the report config that reads it."""

from __future__ import annotations

import importlib.util
import json
import shlex
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PIPELINE = yaml.safe_load((REPO / "reference" / "dvc.yaml").read_text())["stages"]
MANIFEST = json.loads((REPO / "weights" / "manifest.json").read_text())


def _outs(stage: dict) -> list[str]:
    return [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", []) + stage.get("metrics", [])]


def test_every_stage_runs_from_the_root_into_outputs_reference():
    for name, stage in PIPELINE.items():
        body = stage.get("do", stage)
        assert body["wdir"] == "..", name  # paths below are relative to the repository root
        outs = _outs(body)
        assert outs and all(o.startswith("outputs/reference/") or o == "docs/reproduction" for o in outs), (name, outs)
        words = shlex.split(body["cmd"])
        assert words[:2] == ["python", "-m"], name
        if words[2].startswith("robex.") and words[2] not in ("robex.models.io", "robex.report"):
            assert "paths.output_dir=outputs/reference" in words, name
            if words[2] != "robex.prepare":
                assert "tracking.uri=sqlite:///outputs/reference/mlflow.db" in words, name


def test_weights_stage_materialises_every_committed_model():
    """A manifest entry added without its out here (or an out without its entry) fails: the studies
    would otherwise read a stale or missing model.pt."""
    from robex.models.io import REFERENCE_STAGE_NAMES

    outs = _outs(PIPELINE["ref_weights"])
    expected = {f"outputs/reference/train/{REFERENCE_STAGE_NAMES.get(n, n)}/{f}" for n in MANIFEST
                for f in ("model.pt", "metrics.json", "reference.json")}
    assert set(outs) == expected
    assert "weights" in PIPELINE["ref_weights"]["deps"]
    assert PIPELINE["ref_train"]["do"]["frozen"] is True and PIPELINE["ref_train_pgd"]["frozen"] is True  # training from scratch is opt-in


def test_reference_pipeline_deps_cover_each_stages_import_closure():
    """scripts/dvc_deps.py (UX's) run on reference/dvc.yaml: a stage importing a module no dep covers fails."""
    spec = importlib.util.spec_from_file_location("dvc_deps_ref", REPO / "scripts" / "dvc_deps.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["dvc_deps_ref"] = module
    spec.loader.exec_module(module)
    stages = module.stage_deps(dvcfile="reference/dvc.yaml")
    assert {s.name for s in stages} >= {"ref_weights", "ref_lrp_study", "ref_attack", "ref_explain", "ref_verify", "ref_report"}
    assert {s.name: module.missing(s) for s in stages if module.missing(s)} == {}


def test_reference_report_config_reads_outputs_reference_and_writes_docs_reproduction():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from robex.schemas import register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3", job_name="report"):
        cfg = compose("report", overrides=["experiment=reference_report"])
    sections = OmegaConf.to_container(cfg.sections, resolve=True)
    assert {Path(spec["dir"]).parts[:2] for spec in sections.values()} == {("outputs", "reference")}
    assert cfg.reproduction.output_dir == "docs/reproduction" and cfg.reference_report is None
    assert cfg.tracking.uri == "sqlite:///outputs/reference/mlflow.db"
    report_deps = set(PIPELINE["ref_report"]["deps"])
    lrp_dir = sections["lrp_study"]["dir"]
    assert f"{lrp_dir}/statistics/tables" in report_deps  # the report stage depends on the LRP study it reads
    assert any(d.startswith(sections["attack"]["dir"]) for d in report_deps)
    for work, figures in OmegaConf.to_container(cfg.reproduction.figures).items():
        assert work in {"000", "001", "002", "003"}
        for figure in figures:  # a section key, an output folder of the reference pipeline, or a committed folder the stage depends on
            where = figure["glob"].split(":")[0]
            assert (where in sections or where.removeprefix("./") in report_deps
                    or any(o.startswith(where + "/") for stage in PIPELINE.values() for o in _outs(stage.get("do", stage)))), where


def test_experiment_reference_is_the_recorded_overrides_for_every_stage():
    from hydra import compose, initialize_config_dir

    from robex.schemas import register_schemas

    register_schemas()
    for stage in ("prepare", "train", "attack", "lrp_study", "explain", "verify", "report"):
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3", job_name=stage):
            preset = compose(stage, overrides=["experiment=reference"])
            spelled = compose(stage, overrides=["paths.output_dir=outputs/reference", "tracking.uri=sqlite:///outputs/reference/mlflow.db"])
        assert preset.paths == spelled.paths and preset.tracking == spelled.tracking, stage
        assert preset.paths.train_dir == "outputs/reference/train", stage


def test_every_reference_model_has_training_curves_beside_its_weights_and_the_report_finds_them():
    """The report's training-curve figures read the committed weights' folders, not training folders that a
    fresh clone lacks: each manifest model has history.csv and training_curves.png, and every `./weights:`
    figure glob of the reference report matches a committed file (a renamed folder or a typo in a glob
    would silently drop the figure)."""
    for name in MANIFEST:
        for file in ("history.csv", "training_curves.png"):
            assert (REPO / "weights" / name / file).is_file(), (name, file)
    figures = yaml.safe_load((REPO / "conf" / "experiment" / "reference_report.yaml").read_text())["reproduction"]["figures"]
    globs = [spec["glob"] for specs in figures.values() for spec in specs if spec["glob"].startswith("./weights:")]
    assert len(globs) >= 5
    for spec in globs:
        folder, _, pattern = spec.partition(":")
        assert list((REPO / folder).glob(pattern)), spec
