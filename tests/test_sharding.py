"""Per-image work sharded over parallel jobs (Hydra joblib launcher) and merged again."""

import pandas as pd
import pytest

from conftest import run_cli, runs_by_status
from robex.utils.errors import RobexError
from robex.utils.sharding import merge_shards, shard_suffix, take_shard


def test_take_shard_is_round_robin_and_covers_everything():
    items = list(range(10))
    shards = [take_shard(items, i, 3) for i in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert sorted(sum(shards, [])) == items
    assert shard_suffix(0, 1) == "" and shard_suffix(2, 4) == "/shards/2"
    with pytest.raises(RobexError, match="shard.index=3 and shard.count=3"):
        take_shard(items, 3, 3)


@pytest.mark.slow  # ~60 s on 2 shared cores: two verify jobs in subprocesses
def test_verify_shards_run_as_parallel_jobs_and_merge(tmp_path):
    from test_verify_loop import MODEL_CONFIG, tiny_double_mnist

    from robex.models.io import save_model

    split, model = tiny_double_mnist(tmp_path)
    split.save(tmp_path / "data" / "test.pt")
    save_model(model, tmp_path / "train" / "double_mnist_none" / "model.pt", MODEL_CONFIG)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_cli(
        "robex.verify", "-m", "hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2", "shard.count=2", "shard.index=0,1",
        f"model_dir={tmp_path / 'train'}", f"data_path={tmp_path / 'data' / 'test.pt'}", f"paths.output_dir={tmp_path / 'outputs'}",
        "defenses=[none]", "num_images=2", "layers.merge_from=4", "verify.budget.max_queries=6", "verify.search.cutting_weights=[fixed]",
        "verify.budget.max_seconds=5", "verify.budget.polish_max_queries=4", "verify.oracle.milp_time_limit=2",
        cwd=tmp_path, env_extra={"MLFLOW_TRACKING_URI": uri},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stage_dir = tmp_path / "outputs" / "verify"
    assert sorted(p.name for p in (stage_dir / "shards").iterdir()) == ["0", "1"]
    merged = merge_shards(stage_dir, "per_image.csv", source_column="shard")
    assert len(merged) == 2 and merged["image"].nunique() == 2
    assert set(merged["shard"]) == {"0", "1"}
    single = [pd.read_csv(stage_dir / "shards" / s / "per_image.csv") for s in ("0", "1")]
    assert set(single[0]["image"]).isdisjoint(single[1]["image"])
    assert runs_by_status(uri) == {"FINISHED": 3}  # sweep parent + one run per shard
