"""Stage `verify`: maximal robust layered neighbourhoods on DOUBLE-MNIST (Mour 2023, Sect. 2-3).

    python -m robex.verify                                   # CEGIS (fixed + sensitivity weights)
    python -m robex.verify verify/search=binary              # the binary-search baseline, same budget
    python -m robex.verify -m verify/search=cegis,binary verify.oracle.backend=highs

Per defense model, the first ``num_images`` correctly classified test images: search eps*, polish
it to local maximality, re-verify it (bounds or MILP, own time limit); tables, heatmaps and
metrics go to MLflow and ``output_dir`` (atomically).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from robex.utils.hydra import CONFIG_PATH, run_stage


def run(cfg: DictConfig) -> dict[str, float]:
    from pathlib import Path

    import pandas as pd
    import torch
    from omegaconf import OmegaConf

    from robex.data.double_mnist import DoubleMnistSplit
    from robex.models.io import check_model_input, load_model
    from robex.schemas import check
    from robex.tracking import log_figure, log_metrics, log_table, mlflow_run
    from robex.utils.io import atomic_write_json, staged_directory
    from robex.utils.runtime import resolve_device, seed_everything
    from robex.utils.sharding import check_shard, shard_suffix
    from robex.verify.figures import eps_heatmap, eps_profiles, size_distribution
    from robex.verify.oracle import OracleSettings
    from robex.verify.runner import variants, verify_models
    from robex.verify.search import SearchSettings
    from robex.verify.stop import install_stop_handler
    from robex.verify.tables import eps_columns, per_model_table, summary_metrics

    check(cfg, "")  # range checks of robex.schemas.verify
    install_stop_handler()
    seed_everything(cfg.seed)
    torch.set_num_threads(int(cfg.threads))
    shard = (int(cfg.shard.index), int(cfg.shard.count))
    check_shard(*shard)
    v = OmegaConf.to_container(cfg.verify, resolve=True)
    oracle_settings = OracleSettings(**v["oracle"])
    search_settings = SearchSettings(**v["budget"], **{k: val for k, val in v["search"].items() if k not in ("strategy", "cutting_weights")})
    model_paths = {d: Path(cfg.model_dir) / f"double_mnist_{d}" / "model.pt" for d in cfg.defenses}
    missing = [str(p) for p in model_paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"model file(s) {missing} do not exist; train them with `python -m robex.train` or set model_dir/defenses")
    split, device = DoubleMnistSplit.load(cfg.data_path), resolve_device(cfg.device)
    models = {d: load_model(p, device).requires_grad_(False) for d, p in model_paths.items()}
    for defense, path in model_paths.items():
        check_model_input(models[defense], split.float_images()[:1].to(device), path, "DOUBLE-MNIST")
    out_dir = Path(cfg.output_dir + shard_suffix(*shard))
    run_name = f"verify-{v['search']['strategy']}-{'-'.join(cfg.defenses)}{shard_suffix(*shard).replace('/shards/', '-shard')}"
    with staged_directory(out_dir) as staging, mlflow_run(cfg, experiment=cfg.tracking.experiment, tracking_uri=cfg.tracking.uri, run_name=run_name):
        images = split.float_images()

        def heatmap(defense, index, target, layers, eps_by_variant):
            figure = eps_heatmap(images[index, 0].numpy(), layers, eps_by_variant, f"{defense}: image {index}, target {target}")
            log_figure(figure, f"figures/heatmap_{defense}_{index}.png", staging / "figures" / f"heatmap_{defense}_{index}.png")

        rows, queries = verify_models(models, images, split.digits, split.masks, num_images=cfg.num_images, target_slot=cfg.target_slot,
                                      run_variants=variants(v["search"]["strategy"], v["search"]["cutting_weights"]), oracle_settings=oracle_settings,
                                      search_settings=search_settings, merge_from=cfg.layers.merge_from, weight_scheme=cfg.layers.weights,
                                      reverify=cfg.reverify, seed=cfg.seed, shard=shard, on_image=heatmap)
        per_image, query_table = pd.DataFrame(rows), pd.DataFrame(queries)
        per_model = per_model_table(per_image)
        metrics = summary_metrics(per_image, query_table, per_model)
        log_metrics(metrics)
        for frame, name in ((per_image, "per_image"), (per_model, "per_model"), (query_table, "queries")):
            log_table(frame, f"tables/{name}", staging)
        log_figure(size_distribution(per_image), "figures/size_distribution.png", staging / "figures" / "size_distribution.png")
        log_figure(eps_profiles(per_image, eps_columns(per_image)), "figures/eps_profiles.png", staging / "figures" / "eps_profiles.png")
        atomic_write_json(metrics, staging / "metrics.json", sort_keys=False)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="verify")
def main(cfg: DictConfig) -> dict:
    return run_stage(run, cfg)


if __name__ == "__main__":
    main()
