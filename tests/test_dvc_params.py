"""Every params file dvc.yaml declares works with `dvc exp run -S file:key=value`.

DVC applies ``-S`` by loading the file with plain OmegaConf and resolving it on its own, without Hydra's
composition or robex's resolvers: a ``${paths...}``, ``${seed}`` or ``${shard_suffix:...}`` there fails
(or silently means something else than in the composed config). So params files must be leaf files
without any interpolation; put interpolated values in files that are plain deps.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import DictConfig, ListConfig, OmegaConf

REPO = Path(__file__).resolve().parents[1]


def declared_params_files() -> list[str]:
    from dvc.repo import Repo

    files = {str(param.def_path) for stage in Repo(str(REPO)).index.stages for param in stage.params}
    return sorted(files)


def interpolations(node, prefix: str = "") -> list[str]:
    found = []
    items = node.items_ex(resolve=False) if isinstance(node, DictConfig) else enumerate(node) if isinstance(node, ListConfig) else []
    for key, _ in items:
        path = f"{prefix}{key}"
        if OmegaConf.is_interpolation(node, key):
            found.append(f"{path}: {node._get_node(key)._value()}")
            continue
        child = node._get_node(key)
        if isinstance(child, (DictConfig, ListConfig)):
            found.extend(interpolations(child, f"{path}."))
    return found


PARAMS_FILES = declared_params_files()


def test_dvc_yaml_declares_params():
    assert "conf/experiment/quick.yaml" in PARAMS_FILES and "conf/experiment/quick_prepare.yaml" in PARAMS_FILES


@pytest.mark.parametrize("path", PARAMS_FILES)
def test_params_file_is_interpolation_free(path):
    """Fails for a params file with `${...}` (e.g. conf/attack/c2f_tables.yaml's `seed: ${seed}`)."""
    config = OmegaConf.load(REPO / path)
    assert interpolations(config) == [], f"{path} is a DVC params file; move interpolated values out of it"
    OmegaConf.resolve(config)  # what `dvc exp run -S` does before writing the file back


def test_interpolation_detector_finds_nested_values():
    config = OmegaConf.create({"a": 1, "b": {"c": "${a}", "d": ["x", "${oc.env:HOME}"]}, "e": "plain"})
    assert interpolations(config) == ["b.c: ${a}", "b.d.1: ${oc.env:HOME}"]
