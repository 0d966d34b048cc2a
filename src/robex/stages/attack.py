"""Stage `attack`: LRP/PGD/DeepFool attacks on a coarse-to-fine classifier, Tables I-II, Fig. 1-2.

    python -m robex.attack                                     # both tables, CIFAR-10 C2F
    python -m robex.attack attack=lrpc attack.eps=10,20,40 -m  # one attack, swept
    python -m robex.attack attack=lrpc attack.relevance_init=onehot,logit attack.zplus_bias=include,exclude -m
    python -m robex.attack target=c2f_imagenet                 # VGG-16 on the ImageNet hierarchy

Library: robex.attacks.evaluation (loop, metrics), .tables, .figures; docs/attack.md.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from robex.utils.hydra import CONFIG_PATH, job_output_dir, run_stage


def run(cfg: DictConfig) -> dict[str, float]:
    """Attack the first ``num_images`` correctly classified images with every configured attack."""

    from hydra.utils import get_method
    from omegaconf import OmegaConf

    from robex.attacks import evaluation, figures, tables
    from robex.models.io import load_model
    from robex.schemas import check
    from robex.tracking import log_figure, log_metrics, log_table, mlflow_run
    from robex.utils.io import atomic_write_json, staged_directory
    from robex.utils.runtime import resolve_device, seed_everything

    check(cfg, "")  # range checks of robex.schemas.attack, before any model is loaded
    seed_everything(cfg.seed)
    target = evaluation.check_target(cfg.target, OmegaConf.to_container(cfg.targets, resolve=True))
    device = resolve_device(cfg.device)
    model = evaluation.check_c2f_model(load_model(target["model_path"], device), target["model_path"])
    specs = evaluation.attack_specs(OmegaConf.to_container(cfg.attack, resolve=True))
    loader = dict(target["images"])
    # called directly rather than through instantiate(), whose wrapper would hide the loader's
    # one-sentence FileNotFoundError behind an InstantiationException
    images, fine_labels = get_method(loader.pop("_target_"))(**loader)
    images, fine_labels, accuracy = evaluation.correct_subset(model, images, fine_labels, cfg.num_images, device, target["model_path"])
    # sweep jobs get their own folder (the swept values appended), never a shared one
    with staged_directory(job_output_dir(cfg)) as staging, mlflow_run(
            cfg, experiment=cfg.tracking.experiment, run_name=f"{cfg.target}/{cfg.attack.label}", tracking_uri=cfg.tracking.uri):
        log_metrics(accuracy)
        suite = evaluation.evaluate_suite(model, specs, images, fine_labels, cfg.batch_size, device, cfg.figure_examples,
                                          on_result=lambda label, summary: log_metrics({f"{evaluation.metric_key(label)}.{k}": v for k, v in summary.items()}),
                                          progress=True)
        for level, summaries in suite.summaries.items():
            if summaries:
                table = tables.paper_table(summaries, tables.load_paper_columns(level))
                log_table(table, f"tables/{tables.PAPER_TABLES[level]}", out_dir=staging)
        log_table(tables.failure_summary_rows(suite.failures), "tables/failures", out_dir=staging)
        for name, panel in figures.example_panels(model, images, fine_labels, suite.examples, cfg.figure_examples).items():
            log_figure(panel, f"figures/{name}", out_path=staging / "figures" / name)
        metrics = {**accuracy, **suite.flat_metrics()}
        atomic_write_json(metrics, staging / "metrics.json")
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="attack")
def main(cfg: DictConfig) -> dict[str, float]:
    return run_stage(run, cfg)


if __name__ == "__main__":
    main()
