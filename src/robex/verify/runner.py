"""Per-image workflow of the verify stage: pick images, build layers, search eps*, re-verify."""

from __future__ import annotations

import logging
from dataclasses import asdict, replace

import numpy as np
import torch
from torch import nn

from robex.verify.layers import layer_map, layer_weights
from robex.verify.oracle import LayeredOracle, OracleSettings
from robex.verify.search import SearchResult, SearchSettings, search_maximal
from robex.verify.stop import raise_if_stopped

log = logging.getLogger("robex.verify")
STRATEGIES = ("cegis", "binary")


def correctly_classified(model: nn.Module, images: torch.Tensor, digits: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Indices of images whose top-2 classes are exactly their two digits (the problem's premise)."""
    keep = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            logits = model(images[start : start + batch_size])
            top = logits.topk(2, dim=1).indices.sort(dim=1).values
            keep.append((top == digits[start : start + batch_size].sort(dim=1).values).all(dim=1))
    return torch.nonzero(torch.cat(keep)).flatten()


def variants(strategy: str, cutting_weights: list[str]) -> list[tuple[str, str]]:
    if strategy == "cegis":
        return [("cegis", cw) for cw in cutting_weights]
    if strategy == "binary":
        return [("binary", "-")]
    raise ValueError(f"strategy={strategy!r} is unknown; use one of {STRATEGIES}")


def verify_image(
    model: nn.Module,
    image: torch.Tensor,
    target: int,
    non_target_mask: torch.Tensor,
    strategy: str,
    cutting_weights: str,
    oracle_settings: OracleSettings,
    search_settings: SearchSettings,
    merge_from: int | None = 8,
    weight_scheme: str = "uniform",
    reverify: bool = True,
    seed: int = 0,
) -> dict:
    """Search eps* for one image and target (Sect. 2 problem), then re-verify it with the MILP."""
    layers = layer_map(non_target_mask.unsqueeze(0), merge_from)[0]
    num_layers = int(layers.max()) + 1
    weights = layer_weights(layers, num_layers, weight_scheme).numpy()
    oracle = LayeredOracle(model, image, target, layers, num_layers, oracle_settings, seed=seed)
    settings = replace(search_settings, cutting_weights=cutting_weights if strategy == "cegis" else search_settings.cutting_weights)
    result: SearchResult = search_maximal(oracle, weights, settings, strategy)
    final = oracle.verify_exact(result.eps) if reverify and result.size > 0 else None
    return {
        "result": result,
        "layers": layers.cpu().numpy(),
        "weights": weights,
        "records": oracle.records,
        "final": final,
        "settings": {"oracle": asdict(oracle_settings), "search": asdict(settings)},
    }


def summarise(outcome: dict) -> dict:
    """One flat row for the per-image table."""
    result: SearchResult = outcome["result"]
    final = outcome["final"]
    milp = np.asarray(result.milp_seconds) if result.milp_seconds else np.zeros(0)
    records = outcome["records"]
    row = {
        "size": result.size,
        "queries": result.queries,
        "search_size": result.search_size,
        "search_queries": result.search_queries,
        "refuted_share": result.refuted_share,
        "increments_robust": sum(kind == "robust" for kind in result.maximality),
        "increments_unknown": sum(kind == "unknown" for kind in result.maximality),
        "milp_decided": sum(r.milp_status in ("optimal", "positive", "negative") for r in records if r.milp_status),
        "milp_queries": sum(r.milp_status is not None for r in records),
        "attack_seconds": sum(r.details.get("attack_seconds", 0.0) for r in records),
        "bounds_seconds": sum(r.details.get("bounds_seconds", 0.0) for r in records),
        "milp_seconds_total": float(milp.sum()) if len(milp) else 0.0,
        **{f"queries_{kind}": count for kind, count in result.counts.items()},
        "queries_escalated": sum(bool(r.details.get("escalated")) for r in records),  # refuted by the escalation attack, not the MILP
        "share_without_milp": 1.0 - result.counts.get("milp", 0) / max(result.queries, 1),
        "milp_seconds_median": float(np.median(milp)) if len(milp) else np.nan,
        "milp_seconds_p95": float(np.percentile(milp, 95)) if len(milp) else np.nan,
        "seconds": result.seconds,
        "stop_reason": result.stop_reason,
        "final_verdict": final.verdict.value if final is not None else "trivial (eps = 0)",
        "final_milp_status": final.milp_status if final is not None else "",
        "final_backend": final.backend if final is not None else "",
        "final_proved_by": (final.proved_by or "") if final is not None else "",
        "final_seconds": final.seconds if final is not None else 0.0,
        "num_layers": len(result.eps),
    }
    row.update({f"eps_{d}": float(e) for d, e in enumerate(result.eps)})
    return row


def verify_models(models: dict, images: torch.Tensor, digits: torch.Tensor, masks: torch.Tensor, *, num_images: int, target_slot: int,
                  run_variants: list[tuple[str, str]], oracle_settings: OracleSettings, search_settings: SearchSettings,
                  merge_from: int | None, weight_scheme: str, reverify: bool, seed: int, shard: tuple[int, int] = (0, 1),
                  on_image=None, progress: bool = True) -> tuple[list[dict], list[dict]]:
    """The stage's loop: for each defense's model, the first ``num_images`` correctly classified
    images (this shard's share), every search variant; returns (per-image rows, per-query rows).
    ``on_image(defense, index, layers, eps_by_variant)`` is called after each image (figures)."""
    from tqdm.auto import tqdm

    from robex.utils.errors import RobexError
    from robex.utils.sharding import take_shard
    from robex.verify.tables import query_rows

    rows, queries = [], []
    for defense, model in models.items():
        device = next(model.parameters()).device
        chosen = correctly_classified(model, images.to(device), digits.to(device))[:num_images].tolist()
        if not chosen:
            raise RobexError(f"the {defense} model classifies none of the test images correctly (top-2); retrain it")
        for index in tqdm(take_shard(chosen, *shard), desc=f"verify {defense}", disable=not progress):
            target = int(digits[index, target_slot])
            eps_by_variant, layers = {}, None
            for strategy, cutting in run_variants:
                outcome = verify_image(model, images[index].to(device), target, masks[index, 1 - target_slot].to(device), strategy, cutting,
                                       oracle_settings, search_settings, merge_from, weight_scheme, reverify, seed)
                # a SIGTERM inside a solver only sets the stop flag (its callback interrupts the solve and
                # the search ends early): such a truncated answer must not be written as a result
                raise_if_stopped()
                variant = strategy if strategy == "binary" else f"cegis-{cutting}"
                row = {"defense": defense, "image": index, "target": target, "variant": variant, **summarise(outcome)}
                rows.append(row)
                eps_by_variant[variant], layers = outcome["result"].eps, outcome["layers"]
                queries.extend(query_rows(defense, index, variant, outcome["records"]))
                log.info("%s image %d %s: size %.4g in %d queries (%s), refuted %.2f, final %s by %s", defense, index, variant, row["size"],
                         row["queries"], row["stop_reason"], row["refuted_share"], row["final_verdict"], row["final_proved_by"])
            if on_image is not None:
                on_image(defense, index, target, layers, eps_by_variant)
    return rows, queries


def settings_from_dict(verify: dict) -> tuple[OracleSettings, SearchSettings, list[tuple[str, str]]]:
    """(oracle settings, search settings, search variants) from the plain ``verify`` config dict: its
    ``oracle`` and ``budget`` sections, and ``search`` whose strategy and cutting weights pick the variants."""
    search = dict(verify["search"])
    run_variants = variants(search.pop("strategy"), search.pop("cutting_weights"))
    return OracleSettings(**verify["oracle"]), SearchSettings(**verify["budget"], **search), run_variants


def defense_model_paths(model_dir: str, defenses: list[str]) -> dict:
    """``{defense: <model_dir>/double_mnist_<defense>/model.pt}``, or an error naming the missing files."""
    from pathlib import Path

    model_paths = {d: Path(model_dir) / f"double_mnist_{d}" / "model.pt" for d in defenses}
    missing = [str(p) for p in model_paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"model file(s) {missing} do not exist; train them with `python -m robex.train` or set model_dir/defenses")
    return model_paths


def load_defense_models(model_paths: dict, device: torch.device, probe: torch.Tensor) -> dict[str, nn.Module]:
    """The frozen models of ``model_paths``, each checked to accept ``probe`` (one DOUBLE-MNIST image)."""
    from robex.models.io import check_model_input, load_model

    models = {d: load_model(p, device).requires_grad_(False) for d, p in model_paths.items()}
    for defense, path in model_paths.items():
        check_model_input(models[defense], probe.to(device), path, "DOUBLE-MNIST")
    return models
