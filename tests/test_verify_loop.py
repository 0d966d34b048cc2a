"""The search loops end-to-end on one tiny image, and the Hydra stage on tiny synthetic inputs."""

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from conftest import run_cli, runs_by_status
from robex.models.double_mnist_cnn import DoubleMnistCNN
from robex.verify.oracle import OracleSettings, Verdict
from robex.verify.runner import verify_image
from robex.verify.search import SearchSettings, queries_to_reach

MODEL_CONFIG = {"_target_": "robex.models.double_mnist_cnn.DoubleMnistCNN", "image_size": 16, "channels": [4], "pool": 2}


def tiny_double_mnist(tmp_path: Path):
    """A 16x16 two-'digit' task (8x8 class patterns) and a CNN trained on it for a second."""
    from robex.data.double_mnist import generate_double_mnist

    generator = torch.Generator().manual_seed(0)
    patterns = (torch.rand(10, 8, 8, generator=generator) > 0.5).to(torch.uint8) * 255
    pool = patterns.repeat(4, 1, 1)
    split = generate_double_mnist(pool, torch.arange(40) % 10, 400, seed=1, canvas_size=16, max_offset_x=1, max_offset_y=5)
    torch.manual_seed(0)
    model = DoubleMnistCNN(image_size=16, channels=(4,), pool=2)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    images, labels = split.float_images(), split.two_hot()
    for _ in range(60):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(images), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return split, model.eval()


def test_cegis_and_binary_search_on_one_image(tmp_path):
    split, model = tiny_double_mnist(tmp_path)
    with torch.no_grad():
        top = model(split.float_images()).topk(2, dim=1).indices.sort(dim=1).values
    index = int(torch.nonzero((top == split.digits.sort(dim=1).values).all(dim=1))[0])
    target = int(split.digits[index, 0])
    sizes = {}
    for strategy, cutting in (("cegis", "fixed"), ("cegis", "sensitivity"), ("binary", "fixed")):
        outcome = verify_image(
            model, split.float_images()[index], target, split.masks[index, 1], strategy, cutting,
            OracleSettings(milp_time_limit=5, lp_budget_seconds=0.2),
            SearchSettings(max_queries=25, max_seconds=20, tolerance=0.02, step_size=0.1, polish_max_queries=25), merge_from=4,
        )
        result = outcome["result"]
        # search (25) + polish (25) + one maximality query per layer (5)
        assert result.search_queries <= 25 and result.queries <= 55 and result.queries == sum(result.counts.values())
        assert len(result.eps) == 5 and np.all((result.eps >= 0) & (result.eps <= 1))
        assert result.size == np.sum(result.eps) > 0
        assert queries_to_reach(result.trace, result.size) <= result.queries
        assert outcome["final"].verdict is Verdict.ROBUST  # eps* survives the exact re-verification
        assert outcome["final"].proved_by in ("bounds", "milp:gurobi", "milp:highs", "bab")
        assert result.size >= result.search_size - 1e-12  # the polish only grows eps*
        assert len(result.maximality) == 5 and "robust" not in result.maximality  # no +tolerance increment is provably robust
        sizes[(strategy, cutting)] = result.size
    # after polishing, every variant ends at a locally maximal box; none is left at a fraction of the others
    assert min(sizes.values()) >= 0.5 * max(sizes.values())


def test_verify_stage_end_to_end(tmp_path):
    from robex.models.io import save_model

    split, model = tiny_double_mnist(tmp_path)
    split.save(tmp_path / "data" / "test.pt")
    for defense in ("none", "pgd"):
        save_model(model, tmp_path / "train" / f"double_mnist_{defense}" / "model.pt", MODEL_CONFIG)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "verify"
    result = run_cli(
        "robex.verify", f"model_dir={tmp_path / 'train'}", f"data_path={tmp_path / 'data' / 'test.pt'}", f"output_dir={out}",
        "defenses=[none,pgd]", "num_images=1", "layers.merge_from=4", "verify.budget.max_queries=12",
        "verify.budget.max_seconds=10", "verify.budget.polish_max_queries=6", "verify.oracle.milp_time_limit=3", f"hydra.run.dir={tmp_path / 'hydra'}",
        cwd=tmp_path, env_extra={"MLFLOW_TRACKING_URI": uri},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    per_image = pd.read_csv(out / "per_image.csv")
    assert set(per_image.defense) == {"none", "pgd"} and set(per_image.variant) == {"cegis-fixed", "cegis-sensitivity"}
    assert (per_image["size"] >= 0).all() and (per_image["search_queries"] <= 12).all()
    assert (out / "figures" / "size_distribution.png").stat().st_size > 0
    assert len(list((out / "figures").glob("heatmap_*.png"))) == 2
    assert (out / "metrics.json").is_file() and (out / "per_model.md").is_file()
    assert runs_by_status(uri) == {"FINISHED": 1}



def test_unknown_strategy_is_a_clear_error():
    import pytest

    from robex.verify.runner import variants

    with pytest.raises(ValueError, match="strategy='bogus' is unknown"):
        variants("bogus", ["fixed"])
