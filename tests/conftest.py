"""Shared fixtures: the one Hydra compose fixture, tiny synthetic data, a CLI runner with an isolated MLflow store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# `make test` exports a relative ROBEX_DATA (../shared/data); tests that run a stage from a temporary
# directory would resolve it there, so pin it to an absolute path once, relative to where pytest started.
if os.environ.get("ROBEX_DATA"):
    os.environ["ROBEX_DATA"] = str(Path(os.environ["ROBEX_DATA"]).resolve())


def real_data_root() -> Path | None:
    """The raw-data root the tests may read (ROBEX_DATA, else ../shared/data), if it exists."""
    root = Path(os.environ.get("ROBEX_DATA") or SHARED_DATA).resolve()  # absolute: tests link to it from tmp dirs
    return root if (root / "MNIST" / "raw").is_dir() else None


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)


CONF_DIR = REPO / "conf"


def compose_config(config_name: str, overrides: list[str] | tuple[str, ...] = (), *, root: Path | None = None,
                   return_hydra_config: bool = False):
    """A stage's config as `python -m robex.<stage> <overrides>` composes it (ConfigStore schemas
    registered first), with ``paths.root_dir=<root>`` when ``root`` is given (outputs stay in tmp dirs)."""
    from hydra import compose, initialize_config_dir

    from robex.schemas import register_schemas

    register_schemas()
    extra = [f"paths.root_dir={root}"] if root is not None else []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name=config_name):
        return compose(config_name, overrides=[*overrides, *extra], return_hydra_config=return_hydra_config)


@pytest.fixture
def compose_cfg():
    """``compose_cfg("train", ["model=cifar_cnn"], root=tmp_path)`` -> the composed DictConfig."""
    return compose_config


@pytest.fixture
def digit_pool() -> tuple[torch.Tensor, torch.Tensor]:
    """60 fake 28x28 digits (a filled random blob each) with labels 0..9, six per class."""
    generator = torch.Generator().manual_seed(0)
    images = torch.zeros(60, 28, 28, dtype=torch.uint8)
    blob = (torch.rand(60, 14, 14, generator=generator) > 0.4).to(torch.uint8) * torch.randint(1, 256, (60, 14, 14), generator=generator, dtype=torch.uint8)
    images[:, 7:21, 7:21] = blob
    return images, torch.arange(60) % 10


def run_cli(module: str, *args: str, cwd: Path, env_extra: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def runs_by_status(uri: str) -> dict[str, int]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    counts: dict[str, int] = {}
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            counts[run.info.status] = counts.get(run.info.status, 0) + 1
    return counts


@pytest.fixture
def tiny_prepared(tmp_path: Path, digit_pool) -> Path:
    """outputs/data-like folder with tiny DOUBLE-MNIST and CIFAR-10 caches (synthetic)."""
    from robex.data.double_mnist import generate_double_mnist
    from robex.utils.io import atomic_save

    prepared = tmp_path / "outputs" / "data"
    images, labels = digit_pool
    for index, (split, count) in enumerate({"train": 64, "val": 32, "test": 32}.items()):
        generate_double_mnist(images, labels, count, seed=index).save(prepared / "double_mnist" / f"{split}.pt")
    generator = torch.Generator().manual_seed(1)
    for split, count in {"train": 80, "test": 20}.items():
        atomic_save(
            {"images": torch.randint(0, 256, (count, 3, 32, 32), generator=generator, dtype=torch.uint8),
             "labels": torch.arange(count) % 10, "classes": []},
            prepared / "cifar10" / f"{split}.pt",
        )
    return prepared
