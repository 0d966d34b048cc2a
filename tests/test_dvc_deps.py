"""dvc.yaml deps cover each stage's import closure (scripts/dvc_deps.py), and the closure is computed right."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dvc_deps():
    spec = importlib.util.spec_from_file_location("dvc_deps", REPO / "scripts" / "dvc_deps.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["dvc_deps"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def stages(dvc_deps):
    return {stage.name: stage for stage in dvc_deps.stage_deps()}


def test_every_stage_depends_on_every_module_it_imports(dvc_deps, stages):
    """Fails when a stage imports (lazily too) or composes a file that no dep covers: DVC would then
    keep stale outputs after that file changes. Fix with `python scripts/dvc_deps.py --write`."""
    problems = {name: dvc_deps.missing(stage) for name, stage in stages.items()}
    assert {name: files for name, files in problems.items() if files} == {}


def test_closure_follows_lazy_imports_inside_functions(dvc_deps):
    """stages/report.py imports the report library inside main(): a top-level-only scan misses it."""
    closure = dvc_deps.import_closure(["robex.stages.report"])
    assert any(path.startswith("src/robex/report/") and path != "src/robex/report/__init__.py" for path in closure)
    assert "src/robex/utils/io.py" in closure and "src/robex/__init__.py" in closure


def test_closure_includes_parent_packages_and_dynamic_schema_imports(dvc_deps):
    closure = dvc_deps.import_closure(["robex.utils.hydra"])
    # register_schemas() imports f"robex.schemas.{name}": every schema module counts
    schemas = {str(p.relative_to(REPO)) for p in (REPO / "src/robex/schemas").glob("*.py")}
    assert schemas <= closure
    assert "src/robex/utils/__init__.py" in closure


def test_closure_leaves_out_unrelated_and_exempt_modules(dvc_deps):
    closure = dvc_deps.import_closure(["robex.data.hierarchy"])
    assert not any(path.startswith(("src/robex/verify/", "src/robex/attacks/", "src/robex/training/")) for path in closure)
    assert not closure & dvc_deps.EXEMPT


def test_targets_in_configs_count_as_imports(dvc_deps):
    config = {"model": {"net": {"_target_": "robex.models.c2f.C2FClassifier", "backbone": {"_target_": "robex.models.vgg.SmallVGG"}}},
              "optimizer": {"_target_": "torch.optim.Adam"}}
    assert dvc_deps.target_modules(config) == {"robex.models.c2f", "robex.models.vgg"}


def test_loading_a_trained_model_depends_on_its_classes(stages):
    """The attack stage loads outputs/train/c2f_cifar/model.pt, whose saved _target_ is the C2F model."""
    assert "src/robex/models/c2f.py" in stages["attack"].code
    assert "src/robex/models/vgg.py" in stages["attack"].code


def test_train_stages_depend_on_their_composed_conf_and_defense(stages):
    pgd = stages["train_double_mnist@pgd"]
    assert "conf/defense/pgd.yaml" in pgd.conf and "conf/data/double_mnist.yaml" in pgd.conf
    assert "src/robex/training/defenses.py" in pgd.code
    assert "src/robex/data/datamodules.py" in pgd.code  # from data.module._target_


def test_compact_uses_a_directory_only_when_the_whole_package_is_imported(dvc_deps):
    every = {str(p.relative_to(REPO)) for p in (REPO / "src/robex/models").rglob("*.py")}
    assert dvc_deps.compact(every) == ["src/robex/models"]
    partial = every - {"src/robex/models/vgg.py"}
    assert "src/robex/models" not in dvc_deps.compact(partial) and "src/robex/models/c2f.py" in dvc_deps.compact(partial)


def test_parse_cmd(dvc_deps):
    assert dvc_deps.parse_cmd("python -m robex.train experiment=quick data=cifar10 name=x") == (
        "robex.train", "train", ["experiment=quick", "data=cifar10", "name=x"])


def test_write_covers_the_closure_keeps_the_rest_and_is_idempotent(dvc_deps, stages, tmp_path):
    """--write on a copy of dvc.yaml: afterwards nothing is missing, outs/params/non-code deps and comments
    are kept, and a second --write changes nothing."""
    import yaml

    copy = tmp_path / "dvc.yaml"
    copy.write_text((REPO / "dvc.yaml").read_text())
    dvc_deps.write(list(stages.values()), copy)
    assert dvc_deps.write(list(stages.values()), copy) == []
    before, after = yaml.safe_load((REPO / "dvc.yaml").read_text()), yaml.safe_load(copy.read_text())
    for name, block in before["stages"].items():
        body, new = (block.get("do", block), after["stages"][name].get("do", after["stages"][name]))
        assert {k: v for k, v in body.items() if k != "deps"} == {k: v for k, v in new.items() if k != "deps"}
        kept = [d for d in body.get("deps", []) if not dvc_deps.is_code_dep(d)]
        assert all(d in new["deps"] for d in kept)
    comments = [line.strip() for line in (REPO / "dvc.yaml").read_text().splitlines() if line.strip().startswith("#")]
    assert all(comment in copy.read_text() for comment in comments)
    for stage in stages.values():
        body = after["stages"][stage.group].get("do", after["stages"][stage.group])
        declared = [d.replace("${key}", stage.name.partition("@")[2]) for d in body["deps"] if isinstance(d, str)]
        assert [f for f in stage.code if not dvc_deps.covered(f, declared)] == []


def test_check_reports_a_dropped_dep(dvc_deps, stages):
    """The check is not vacuous: without the dep on its defense module a train stage is reported."""
    import dataclasses

    stage = stages["train_double_mnist@pgd"]
    declared = [d for d in stage.declared if not d.startswith("src/robex/training")] + ["src/robex/training/module.py"]
    assert "src/robex/training/defenses.py" in dvc_deps.missing(dataclasses.replace(stage, declared=declared))


def test_stages_of_one_pipeline_file_only_and_plain_cli_stages(dvc_deps, tmp_path):
    """Repo.index holds the stages of every dvc.yaml (REF's reference/dvc.yaml repeats stage names):
    stage_deps reads the named file only, and a stage running a plain argparse CLI (no conf/<name>.yaml)
    gets its import closure and no composed config."""
    import subprocess

    (tmp_path / "reference").mkdir()
    (tmp_path / "dvc.yaml").write_text("stages:\n  report:\n    cmd: python -m robex.report\n")
    (tmp_path / "reference" / "dvc.yaml").write_text(
        "stages:\n  report:\n    wdir: ..\n    cmd: python -m robex.models.io --train-dir outputs/train\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    (root_report,) = dvc_deps.stage_deps(tmp_path)
    assert "src/robex/stages/report.py" in root_report.code and "conf/report.yaml" in root_report.conf
    (weights,) = dvc_deps.stage_deps(tmp_path, "reference/dvc.yaml")
    assert weights.name == "report" and weights.conf == set()
    assert "src/robex/models/io.py" in weights.code and "src/robex/stages/report.py" not in weights.code
