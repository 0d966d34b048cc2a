"""Stage `lrp_study`: the explanatory power of LRP measured with adversarial examples.

Dieter & Zisgen (2023), Fig. 1: (1) correctly classified CIFAR-10 test images, (2) targeted L-BFGS
toward the 9 other classes (Sect. 3.2), (3) LRP maps, one rule at every layer, for each BatchNorm
treatment (Sect. 3.3), (4) score statistics (Tables 3-4) and (5) relevance rankings (Table 5,
Figs. 7-9). Steps ``attack``, ``relevance`` and ``statistics`` each write under ``out_dir`` so DVC
runs them as separate stages; ``step=all`` runs the three. The loops live in robex.lrp.study.

    python -m robex.lrp_study lrp=quick
    python -m robex.lrp_study lrp=paper step=attack
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from robex.utils.hydra import CONFIG_PATH, run_stage

STEPS = ("attack", "relevance", "statistics")


def run(cfg: DictConfig) -> dict[str, float]:
    import time
    from pathlib import Path

    import torch

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from robex.lrp import study
    from robex.schemas import check
    from robex.tracking import log_figure, log_metrics, log_table, mlflow_run
    from robex.utils.io import atomic_write_json, staged_directory
    from robex.utils.runtime import resolve_device, seed_everything

    check(cfg)  # range checks of robex.schemas.lrp, before any slow work
    lrp, out, steps = cfg.lrp, Path(cfg.out_dir), STEPS if cfg.step == "all" else (cfg.step,)
    rules = study.build_rules(list(lrp.rule_names), OmegaConf.to_container(lrp.rules, resolve=True))
    seed_everything(cfg.seed)
    device, metrics, ranking = resolve_device(cfg.device), {}, lrp.ranking
    with mlflow_run(cfg, experiment=cfg.tracking.experiment, run_name=f"{lrp.name}-{cfg.step}", tracking_uri=cfg.tracking.uri):
        if {"attack", "relevance"} & set(steps):
            from robex.models.io import check_model_input, load_model

            model = load_model(cfg.model_path, device=device)
            check_model_input(model, torch.zeros(1, 3, 32, 32, device=device), cfg.model_path, "CIFAR-10")
        for step in steps:
            began = time.perf_counter()
            if step == "attack":
                from robex.data.cifar10 import load_cifar10

                images, labels = load_cifar10(cfg.prepared_dir, cfg.split)
                step_metrics = study.attack_step(model, images, labels, instantiate(lrp.attack)(model), out, count=lrp.num_images,
                                                 seed=cfg.seed, batch_size=lrp.attack_batch_size, device=device)
            elif step == "relevance":
                step_metrics = study.relevance_step(
                    model, rules, out, device, batch_size=lrp.relevance_batch_size, irrelevant_threshold=lrp.irrelevant_threshold,
                    small_fraction=ranking.small_fraction, large_fraction=ranking.large_fraction, rank_by=ranking.rank_by,
                    heatmap_examples=lrp.heatmap_examples, save_maps=lrp.save_maps, batchnorm=list(lrp.batchnorm), zplus_bias=lrp.zplus_bias)
            else:
                tables, figures, step_metrics = study.statistics_outputs(out, list(lrp.quantiles), list(ranking.abs_shift_quantiles))
                with staged_directory(out / "statistics") as staging:
                    for name, frame in tables.items():
                        log_table(frame, f"tables/{name}", out_dir=staging / "tables")
                    for name, figure in figures:
                        log_figure(figure, f"figures/{name}.png", out_path=staging / "figures" / f"{name}.png")
                    atomic_write_json(step_metrics, staging / "metrics.json")
            metrics.update(step_metrics)
            metrics[f"{step}/wall_seconds"] = time.perf_counter() - began
            log_metrics(metrics)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="lrp_study")
def main(cfg: DictConfig) -> None:
    run_stage(run, cfg)


if __name__ == "__main__":
    main()
