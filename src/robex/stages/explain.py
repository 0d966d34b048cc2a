"""Stage `explain`: LOTS visualisations against CAM methods with the thesis' XAI metrics (Weber 2023).

    python -m robex.explain                          # CIFAR-10, Table 2 CNN + ResNet-18
    python -m robex.explain explain=quick            # the quick experiment (Table-2 CNN, ~80 s of CPU)
    python -m robex.explain explain=imagenet         # AlexNet, ResNet-50, DenseNet-121, ConvNeXt-Tiny
    python -m robex.explain -m explain.lots.step_rule=thesis,polyak 'explain.methods=[grad_cam,lots]'

Writes Tables 5.1-5.3 (CSV + Markdown), per-image metrics, figures and metrics.json under
``output_dir`` (atomically) and logs all of it to MLflow.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from robex.utils.hydra import CONFIG_PATH, job_output_name, run_stage


def run(cfg: DictConfig) -> dict:
    """The whole stage; sweep jobs get their own output folder (the swept values appended)."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from robex.explain.data import ImageSource
    from robex.explain.study import LotsOptions, check_settings, study_backbones, target_source_text
    from robex.explain.tables import stage_tables
    from robex.explain.targets import target_image_count
    from robex.schemas import check
    from robex.tracking import log_figure, log_metrics, log_table, mlflow_run
    from robex.utils.io import atomic_write_json, staged_directory
    from robex.utils.runtime import resolve_device, seed_everything

    check(cfg, "")  # the range checks of robex.schemas.explain (batch_size, explain.*), before any model is loaded
    device = resolve_device(cfg.device)
    s = OmegaConf.to_container(cfg.explain, resolve=True)
    data, table = s["data"], s["targets_table"]
    check_settings(s["use_backbones"], s["backbones"], s["methods"], table["targets"], LotsOptions(**s["lots"]))
    seed_everything(cfg.seed)
    source = ImageSource(data["kind"], data.get("prepared_dir"), data.get("root"), tuple(data.get("wnids") or ()) or None, data["image_size"], data["resize"])
    images, labels = source.load(data["split"], data["images_per_class"])
    run_name = f"{data['kind']}-{'+'.join(s['use_backbones'])}"
    with staged_directory(Path(job_output_name(str(cfg.output_dir)))) as staging, mlflow_run(cfg, experiment=cfg.tracking.experiment, run_name=run_name, tracking_uri=cfg.tracking.uri):
        def log_backbone(name, study):
            log_metrics({f"{name}/{m}/{k}": v for m, summary in study.methods.items() for k, v in summary.items()})
            log_metrics({f"{name}/lots_target_{t}/{k}": v for t, summary in study.targets.items() for k, v in summary.items()})
            for figure_name, figure in study.figures.items():
                log_figure(figure, f"figures/{figure_name}.png", staging / "figures" / f"{figure_name}.png")

        summaries, targets, per_image = study_backbones(s, source, images.to(device), labels, device, cfg.paths.cache_dir, cfg.seed,
                                                        cfg.batch_size, cfg.progress, log_backbone)
        where = target_source_text(target_image_count(source, data["train_split"], data["target_images_per_class"]), data["target_images_per_class"], data["train_split"]) if targets else None
        for table_name, frame in stage_tables(summaries, targets, per_image, table["backbone"], where).items():
            log_table(frame, f"tables/{table_name}", staging / "tables")
        metrics = {"methods": summaries, "lots_targets": targets, "images": len(images)}
        atomic_write_json(metrics, staging / "metrics.json", sort_keys=False)
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="explain")
def main(cfg: DictConfig) -> dict:
    return run_stage(run, cfg)


if __name__ == "__main__":
    main()
