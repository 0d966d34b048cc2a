"""The verify stage's config: schema-checked groups (unknown keys fail at composition), one budget
shared by every strategy, interpolation-free DVC params files, and the SIGTERM stop flag."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from robex.schemas import register_schemas
from robex.utils.hydra import CONFIG_PATH

CONF = Path(CONFIG_PATH)


def compose_verify(overrides):
    register_schemas()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("verify", overrides=overrides)


def test_budget_is_shared_by_both_strategies():
    cegis = compose_verify(["verify/search=cegis"])
    binary = compose_verify(["verify/search=binary"])
    assert cegis.verify.budget == binary.verify.budget
    assert "max_queries" not in cegis.verify.search and "max_queries" not in binary.verify.search


@pytest.mark.parametrize("override", ["verify.oracle.bogus=1", "verify.budget.max_querys=5", "verify.search.speed=2", "bogus=1"])
def test_unknown_keys_fail_at_composition(override):
    with pytest.raises(Exception, match="bogus|max_querys|speed"):
        compose_verify([override])


def test_wrong_type_fails_at_composition():
    with pytest.raises(Exception, match="milp_time_limit"):
        compose_verify(["verify.oracle.milp_time_limit=soon"])


def test_params_files_are_interpolation_free_leaf_yaml():
    for path in [*CONF.glob("verify/oracle/*.yaml"), *CONF.glob("verify/search/*.yaml"), *CONF.glob("verify/budget/*.yaml")]:
        text = path.read_text()
        assert "${" not in text, path
        OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    assert "job:" not in (CONF / "verify.yaml").read_text()  # hydra.job.name comes from the stage module


def test_stop_request_ends_the_search_at_once():
    from robex.models.double_mnist_cnn import DoubleMnistCNN
    from robex.verify.layers import layer_map
    from robex.verify.oracle import LayeredOracle, OracleSettings
    from robex.verify.search import SearchSettings, search_maximal
    from robex.verify.stop import request_stop, reset_stop

    torch.manual_seed(0)
    model = DoubleMnistCNN(image_size=8, channels=(2, 3), pool=2, num_classes=4).eval()
    image = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:4, 2:4] = True
    layers = layer_map(mask.unsqueeze(0), merge_from=2)[0]
    with torch.no_grad():
        target = int(model(image.unsqueeze(0)).argmax())
    oracle = LayeredOracle(model, image, target, layers, 3, OracleSettings(backend="highs"))
    request_stop()
    try:
        result = search_maximal(oracle, np.ones(3), SearchSettings(max_queries=50), "cegis", check=False)
    finally:
        reset_stop()
    assert result.queries <= 1 and result.stop_reason == "budget"


def test_a_stop_request_ends_the_stage_loop_with_stage_stopped_not_with_results():
    """SIGTERM inside a solver only sets the flag and the search ends early; the loop must then raise
    (run KILLED, nothing written) instead of returning the truncated answers as results."""
    from robex.models.double_mnist_cnn import DoubleMnistCNN
    from robex.utils.errors import StageStopped
    from robex.verify.oracle import OracleSettings
    from robex.verify.runner import verify_models
    from robex.verify.search import SearchSettings
    from robex.verify.stop import request_stop, reset_stop

    torch.manual_seed(0)
    model = DoubleMnistCNN(image_size=8, channels=(2, 3), pool=2, num_classes=4).eval()
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        top2 = model(images).topk(2, dim=1).indices
    masks = torch.zeros(3, 2, 8, 8, dtype=torch.bool)
    masks[:, :, 2:4, 2:4] = True
    kwargs = dict(num_images=1, target_slot=0, run_variants=[("cegis", "fixed")], oracle_settings=OracleSettings(backend="highs"),
                  search_settings=SearchSettings(max_queries=5), merge_from=2, weight_scheme="uniform", reverify=False, seed=0,
                  shard=(0, 1), progress=False)
    request_stop()
    try:
        with pytest.raises(StageStopped):
            verify_models({"none": model}, images, top2, masks, **kwargs)
    finally:
        reset_stop()
    rows, _ = verify_models({"none": model}, images, top2, masks, **kwargs)  # without a stop: results
    assert len(rows) == 1
