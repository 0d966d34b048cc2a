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

from robex.utils.hydra import CONFIG_PATH, job_output_dir, run_stage


def run(cfg: DictConfig) -> dict[str, float]:
    from pathlib import Path

    import torch
    from omegaconf import OmegaConf

    from robex.data.double_mnist import DoubleMnistSplit
    from robex.schemas import check
    from robex.tracking import mlflow_run
    from robex.utils.io import staged_directory
    from robex.utils.runtime import resolve_device, seed_everything
    from robex.utils.sharding import check_shard, shard_suffix
    from robex.verify.outputs import heatmap_logger, write_outputs
    from robex.verify.runner import defense_model_paths, load_defense_models, settings_from_dict, verify_models
    from robex.verify.stop import install_stop_handler

    check(cfg, "")  # range checks of robex.schemas.verify
    install_stop_handler()
    seed_everything(cfg.seed)
    torch.set_num_threads(int(cfg.threads))
    shard = (int(cfg.shard.index), int(cfg.shard.count))
    check_shard(*shard)
    oracle_settings, search_settings, run_variants = settings_from_dict(OmegaConf.to_container(cfg.verify, resolve=True))
    model_paths = defense_model_paths(cfg.model_dir, cfg.defenses)
    split, device = DoubleMnistSplit.load(cfg.data_path), resolve_device(cfg.device)
    models = load_defense_models(model_paths, device, split.float_images()[:1])
    out_dir = Path(str(job_output_dir(cfg, apart=("shard.index", "shard.count"))) + shard_suffix(*shard))
    run_name = f"verify-{cfg.verify.search.strategy}-{'-'.join(cfg.defenses)}{shard_suffix(*shard).replace('/shards/', '-shard')}"
    with staged_directory(out_dir) as staging, mlflow_run(cfg, experiment=cfg.tracking.experiment, tracking_uri=cfg.tracking.uri, run_name=run_name):
        images = split.float_images()
        rows, queries = verify_models(models, images, split.digits, split.masks, num_images=cfg.num_images, target_slot=cfg.target_slot,
                                      run_variants=run_variants, oracle_settings=oracle_settings, search_settings=search_settings,
                                      merge_from=cfg.layers.merge_from, weight_scheme=cfg.layers.weights, reverify=cfg.reverify,
                                      seed=cfg.seed, shard=shard, on_image=heatmap_logger(images, staging))
        return write_outputs(rows, queries, staging)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="verify")
def main(cfg: DictConfig) -> dict:
    return run_stage(run, cfg)


if __name__ == "__main__":
    main()
