"""``python -m robex.verify``: maximal robust layered neighbourhoods on DOUBLE-MNIST.

For each defense model, the first ``num_images`` correctly classified test images: search eps*
(CEGIS with each cutting-weight scheme, or the binary-search baseline), re-verify eps* with the
exact MILP, and log per-image / per-model tables, heatmaps and metrics to MLflow and
``outputs/verify/``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import hydra
import pandas as pd
import torch
from omegaconf import DictConfig

from robex.utils.io import publish_directory
from robex.utils.errors import RobexError
from robex.utils.hydra import CONFIG_PATH, user_errors_exit
from robex.utils.runtime import resolve_device, seed_everything
from robex.utils.sharding import check_shard, shard_suffix, take_shard

log = logging.getLogger("robex.verify")


def _settings(cfg: DictConfig):
    from robex.verify.oracle import OracleSettings
    from robex.verify.search import SearchSettings

    oracle = OracleSettings(**{k: v for k, v in cfg.verify.oracle.items()})
    search_keys = SearchSettings.__dataclass_fields__.keys()
    search = SearchSettings(**{k: v for k, v in cfg.verify.search.items() if k in search_keys and k != "cutting_weights"})
    return oracle, search


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="verify")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    from robex.data.double_mnist import DoubleMnistSplit
    from robex.verify.runner import variants

    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    torch.set_num_threads(int(cfg.threads))
    check_shard(int(cfg.shard.index), int(cfg.shard.count))
    if cfg.num_images < 1:
        raise RobexError(f"num_images={cfg.num_images} must be >= 1")
    if cfg.target_slot not in (0, 1):
        raise RobexError(f"target_slot={cfg.target_slot} must be 0 (left digit is the target) or 1 (right digit)")
    run_variants = variants(cfg.verify.search.strategy, list(cfg.verify.search.cutting_weights))
    oracle_settings, search_settings = _settings(cfg)
    model_paths = {defense: Path(cfg.model_dir) / f"double_mnist_{defense}" / "model.pt" for defense in cfg.defenses}
    missing = [str(path) for path in model_paths.values() if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"model file(s) {missing} do not exist; train them with `python -m robex.train` or set model_dir/defenses")
    split = DoubleMnistSplit.load(cfg.data_path)
    images = split.float_images()
    out_dir = Path(cfg.output_dir)
    staging = out_dir.with_name(out_dir.name + f".tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "figures").mkdir(parents=True)

    try:
        _run(cfg, device, split, images, model_paths, run_variants, oracle_settings, search_settings, staging)
    finally:
        if staging.exists() and not (staging / "metrics.json").is_file():
            shutil.rmtree(staging, ignore_errors=True)  # a failed run leaves no half-written output
    publish_directory(staging, out_dir)
    log.info("verify: wrote %s", out_dir)


def _run(cfg, device, split, images, model_paths, run_variants, oracle_settings, search_settings, staging: Path) -> None:
    from tqdm.auto import tqdm

    from robex.models.io import load_model
    from robex.tracking import log_figure, log_metrics, log_table, mlflow_run
    from robex.verify.figures import eps_heatmap, eps_profiles, size_distribution
    from robex.verify.tables import eps_columns, per_model_table, query_rows, summary_metrics
    from robex.verify.runner import correctly_classified, summarise, verify_image

    rows, queries_asked = [], []
    with mlflow_run(cfg, experiment=cfg.tracking.experiment, tracking_uri=cfg.tracking.uri, run_name=f"verify-{cfg.verify.search.strategy}-{'-'.join(cfg.defenses)}{shard_suffix(cfg.shard.index, cfg.shard.count).replace('/shards/', '-shard')}"):
        for defense in cfg.defenses:
            model_path = model_paths[defense]
            model = load_model(model_path, device)
            for parameter in model.parameters():
                parameter.requires_grad_(False)
            chosen = correctly_classified(model, images.to(device), split.digits.to(device))[: cfg.num_images].tolist()
            if not chosen:
                raise RobexError(f"model {str(model_path)!r} classifies none of the test images correctly (top-2); retrain it")
            chosen = take_shard(chosen, int(cfg.shard.index), int(cfg.shard.count))
            for index in tqdm(chosen, desc=f"verify {defense}"):
                target = int(split.digits[index, cfg.target_slot])
                mask = split.masks[index, 1 - cfg.target_slot]
                eps_by_variant = {}
                for strategy, cutting in run_variants:
                    outcome = verify_image(
                        model, images[index].to(device), target, mask.to(device), strategy, cutting,
                        oracle_settings, search_settings, cfg.layers.merge_from, cfg.layers.weights, cfg.reverify, cfg.seed,
                    )
                    variant = strategy if strategy == "binary" else f"cegis-{cutting}"
                    row = {"defense": defense, "image": index, "target": target, "variant": variant, **summarise(outcome)}
                    rows.append(row)
                    eps_by_variant[variant] = outcome["result"].eps
                    queries_asked.extend(query_rows(defense, index, variant, outcome["records"]))
                    log.info("%s image %d %s: size %.4g in %d queries (%s), final %s", defense, index, variant, row["size"], row["queries"], row["stop_reason"], row["final_verdict"])
                figure = eps_heatmap(images[index, 0].numpy(), outcome["layers"], eps_by_variant, f"{defense}: image {index}, target {target}")
                log_figure(figure, f"figures/heatmap_{defense}_{index}.png", staging / "figures" / f"heatmap_{defense}_{index}.png")

        per_image = pd.DataFrame(rows)
        queries = pd.DataFrame(queries_asked)
        per_model = per_model_table(per_image)
        metrics = summary_metrics(per_image, queries, per_model)
        log_metrics(metrics)
        log_table(per_image, "tables/per_image", staging)
        log_table(per_model, "tables/per_model", staging)
        log_table(queries, "tables/queries", staging)
        log_figure(size_distribution(per_image), "figures/size_distribution.png", staging / "figures" / "size_distribution.png")
        log_figure(eps_profiles(per_image, eps_columns(per_image)), "figures/eps_profiles.png", staging / "figures" / "eps_profiles.png")
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


if __name__ == "__main__":
    main()
