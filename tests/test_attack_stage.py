"""End-to-end `python -m robex.attack` on a tiny C2F model and synthetic CIFAR-shaped data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from robex.data.hierarchy import CIFAR10_CLASSES, cifar10_hierarchy
from robex.models.io import build_model, save_model
from robex.utils.io import atomic_save

MODEL_CONFIG = {
    "_target_": "robex.models.c2f.C2FClassifier",
    "hierarchy": {"_target_": "robex.data.hierarchy.cifar10_hierarchy"},
    "backbone": {
        "_target_": "robex.models.vgg.SmallVGG", "_partial_": True,
        "widths": [4, 4, 8, 8, 8], "convs_per_stage": [1, 1, 1, 1, 1], "hidden": 16, "dropout": 0.0,
    },
}


def _synthetic_cifar(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (count,), generator=generator)
    colours = torch.rand(10, 3, generator=torch.Generator().manual_seed(99)) * 0.6
    images = 0.2 + colours[labels][:, :, None, None] + 0.08 * torch.randn(count, 3, 32, 32, generator=generator)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8), labels


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("attack_stage")
    torch.manual_seed(0)
    model = build_model(MODEL_CONFIG)
    images, labels = _synthetic_cifar(600, seed=1)
    x = images.float() / 255
    hierarchy = cifar10_hierarchy()
    coarse, local = hierarchy.coarse_of(labels), hierarchy.local_index(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for step in range(60):
        rows = torch.arange(step * 100, step * 100 + 100) % len(x)
        loss = nn.functional.cross_entropy(model.coarse_logits(x[rows]), coarse[rows])
        for c in range(2):
            keep = rows[coarse[rows] == c]
            loss = loss + nn.functional.cross_entropy(model.fine_logits(x[keep], c), local[keep])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    save_model(model, root / "train" / "c2f_cifar" / "model.pt", MODEL_CONFIG)
    test_images, test_labels = _synthetic_cifar(64, seed=2)
    atomic_save({"images": test_images, "labels": test_labels, "classes": list(CIFAR10_CLASSES)}, root / "data" / "cifar10" / "test.pt")
    return root


def _run_stage(root: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    command = [
        sys.executable, "-m", "robex.attack",
        f"paths.output_dir={root / 'outputs'}", f"paths.train_dir={root / 'train'}", f"paths.prepared_dir={root / 'data'}",
        "num_images=6", "batch_size=4", "figure_examples=1", *overrides,
    ]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=root)


def _runs(root: Path) -> pd.DataFrame:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=["robex-attack"])


def _run_in_process(root: Path, monkeypatch, *overrides: str) -> None:
    """The stage's task function on a composed config (no subprocess: imports are paid once)."""
    from hydra import compose, initialize_config_dir

    from robex.stages.attack import run
    from robex.utils.hydra import CONFIG_PATH, run_stage

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        cfg = compose("attack", overrides=[
            f"paths.output_dir={root / 'outputs'}", f"paths.train_dir={root / 'train'}", f"paths.prepared_dir={root / 'data'}",
            "num_images=6", "batch_size=4", "figure_examples=1", "tracking.experiment=robex-attack", *overrides,
        ])
    return run_stage(run, cfg)


def test_stage_writes_both_tables_and_figures(workspace, monkeypatch):
    metrics = _run_in_process(
        workspace, monkeypatch, "attack.lrp_eps=[10,40]", "attack.lrp.steps=3", "attack.pgd.steps=3", "attack.deepfool.steps=3",
    )
    out = workspace / "outputs" / "attack" / "c2f_cifar" / "c2f_tables"
    table1 = pd.read_csv(out / "table1_coarse.csv")
    table2 = pd.read_csv(out / "table2_fine.csv")
    lrpc = ["LRPC eps=10 [paper]", "LRPC eps=10 (paper_literal)", "LRPC eps=40 [paper]", "LRPC eps=40 (paper_literal)",
            "LRPC eps=10 (working)", "LRPC eps=40 (working)"]
    assert list(table1.columns) == ["Algorithm", *lrpc, "DFC [paper]", "DFC", "PGDC [paper]", "PGDC"]
    assert list(table2.columns)[-2:] == ["PGDF [paper]", "PGDF"] and "LRPF eps=40 (working)" in table2.columns
    rows = table1.set_index("Algorithm")
    assert {"rho_adv^2", "rho_adv^1", "rho_adv^inf", "Fooling(%)", "perturbation share on top-10% relevance"} <= set(rows.index)
    assert rows.loc["Fooling(%)", "LRPC eps=10 [paper]"] == 87.1, "the paper's column comes from paper_reference.yaml"
    # rho_inf = ||eta||_inf / ||x||_inf <= eps / ||x||_inf; with ||x||_inf >= 0.5 here it is at most 2 eps/255
    assert rows.loc["rho_adv^inf", "LRPC eps=10 (working)"] <= 10 / 255 / 0.5
    assert 0 <= rows.loc["perturbation share on top-10% relevance", "PGDC"] <= 1
    assert (out / "table1_coarse.md").read_text().startswith("| Algorithm")
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert figures == ["fig1_coarse_example0.png", "fig2_fine_example0.png"]
    assert (out / "metrics.json").is_file() and (out / "failures.csv").is_file()
    assert metrics["LRPC eps=10 (working).fooling_pct"] == rows.loc["Fooling(%)", "LRPC eps=10 (working)"]
    runs = _runs(workspace)
    finished = runs[runs["status"] == "FINISHED"]
    assert len(finished) >= 1
    assert "metrics.LRPC_eps10_working.fooling_pct" in finished.columns
    assert finished.iloc[0]["params.attack.name"] == "c2f_tables"


def test_single_attack_run_and_bad_input(workspace, monkeypatch, capsys):
    _run_in_process(workspace, monkeypatch, "attack=lrpf", "attack.steps=2", "attack.eps=20")
    out = workspace / "outputs" / "attack" / "c2f_cifar" / "lrpf_eps20"
    table = pd.read_csv(out / "table2_fine.csv")
    assert list(table.columns) == ["Algorithm", "LRPF eps=20 [paper]", "LRPF eps=20"]
    assert not (out / "table1_coarse.csv").exists()
    capsys.readouterr()
    with pytest.raises(SystemExit) as missing:
        _run_in_process(workspace, monkeypatch, f"targets.c2f_cifar.model_path={workspace / 'nope.pt'}", "attack=dfc")
    assert missing.value.code == 1
    message = capsys.readouterr().err
    assert "nope.pt" in message and message.count("\n") == 1
    with pytest.raises(SystemExit):
        _run_in_process(workspace, monkeypatch, "target=mnist", "attack=dfc")
    assert "target='mnist'" in capsys.readouterr().err
    assert not (_runs(workspace)["status"] == "RUNNING").any()


@pytest.mark.slow
def test_cli_sweep_runs_one_job_per_value(workspace):
    done = _run_stage(workspace, "attack=pgdc", "attack.steps=2", "attack.eps=4,8", "-m")
    assert done.returncode == 0, done.stderr[-3000:]
    for eps in (4, 8):  # each sweep job writes its own folder (label plus the swept value)
        assert list((workspace / "outputs" / "attack" / "c2f_cifar").glob(f"pgdc_eps{eps}*/table1_coarse.csv"))
    runs = _runs(workspace)
    swept = runs[runs["tags.hydra.mode"] == "MULTIRUN"]
    assert len(swept) == 2 and (swept["status"] == "FINISHED").all()


def test_schema_rejects_unknown_keys_and_bad_lrp_options():
    """conf/attack/*.yaml are checked by robex.schemas.attack: a typo fails at composition, a bad
    value names its key before any model is loaded."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    from robex.schemas import check, register_schemas
    from robex.utils.errors import RobexError
    from robex.utils.hydra import CONFIG_PATH

    register_schemas()
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        with pytest.raises(ConfigCompositionException):
            compose("attack", overrides=["attack=lrpc", "attack.relevance_start=logit"])
        with pytest.raises(ConfigCompositionException):
            compose("attack", overrides=["attack.lrp_configs.working.lr=fast"])
        cfg = compose("attack", overrides=["attack=lrpc", "attack.zplus_bias=sometimes"])
        with pytest.raises(RobexError, match="zplus_bias"):
            check(cfg.attack, "attack")
        suite = compose("attack")
        assert "${" not in (Path(CONFIG_PATH) / "attack" / "c2f_tables.yaml").read_text(), "a DVC params file must be interpolation-free"
        assert set(suite.attack.lrp_configs) == {"paper_literal", "working", "working_unguarded"}
        assert suite.attack.lrp_configs.working.guard == "backtrack" and suite.attack.lrp_configs.working_unguarded.levels == ["fine"]


def test_suite_expands_every_lrp_configuration_and_keeps_shared_options():
    """Unset (null) options of a configuration must not override the shared `lrp` block."""
    from robex.attacks.evaluation import attack_label, attack_specs

    suite = {"coarse": ["lrpc", "pgdc"], "fine": [], "lrp_eps": [10, 40], "lrp": {"steps": 7, "lr": 0.5, "step_size": None},
             "lrp_configs": {"paper_literal": {"relevance_init": "onehot", "lr": 1000.0, "steps": None},
                             "working": {"relevance_init": "logit", "lr": None}},
             "pgd": {"eps": 8, "steps": 3}, "deepfool": {}}
    specs = attack_specs(suite)
    assert [attack_label(s) for s in specs] == ["LRPC eps=10 (paper_literal)", "LRPC eps=40 (paper_literal)",
                                                "LRPC eps=10 (working)", "LRPC eps=40 (working)", "PGDC"]
    assert [s["steps"] for s in specs[:4]] == [7, 7, 7, 7]
    assert [s["lr"] for s in specs[:4]] == [1000.0, 1000.0, 0.5, 0.5]
    assert all("step_size" not in s for s in specs[:4]), "null means the attack's default (eps / 10)"


def test_a_configuration_with_levels_runs_only_at_those_levels():
    from robex.attacks.evaluation import attack_label, attack_specs

    suite = {"coarse": ["lrpc"], "fine": ["lrpf"], "lrp_eps": [10], "lrp": {"steps": 7},
             "lrp_configs": {"working": {"guard": "backtrack"}, "working_unguarded": {"guard": "none", "levels": ["fine"]}},
             "pgd": {}, "deepfool": {}}
    specs = attack_specs(suite)
    assert [attack_label(s) for s in specs] == ["LRPC eps=10 (working)", "LRPF eps=10 (working)", "LRPF eps=10 (working_unguarded)"]
    assert all("levels" not in s for s in specs), "levels selects specs; it is no attack option"
    assert [s["guard"] for s in specs] == ["backtrack", "backtrack", "none"]
