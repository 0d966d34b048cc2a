"""Save and load trained models as ``model.pt``: the model's Hydra config plus its weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from robex.utils.errors import RobexError
from robex.utils.io import atomic_save


def build_model(model_config: dict[str, Any]) -> nn.Module:
    from hydra.utils import instantiate

    return instantiate(model_config, _convert_="all")


def save_model(model: nn.Module, path: str | Path, model_config: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_save({"model_config": model_config, "state_dict": state, "extra": extra or {}}, Path(path))


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by :func:`save_model`, in eval mode on ``device``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist; train it first with `python -m robex.train`")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
        model = build_model(blob["model_config"])
        model.load_state_dict(blob["state_dict"])
    except Exception as error:  # noqa: BLE001 - corrupt files fail in many ways
        raise RobexError(f"model file {str(path)!r} is corrupt or incompatible ({type(error).__name__}); retrain it or point to another file") from error
    return model.to(device).eval()



def check_model_input(model: nn.Module, example: torch.Tensor, path: str | Path, data: str) -> None:
    """One forward pass on ``example`` (a batch of the stage's data): a model of the wrong kind
    (e.g. a CIFAR-10 model given DOUBLE-MNIST images) fails here with one sentence naming its file,
    instead of a shape traceback deep inside an attack or a verifier."""
    try:
        with torch.no_grad():
            model(example)
    except RuntimeError as error:
        raise RobexError(
            f"model file {str(path)!r} does not accept {data} inputs of shape {tuple(example.shape[1:])} "
            f"({str(error).splitlines()[0]}); pass a model trained on {data}"
        ) from None


REFERENCE_DIR = Path(__file__).resolve().parents[3] / "weights"
# manifest name -> the name the stages load it under (<train_dir>/<name>/model.pt): verify expects
# double_mnist_<defense>; a name not listed keeps its manifest name
REFERENCE_STAGE_NAMES = {"double_mnist_thesis": "double_mnist_none", "double_mnist_thesis_l0": "double_mnist_l0",
                         "double_mnist_thesis_pgd": "double_mnist_pgd"}


def _read_manifest(weights_dir: Path) -> dict:
    import json

    path = weights_dir / "manifest.json"
    if not path.is_file():
        raise RobexError(f"reference weights manifest {str(path)!r} does not exist; restore it with `git checkout -- weights/manifest.json`")
    return json.loads(path.read_text())


def checked_reference_file(name: str, weights_dir: str | Path = REFERENCE_DIR) -> Path:
    """The path of a committed reference model (``weights/<name>/model.pt``) after checking its SHA-256
    against ``weights/manifest.json``. A missing, changed or truncated file is refused with one sentence."""
    import hashlib

    weights_dir = Path(weights_dir)
    manifest = _read_manifest(weights_dir)
    if name not in manifest:
        raise RobexError(f"no reference model {name!r}; choose one of {', '.join(sorted(manifest))} (weights/manifest.json)")
    entry = manifest[name]
    path = weights_dir.parent / entry["file"]
    if not path.is_file():
        raise RobexError(f"reference model file {str(path)!r} is missing; restore it with `git checkout -- {entry['file']}`")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != entry["sha256"]:
        raise RobexError(f"reference model file {str(path)!r} has SHA-256 {digest[:12]}..., the manifest says {entry['sha256'][:12]}...; "
                         f"restore it with `git checkout -- {entry['file']}`")
    return path


def load_reference_model(name: str, device: str | torch.device = "cpu", weights_dir: str | Path = REFERENCE_DIR) -> nn.Module:
    """Load a committed reference model (``weights/<name>/model.pt``) after checking its SHA-256
    against ``weights/manifest.json``, which also records the command, seed, commit and test
    metrics that produced it. A changed or truncated file is refused with one sentence."""
    return load_model(checked_reference_file(name, weights_dir), device)


def materialize_reference_models(train_dir: str | Path, weights_dir: str | Path = REFERENCE_DIR,
                                 names: list[str] | None = None) -> dict[str, Path]:
    """The ``train=skip`` path of the reference pipeline: copy every committed reference model (or
    ``names``) to ``<train_dir>/<stage name>/model.pt`` after its hash check, with a ``metrics.json``
    holding the manifest's test metrics (what the report reads) and ``reference.json`` holding its
    provenance (sha256, command, seed, commit, MLflow run id). Returns {stage name: model path}."""
    from robex.utils.io import atomic_copy, atomic_write_json

    weights_dir, train_dir = Path(weights_dir), Path(train_dir)
    manifest = _read_manifest(weights_dir)
    written = {}
    for name in names or sorted(manifest):
        source = checked_reference_file(name, weights_dir)  # refuses before anything is written for this model
        entry = manifest[name]
        target = train_dir / REFERENCE_STAGE_NAMES.get(name, name)
        target.mkdir(parents=True, exist_ok=True)
        atomic_copy(source, target / "model.pt")
        atomic_write_json({k: v for k, v in entry.get("test_metrics", {}).items() if isinstance(v, (int, float))}, target / "metrics.json")
        atomic_write_json({"reference_model": name, **{k: v for k, v in entry.items() if k != "test_metrics"}}, target / "reference.json")
        written[target.name] = target / "model.pt"
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m robex.models.io --train-dir outputs/reference/train [names...]``: materialize the reference weights."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m robex.models.io", description=main.__doc__.split(": ", 1)[1])
    parser.add_argument("--train-dir", required=True, help="where the stages look for <name>/model.pt (e.g. outputs/reference/train)")
    parser.add_argument("--weights-dir", default=str(REFERENCE_DIR), help="the committed weights folder with manifest.json")
    parser.add_argument("names", nargs="*", help="manifest names (default: all)")
    args = parser.parse_args(argv)
    try:
        written = materialize_reference_models(args.train_dir, args.weights_dir, args.names or None)
    except RobexError as error:
        print(f"robex: error: {error}", file=sys.stderr)
        return 1
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
