"""The explain stage end to end on a few synthetic images, tiny models and a tiny ImageNet tree."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from robex.explain.data import first_indices_per_class
from robex.models.cifar_cnn import CifarCNN
from robex.models.imagenet_zoo import LAST_CONV_LAYER, ImageNetClassifier, hub_cache_weights_path
from robex.models.io import save_model
from robex.models.resnet import ResNet18Cifar
from robex.utils.io import atomic_save

REPO = Path(__file__).resolve().parents[1]


def compose_stage(root: Path, *overrides: str):
    """The stage's config as Hydra composes it (in-process, to share one interpreter and MLflow DB)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from robex.utils.hydra import CONFIG_PATH

    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3", job_name="explain"):
        cfg = compose("explain", overrides=[f"paths.root_dir={root}", "progress=false", *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def run_cli(root: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db"}
    command = [sys.executable, "-m", "robex.explain", f"paths.root_dir={root}", f"hydra.run.dir={root}/hydra", *overrides]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """One MLflow database for the module: creating its tables is the slowest part of a run."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI")
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


def runs_of(uri: str) -> pd.DataFrame:
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=["robex-explain"])


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    generator = torch.Generator().manual_seed(0)
    for split, per_class in (("train", 4), ("test", 2)):
        labels = torch.arange(10).repeat(per_class)
        images = torch.randint(0, 256, (len(labels), 3, 32, 32), generator=generator, dtype=torch.uint8)
        atomic_save({"images": images, "labels": labels, "classes": [str(i) for i in range(10)]}, root / "outputs/data/cifar10" / f"{split}.pt")
    torch.manual_seed(0)
    cnn_config = {"_target_": "robex.models.cifar_cnn.CifarCNN", "widths": [4, 8, 8], "dropouts": [0.0, 0.0, 0.0]}
    save_model(CifarCNN(widths=(4, 8, 8), dropouts=(0.0, 0.0, 0.0)), root / "outputs/train/cifar_cnn/model.pt", cnn_config)
    resnet_config = {"_target_": "robex.models.resnet.ResNet18Cifar", "base_width": 4, "blocks": [1, 1, 1, 1]}
    save_model(ResNet18Cifar(base_width=4, blocks=(1, 1, 1, 1)), root / "outputs/train/resnet18_cifar/model.pt", resnet_config)
    return root


def test_stage_writes_tables_figures_and_logs_to_mlflow(cifar_root, tracking):
    from robex.stages.explain import run

    cfg = compose_stage(
        cifar_root, "explain=quick", "explain.use_backbones=[cifar_cnn,resnet18_cifar]", "explain.targets_table.backbone=resnet18_cifar",
        "explain.data.images_per_class=1", "explain.data.target_images_per_class=2",
        "explain.lots.iterations=4", "explain.metrics.steps=4", "batch_size=8", "explain.smoothgrad.samples=1",
    )
    run(cfg)
    out = cifar_root / "outputs/explain"
    table_2 = pd.read_csv(out / "tables/table_5_2_methods.csv")
    assert len(table_2) == 2 * 8 and set(table_2["Model"]) == {"cifar_cnn", "resnet18_cifar"}
    assert table_2["Avg Drop ↓"].between(0, 100).all() and table_2["Coherency ↑"].between(0, 100).all()
    assert table_2["Insertion ↑"].between(0, 100).all() and table_2["Deletion ↓"].between(0, 100).all()
    table_1 = pd.read_csv(out / "tables/table_5_1_lots_targets.csv")
    assert list(table_1["Target"]) == ["Zero F_t", "Class F_t", "Mean F_t"]
    table_3 = pd.read_csv(out / "tables/table_5_3_ms_per_image.csv")
    assert (table_3[["cifar_cnn", "resnet18_cifar"]] > 0).all().all()
    assert (out / "tables/table_5_2_methods.md").read_text().startswith("| Model")
    per_image = pd.read_csv(out / "tables/per_image.csv")
    assert len(per_image) == 10 * (2 * 8 + 2)
    for name in ("methods_cifar_cnn", "lots_blur_sizes_resnet18_cifar", "lots_procedure_cifar_cnn", "lots_targets_resnet18_cifar"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 10
    assert 0 <= metrics["methods"]["cifar_cnn"]["lots"]["lots_mean_steps"] <= 4
    runs = runs_of(tracking)
    assert list(runs["status"]) == ["FINISHED"]
    assert "metrics.cifar_cnn/grad_cam/coherency" in runs.columns
    assert not (cifar_root / "outputs/explain.tmp").exists()


def test_missing_model_is_one_clear_error_before_any_run(cifar_root, tmp_path):
    result = run_cli(tmp_path, "explain=quick", f"paths.prepared_dir={cifar_root}/outputs/data")
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("robex: error: model file") and "cifar_cnn/model.pt" in message and "robex.train" in message
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_imagenet_path_on_a_tiny_image_folder_with_random_weights(tmp_path, tracking):
    from PIL import Image

    from robex.stages.explain import run

    generator = torch.Generator().manual_seed(0)
    for split, count in (("val", 2), ("train", 2)):
        for wnid in ("n01440764", "n01443537", "n01484850"):
            folder = tmp_path / "imagenet" / split / wnid
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = torch.randint(0, 256, (72, 80, 3), generator=generator, dtype=torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f"{wnid}_{index}.JPEG")
    cfg = compose_stage(
        tmp_path, "explain=imagenet", f"explain.data.root={tmp_path}/imagenet", "explain.use_backbones=[alexnet]",
        "explain.backbones.alexnet.model.net.weights=null", "explain.backbones.alexnet.model.net.num_classes=3",
        "explain.data.image_size=64", "explain.data.resize=64",
        "explain.targets_table.backbone=alexnet", "explain.targets_table.targets=[zero,mean]",
        "explain.lots.iterations=2", "explain.lots.blur_size=9", "explain.metrics.steps=4", "explain.smoothgrad.samples=1",
        "explain.figures.blur_sizes=[1,9]",
    )
    run(cfg)
    table_2 = pd.read_csv(tmp_path / "outputs/explain/tables/table_5_2_methods.csv")
    assert len(table_2) == 8 and set(table_2["Model"]) == {"alexnet"}
    assert json.loads((tmp_path / "outputs/explain/metrics.json").read_text())["images"] == 3


@pytest.mark.parametrize("arch", sorted(LAST_CONV_LAYER))
def test_imagenet_zoo_builds_offline_and_names_its_cam_layer(arch):
    model = ImageNetClassifier(arch, weights=None).eval()
    assert LAST_CONV_LAYER[arch] in dict(model.named_modules())
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 1000)
    assert hub_cache_weights_path(arch).name.startswith(arch.split("_")[0])
    with pytest.raises(FileNotFoundError, match="downloads are impossible"):
        ImageNetClassifier(arch, weights="/nonexistent/weights.pth")


def test_first_indices_per_class():
    labels = torch.tensor([2, 0, 2, 1, 0, 2, 1])
    assert first_indices_per_class(labels, 1).tolist() == [0, 1, 3]
    assert first_indices_per_class(labels, 2).tolist() == [0, 1, 2, 3, 4, 6]


def test_schema_rejects_unknown_keys_wrong_types_and_bad_values(tmp_path):
    from hydra.errors import ConfigCompositionException

    from robex.schemas import check
    from robex.utils.errors import RobexError

    for override in ("explain.lots.itrations=3", "explain.lots.iterations=many", "batch_sise=3"):
        with pytest.raises(ConfigCompositionException):
            compose_stage(tmp_path, "explain=quick", override)
    for override, message in (("explain.lots.step_rule=fast", "step_rule"), ("explain.lots.target_class=true_class", "target_class"),
                              ("explain.methods=[score_cam]", "score_cam"), ("explain.lots.blur_size=4", "odd")):
        with pytest.raises(RobexError, match=message):
            check(compose_stage(tmp_path, "explain=quick", override).explain, "explain.")
    quick = compose_stage(tmp_path, "explain=quick").explain
    assert quick.lots.iterations == 500 and quick.lots.step_rule == "thesis" and quick.lots.target_class == "label"
    assert "${" not in (REPO / "conf/explain/quick.yaml").read_text()  # a DVC params file: no interpolation


def test_figures_show_several_classes_unless_told_which_images():
    from robex.explain.study import figure_indices

    labels = torch.arange(10).repeat_interleave(20)  # grouped by class, as the first-N-per-class subsets are
    assert figure_indices(labels, []) == [0, 20, 40, 60, 80, 100]
    assert figure_indices(labels, [3, 3, 500]) == [3, 199]
