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

from robex.utils.hydra import CONFIG_PATH, job_output_dir, run_stage

STEPS = ("attack", "relevance", "statistics")


def run(cfg: DictConfig) -> dict[str, float]:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from robex.lrp import study
    from robex.schemas import check
    from robex.tracking import mlflow_run
    from robex.utils.runtime import resolve_device, seed_everything

    check(cfg)  # range checks of robex.schemas.lrp, before any slow work
    lrp, steps = cfg.lrp, STEPS if cfg.step == "all" else (cfg.step,)
    rules = study.build_rules(list(lrp.rule_names), OmegaConf.to_container(lrp.rules, resolve=True))
    seed_everything(cfg.seed)
    device, ranking = resolve_device(cfg.device), lrp.ranking

    with mlflow_run(cfg, experiment=cfg.tracking.experiment, run_name=f"{lrp.name}-{cfg.step}", tracking_uri=cfg.tracking.uri):
        model = study.load_study_model(cfg.model_path, device) if {"attack", "relevance"} & set(steps) else None
        return study.run_steps(
            steps, job_output_dir(cfg, "out_dir"), model=model, rules=rules, device=device, prepared_dir=cfg.prepared_dir, split=cfg.split,
            make_attack=lambda model: instantiate(lrp.attack)(model),
            attack_options=dict(count=lrp.num_images, seed=cfg.seed, batch_size=lrp.attack_batch_size, resume=cfg.resume,
                                fingerprint=OmegaConf.to_yaml(lrp.attack, resolve=True), progress=True),
            relevance_options=dict(batch_size=lrp.relevance_batch_size, irrelevant_threshold=lrp.irrelevant_threshold,
                                   small_fraction=ranking.small_fraction, large_fraction=ranking.large_fraction, rank_by=ranking.rank_by,
                                   heatmap_examples=lrp.heatmap_examples, save_maps=lrp.save_maps, batchnorm=list(lrp.batchnorm),
                                   zplus_bias=lrp.zplus_bias, progress=True, resume=cfg.resume),
            levels=list(lrp.quantiles), shift_levels=list(ranking.abs_shift_quantiles))


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="lrp_study")
def main(cfg: DictConfig) -> None:
    run_stage(run, cfg)


if __name__ == "__main__":
    main()
