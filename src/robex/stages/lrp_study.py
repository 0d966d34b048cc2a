"""Stage `lrp_study`: the explanatory power of LRP measured with adversarial examples.

Dieter & Zisgen (2023), Fig. 1: (1) correctly classified CIFAR-10 test images, (2) targeted
L-BFGS attack toward the 9 other classes (Sect. 3.2), (3) LRP maps with one rule at every layer
(Sect. 3.3), (4) score statistics (Sect. 3.4, 4.2.2, Tables 3-4) and (5) relevance rankings
(Sect. 4.2.3, Table 5, Figs. 7-9). Steps ``attack``, ``relevance`` and ``statistics`` each write
under ``out_dir`` so DVC can run them as separate stages; ``step=all`` runs the three.

    python -m robex.lrp_study lrp=quick
    python -m robex.lrp_study lrp=paper step=attack
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from robex.lrp import tables as lrp_report
from robex.lrp.study import (
    attack_all_pairs, attack_metrics, relevance_metrics, relevance_statistics, restore_accumulators, select_correct_images,
)
from robex.lrp.relevance import LRPRule
from robex.utils.io import atomic_save, atomic_write_json
from robex.tracking import log_figure, log_metrics, log_table, mlflow_run
from robex.utils.errors import RobexError
from robex.utils.hydra import CONFIG_PATH, user_errors_exit
from robex.utils.runtime import resolve_device, seed_everything

log = logging.getLogger("robex.lrp_study")
STEPS = ("attack", "relevance", "statistics", "all")

# --------------------------------------------------------------------------------------- inputs
def _rules(cfg: DictConfig) -> list[LRPRule]:
    rules = []
    for name in cfg.lrp.rule_names:
        if name not in cfg.lrp.rules:
            raise RobexError(f"lrp.rule_names lists {name!r}, which is not defined in lrp.rules; choose from {list(cfg.lrp.rules)}")
        spec = OmegaConf.to_container(cfg.lrp.rules[name], resolve=True)
        rules.append(LRPRule(name=str(name), **spec))
    if not rules:
        raise RobexError("lrp.rule_names is empty; list at least one rule, e.g. lrp.rule_names=[alpha_beta_1]")
    return rules


def _out(cfg: DictConfig) -> Path:
    return Path(cfg.out_dir)


def _load(path: Path, producer: str) -> dict:
    if not path.is_file():
        raise RobexError(f"{str(path)!r} does not exist; run `python -m robex.lrp_study step={producer}` with the same overrides first")
    return torch.load(path, map_location="cpu", weights_only=False)


def _peak_memory_mib(device: torch.device) -> dict[str, float]:
    # ru_maxrss is KiB on Linux: the process' peak resident memory so far
    peak = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        peak["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return peak


# --------------------------------------------------------------------------------------- step 1
def run_attack(cfg: DictConfig, model, device) -> dict[str, float]:
    from robex.data.cifar10 import load_cifar10

    images_uint8, labels = load_cifar10(cfg.prepared_dir, cfg.split)
    count = cfg.lrp.num_images
    if count is not None and int(count) < 1:
        raise RobexError(f"lrp.num_images={count} must be a positive integer or null (all correct images)")
    selected = select_correct_images(model, images_uint8, labels, None if count is None else int(count), cfg.seed, device)
    if len(selected) == 0:
        raise RobexError(f"no correctly classified image found in {cfg.prepared_dir}/{cfg.split}.pt; check model_path={cfg.model_path}")
    attack = instantiate(cfg.lrp.attack)(model)
    pairs, seconds = attack_all_pairs(
        attack, images_uint8[selected], labels[selected], int(getattr(model, "num_classes", 10)), int(cfg.lrp.attack_batch_size), device,
    )
    payload = {"image_indices": selected, **pairs}
    atomic_save(payload, _out(cfg) / "attack" / "adversarials.pt")
    metrics = attack_metrics(payload, seconds)
    atomic_write_json(metrics, _out(cfg) / "attack" / "metrics.json")
    return metrics


# --------------------------------------------------------------------------------------- step 2
def run_relevance(cfg: DictConfig, model, device) -> dict[str, float]:
    attack = _load(_out(cfg) / "attack" / "adversarials.pt", "attack")
    ranking = cfg.lrp.ranking
    summary = relevance_statistics(
        model, _rules(cfg), attack, device, int(cfg.lrp.relevance_batch_size),
        irrelevant_threshold=float(cfg.lrp.irrelevant_threshold), small_fraction=ranking.small_fraction,
        large_fraction=ranking.large_fraction, rank_by=ranking.rank_by, heatmap_examples=int(cfg.lrp.heatmap_examples),
        maps_dir=_out(cfg) / "relevance" / "maps" if cfg.lrp.save_maps else None,
    )
    atomic_save(summary, _out(cfg) / "relevance" / "summary.pt")
    metrics = relevance_metrics(summary["timing"])
    atomic_write_json(metrics, _out(cfg) / "relevance" / "metrics.json")
    return metrics


# --------------------------------------------------------------------------------------- step 3
def run_statistics(cfg: DictConfig) -> dict[str, float]:
    attack = _load(_out(cfg) / "attack" / "adversarials.pt", "attack")
    summary = _load(_out(cfg) / "relevance" / "summary.pt", "relevance")
    # written into a temporary folder that replaces the old one at the end (atomic for DVC)
    final_out = _out(cfg) / "statistics"
    out = final_out.with_name("statistics.tmp")
    shutil.rmtree(out, ignore_errors=True)
    distributions, rankings = restore_accumulators(summary)
    probabilities = attack["pair_target_probability"][attack["adversarial_pairs"]].double().numpy()

    tables = {"attack_summary": lrp_report.attack_summary_table(len(attack["image_indices"]), attack["pair_success"], probabilities)}
    tables.update(lrp_report.statistics_tables(
        distributions, rankings, [float(q) for q in cfg.lrp.quantiles], list(cfg.lrp.ranking.abs_shift_quantiles)
    ))
    for name, frame in tables.items():
        log_table(frame, f"tables/{name}", out_dir=out / "tables")

    figures = lrp_report.heatmap_figures(summary, attack)
    figures["relevance_distributions"] = lrp_report.distribution_figure(distributions)
    if len(probabilities):
        figures["target_probability"] = lrp_report.probability_figure(probabilities)
    for rule, accumulator in rankings.items():
        figures[f"shifts_{rule}"] = lrp_report.shift_figure(rule, accumulator)
    for name, figure in figures.items():
        log_figure(figure, f"figures/{name}.png", out_path=out / "figures" / f"{name}.png")

    metrics = lrp_report.statistics_metrics(distributions, rankings)
    atomic_write_json(metrics, out / "metrics.json")
    shutil.rmtree(final_out, ignore_errors=True)
    os.replace(out, final_out)
    return metrics


# --------------------------------------------------------------------------------------- entry
def run(cfg: DictConfig) -> dict[str, float]:
    if cfg.step not in STEPS:
        raise RobexError(f"step={cfg.step!r} is not one of {list(STEPS)}")
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    _rules(cfg)  # fail on bad rule names before the slow attack
    metrics: dict[str, float] = {}
    steps = ("attack", "relevance", "statistics") if cfg.step == "all" else (cfg.step,)
    run_name = f"{cfg.lrp.name}-{cfg.step}"
    with mlflow_run(cfg, experiment=cfg.tracking.experiment, run_name=run_name, tracking_uri=cfg.tracking.uri):
        model = None
        if {"attack", "relevance"} & set(steps):
            from robex.models.io import load_model

            model = load_model(cfg.model_path, device=device)
        for step in steps:
            began = time.perf_counter()
            if step == "attack":
                metrics.update(run_attack(cfg, model, device))
            elif step == "relevance":
                metrics.update(run_relevance(cfg, model, device))
            else:
                metrics.update(run_statistics(cfg))
            metrics[f"{step}/wall_seconds"] = time.perf_counter() - began
            log_metrics(metrics)
        metrics.update({f"memory/{k}": v for k, v in _peak_memory_mib(device).items()})
        log_metrics(metrics)
        log.info("lrp_study %s: %s", cfg.step, json.dumps({k: round(v, 4) for k, v in metrics.items() if "/" in k and k.count("/") == 1}))
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="lrp_study")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    sys.exit(main())
