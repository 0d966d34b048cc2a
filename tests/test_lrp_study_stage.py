"""End-to-end `python -m robex.lrp_study` on a few tiny images (no outputs/ files needed)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch

from robex.models.io import save_model
from robex.utils.io import atomic_save

REPO = Path(__file__).resolve().parents[1]


def _inputs(tmp_path: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    config = {"_target_": "robex.models.cifar_cnn.CifarCNN", "widths": [4, 8, 8], "dropouts": [0.2, 0.3, 0.4], "num_classes": 10}
    from robex.models.io import build_model

    model = build_model(config).eval()
    for module in model.modules():  # trained-looking BN statistics, so the two BN treatments differ
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.bias.data.uniform_(0.0, 0.3)  # positive shifts keep units alive
    images = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        labels = model(images.float() / 255).argmax(1)
    labels[:2] = (labels[:2] + 1) % 10  # two misclassified images the stage must skip
    prepared = tmp_path / "cifar10"
    atomic_save({"images": images, "labels": labels}, prepared / "test.pt")
    save_model(model, tmp_path / "model.pt", config)
    return prepared, tmp_path / "model.pt"


def _run(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db", ROBEX_ROOT=str(tmp_path))
    return subprocess.run([sys.executable, "-m", "robex.lrp_study", *overrides], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_stage_end_to_end_and_bad_input(tmp_path):
    prepared, model_path = _inputs(tmp_path)
    out = tmp_path / "study"
    common = [f"prepared_dir={prepared}", f"model_path={model_path}", f"out_dir={out}", "lrp=quick", "lrp.num_images=2", "lrp.rule_names=[lrp0,epsilon_1,alpha_beta_1]",
              "lrp.attack.maxiter=15", "lrp.attack.max_bisections=1", "lrp.attack.loss_on=logits", "lrp.attack.distance=mse", "lrp.relevance_batch_size=2", "lrp.heatmap_examples=1"]
    result = _run(tmp_path, *common)
    assert result.returncode == 0, result.stderr[-3000:]

    attack = torch.load(out / "attack" / "adversarials.pt", weights_only=False)
    assert len(attack["image_indices"]) == 2 and not set(attack["image_indices"].tolist()) & {0, 1}
    assert len(attack["pair_target"]) == 18 and (attack["pair_target"] != attack["labels"][attack["pair_original"]]).all()
    tables = out / "statistics" / "tables"
    table3 = pd.read_csv(tables / "table3_adversarial_quantiles.csv")
    assert list(table3["quantile"]) == [0.001, 0.005, 0.01, 0.1, 0.5, 0.9, 0.99, 0.995, 0.999]
    assert {"lrp0 [layer]", "lrp0 [merge]", "lrp0 (paper)", "alpha_beta_1 [layer]", "alpha_beta_1 (paper)"} <= set(table3.columns)
    assert table3["lrp0 [layer]"].between(-1, 1).all() and table3["lrp0 [layer]"].is_monotonic_increasing
    table4 = pd.read_csv(tables / "table4_original_quantiles.csv")
    # alpha = 1 after folding BN is z+: no negative score; the paper's BN layer rule gives some
    assert table4["alpha_beta_1 [merge]"].min() >= 0 and table4["alpha_beta_1 [layer]"].min() < 0
    shares = pd.read_csv(tables / "table5_ranking_shares.csv")
    assert len(shares) == 2 * 3 * 6 and shares["share"].between(0, 1).all()
    assert (tables / "table4_original_quantiles.md").read_text().splitlines()[0].split("|")[1].strip() == "quantile"
    attack_table = pd.read_csv(tables / "attack_summary.csv").set_index("quantity")
    assert attack_table.loc["target probability q0.01", "paper"] == 0.9337
    figures = {p.name for p in (out / "statistics" / "figures").glob("*.png")}
    # the default treatment (layer) keeps the stable names the report links; merge gets a suffix
    assert {"heatmaps_example_0.png", "shifts_alpha_beta_1.png", "relevance_distributions.png", "shifts_alpha_beta_1_merge.png",
            "heatmaps_example_0_merge.png", "target_probability.png"} <= figures
    metrics = json.loads((out / "relevance" / "metrics.json").read_text())
    assert metrics["relevance/maps"] == 2 * 3 * (2 + int(attack["pair_success"].sum()))

    bad = _run(tmp_path, *common, "lrp.rule_names=[nope]", "step=statistics")
    assert bad.returncode == 1
    assert "lrp.rule_names lists 'nope'" in bad.stderr and "Traceback" not in bad.stderr
