"""Attack stage: LRP/PGD/DeepFool attacks on a coarse-to-fine classifier, Tables I-II, Fig. 1-2.

    python -m robex.attack                                   # both tables, CIFAR-10 C2F
    python -m robex.attack attack=lrpc attack.eps=10,20,40 -m  # one attack, swept
    python -m robex.attack target=c2f_imagenet               # VGG-16 on the ImageNet hierarchy
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import hydra
import torch
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

from robex.utils.io import publish_directory
from robex.utils.hydra import CONFIG_PATH, log, user_errors_exit
from robex.utils.runtime import resolve_device, seed_everything


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="attack")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    from robex.attacks import evaluation as tables
    from robex.attacks.c2f import C2F_ATTACKS
    from robex.models.c2f import C2FClassifier
    from robex.models.io import load_model
    from robex.tracking import log_figure, log_metrics, log_table, mlflow_run
    from robex.utils.errors import RobexError

    seed_everything(cfg.seed)
    if cfg.target not in cfg.targets:
        raise RobexError(f"target={cfg.target!r} is not configured; choose one of {sorted(cfg.targets)} or add it under `targets`")
    target = cfg.targets[cfg.target]
    device = resolve_device(cfg.device)
    model = load_model(target.model_path, device)
    if not isinstance(model, C2FClassifier):
        raise RobexError(f"model {target.model_path!r} is a {type(model).__name__}, not a C2FClassifier; point target at a coarse-to-fine model")

    specs = tables.attack_specs(OmegaConf.to_container(cfg.attack, resolve=True))
    unknown = [s["name"] for s in specs if s["name"].lower() not in C2F_ATTACKS]
    if unknown:
        raise RobexError(f"attack {unknown[0]!r} is not a coarse-to-fine attack; choose one of {sorted(C2F_ATTACKS)}")

    # called directly rather than through instantiate(), whose wrapper would hide the loader's
    # one-sentence FileNotFoundError behind an InstantiationException
    loader_options = OmegaConf.to_container(target.images, resolve=True)
    images, fine_labels = get_method(loader_options.pop("_target_"))(**loader_options)
    correct = tables.select_correct(model, images, fine_labels, device)
    if not correct.any():
        raise RobexError(f"model {target.model_path!r} classifies none of the evaluation images correctly; check the model and the data split")
    chosen = correct.nonzero().squeeze(1)
    if cfg.num_images is not None:
        chosen = chosen[: int(cfg.num_images)]
    images, fine_labels = images[chosen], fine_labels[chosen]
    log.info("attacking %d correctly classified images (%.1f%% of the split are correct)", len(images), 100 * float(correct.float().mean()))

    out_dir = Path(cfg.output_dir)
    staging = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)

    with mlflow_run(cfg, experiment=cfg.tracking.experiment, run_name=f"{cfg.target}/{cfg.attack.label}", tracking_uri=cfg.tracking.uri):
        summaries: dict[str, dict[str, dict[str, float]]] = {"coarse": {}, "fine": {}}
        failures: dict[str, dict[str, int]] = {}
        examples: dict[str, dict[str, torch.Tensor]] = {"coarse": {}, "fine": {}}
        accuracy = {"clean_accuracy_split": float(correct.float().mean()), "attacked_images": float(len(images))}
        log_metrics(accuracy)
        for spec in specs:
            label = tables.attack_label(spec)
            run, summary, failures[label] = tables.evaluate_c2f_attack(model, spec, images, fine_labels, cfg.batch_size, device)
            if failures[label]:
                log.warning("%s failed on %d of %d images: %s", label, int(summary["failed"]), len(images), failures[label])
            summaries[run.level][label] = summary
            examples[run.level][label] = run.result.adversarial[: cfg.figure_examples]
            key = label.replace(" ", "_").replace("=", "")
            log_metrics({f"{key}.{name}": value for name, value in summary.items()})
            log.info("%s: fooling %.1f%%, rho_inf %.4f, %.3f s/image", label, summary["fooling_pct"], summary["rho_inf"], summary["seconds_per_image"])

        metrics = {}
        for level, table_name in (("coarse", "table1_coarse"), ("fine", "table2_fine")):
            if summaries[level]:
                log_table(tables.paper_table(summaries[level]), f"tables/{table_name}", out_dir=staging)
                metrics.update({f"{label}.{name}": value for label, summary in summaries[level].items() for name, value in summary.items()})
        log_table(tables.failure_summary_rows(failures), "tables/failures", out_dir=staging)
        for level, attacked in examples.items():
            for index in range(min(cfg.figure_examples, len(images)) if attacked else 0):
                figure = tables.lrp_panel(
                    model, images[index], int(fine_labels[index]), level,
                    {label: adversarial[index] for label, adversarial in attacked.items()},
                )
                name = f"fig{1 if level == 'coarse' else 2}_{level}_example{index}.png"
                log_figure(figure, f"figures/{name}", out_path=staging / "figures" / name)
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")

    # the whole output folder appears at once, so DVC never sees a half-written stage
    publish_directory(staging, out_dir)
    log.info("tables and figures written to %s", out_dir)


if __name__ == "__main__":
    main()
