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


def load_reference_model(name: str, device: str | torch.device = "cpu", weights_dir: str | Path = REFERENCE_DIR) -> nn.Module:
    """Load a committed reference model (``weights/<name>/model.pt``) after checking its SHA-256
    against ``weights/manifest.json``, which also records the command, seed, commit and test
    metrics that produced it. A changed or truncated file is refused with one sentence."""
    import hashlib
    import json

    weights_dir = Path(weights_dir)
    manifest = json.loads((weights_dir / "manifest.json").read_text())
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
    return load_model(path, device)
