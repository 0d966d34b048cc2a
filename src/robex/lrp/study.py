"""The steps of the LRP study (Dieter & Zisgen 2023, Fig. 1) as library functions.

(1) correctly classified images, (2) a targeted attack toward every other class (Sect. 3.2) and
(3) LRP maps of originals and adversarials streamed into score statistics and ranking shifts
(Sect. 3.3-3.4). They take a model, tensors and plain arguments, so a notebook can run them;
``python -m robex.lrp_study`` wires them to the config, MLflow and DVC outputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from robex.lrp.statistics import RelevanceDistribution
from robex.lrp.ranking import RankingShiftAccumulator
from robex.lrp.relevance import LRPRule, RelevanceExplainer
from robex.utils.io import atomic_save

IMAGE_KINDS = ("original", "adversarial")
ADVERSARIALS_PER_EXAMPLE = 3  # adversarial maps kept per example original for the heatmap figures


def select_correct_images(
    model: nn.Module, images_uint8: torch.Tensor, labels: torch.Tensor, count: int | None, seed: int,
    device: torch.device, batch_size: int = 500,
) -> torch.Tensor:
    """Indices of correctly classified images: all (count=None, split order, as the paper) or the
    first ``count`` of a seeded permutation."""
    order = torch.arange(len(images_uint8))
    if count is not None:
        order = torch.randperm(len(images_uint8), generator=torch.Generator().manual_seed(seed))
    chosen = []
    with torch.no_grad():
        for start in tqdm(range(0, len(order), batch_size), desc="classify", mininterval=2, leave=False):
            batch = order[start : start + batch_size]
            logits = model(images_uint8[batch].to(device).float() / 255)
            chosen.append(batch[(logits.argmax(1).cpu() == labels[batch])])
            if count is not None and sum(len(c) for c in chosen) >= count:
                break
    selected = torch.cat(chosen) if chosen else torch.empty(0, dtype=torch.long)
    return selected if count is None else selected[:count]


def target_pairs(labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every original paired with each of its ``num_classes - 1`` other classes (Sect. 3.2):
    (index of the original for each pair, target class of each pair)."""
    original_slot = torch.arange(len(labels)).repeat_interleave(num_classes - 1)
    offsets = torch.arange(1, num_classes).repeat(len(labels))
    return original_slot, (labels[original_slot] + offsets) % num_classes


def attack_all_pairs(
    attack: Callable, originals_uint8: torch.Tensor, labels: torch.Tensor, num_classes: int, batch_size: int,
    device: torch.device,
) -> tuple[dict[str, torch.Tensor], float]:
    """Attack every original toward every other class in batches of pairs.

    ``attack(images, targets)`` returns an L-BFGS-style result (adversarial, success,
    target_probability, iterations, c, distance). Only successful adversarials are kept, as the
    paper analyses them (Sect. 3.4). Returns the payload and the seconds spent attacking.
    """
    original_slot, targets = target_pairs(labels, num_classes)
    adversarials, success, probability, iterations, c_values, distances = [], [], [], [], [], []
    started = time.perf_counter()
    for start in tqdm(range(0, len(targets), batch_size), desc="L-BFGS attack", unit="batch"):
        slots = original_slot[start : start + batch_size]
        originals = originals_uint8[slots].to(device).float() / 255
        result = attack(originals, targets[start : start + batch_size].to(device))
        adversarials.append(result.adversarial.cpu())
        success.append(result.success.cpu())
        probability.append(result.target_probability.cpu())
        iterations.append(result.iterations.cpu())
        c_values.append(result.c.cpu())
        distances.append(result.distance.cpu())
    seconds = time.perf_counter() - started
    success_all = torch.cat(success)
    keep = success_all.nonzero().squeeze(1)
    payload = {
        "labels": labels, "originals": originals_uint8,
        "pair_original": original_slot, "pair_target": targets, "pair_success": success_all,
        "pair_target_probability": torch.cat(probability), "pair_iterations": torch.cat(iterations),
        "pair_c": torch.cat(c_values), "pair_distance": torch.cat(distances),
        "adversarial_pairs": keep, "adversarials": torch.cat(adversarials)[keep],
    }
    return payload, seconds


def attack_metrics(payload: dict, seconds: float) -> dict[str, float]:
    """Sect. 4.1 numbers of one attack payload (see ``attack_all_pairs``)."""
    keep = payload["adversarial_pairs"]
    pairs = len(payload["pair_target"])
    probabilities = payload["pair_target_probability"][keep].double().numpy()
    metrics = {
        "attack/originals": float(len(payload["originals"])), "attack/pairs": float(pairs),
        "attack/adversarials": float(len(keep)), "attack/success_rate": float(payload["pair_success"].float().mean()),
        "attack/seconds": seconds, "attack/pairs_per_second": pairs / seconds,
        "attack/mean_iterations": float(payload["pair_iterations"].float().mean()),
        "attack/median_l2": float(payload["pair_distance"][keep].sqrt().median()) if len(keep) else float("nan"),
    }
    for level in (0.001, 0.005, 0.01, 0.5):
        metrics[f"attack/target_probability_q{level}"] = float(np.quantile(probabilities, level)) if len(keep) else float("nan")
    return metrics


def relevance_statistics(
    model: nn.Module, rules: Sequence[LRPRule], attack: dict, device: torch.device, batch_size: int,
    irrelevant_threshold: float, small_fraction: float, large_fraction: float, rank_by: str,
    heatmap_examples: int = 0, maps_dir: Path | None = None,
) -> dict:
    """LRP maps of all originals and their successful adversarials, one rule at every layer
    (Sect. 3.3), streamed into score distributions (Sect. 3.4) and ranking shifts (Sect. 4.2.3).

    ``attack`` is the payload of ``attack_all_pairs`` (plus ``image_indices``). Returns the state
    dicts per rule, a few half-precision example maps for figures and the timing; with
    ``maps_dir`` every map is also saved in chunks of ``batch_size`` originals.
    """
    num_originals = len(attack["image_indices"])
    pair_original = attack["pair_original"][attack["adversarial_pairs"]]
    pair_target = attack["pair_target"][attack["adversarial_pairs"]]
    adversarials = attack["adversarials"]
    num_components = int(attack["originals"][0].numel())
    examples = set(range(min(int(heatmap_examples), num_originals)))

    summary: dict = {"rules": [r.name for r in rules], "distributions": {}, "rankings": {}, "examples": {}, "timing": {}}
    for rule in rules:
        distributions = {kind: RelevanceDistribution(float(irrelevant_threshold)) for kind in IMAGE_KINDS}
        ranking = RankingShiftAccumulator(num_components, small_fraction, large_fraction, rank_by)
        rule_examples = {"original": {}, "adversarial": {}}
        maps_done, seconds = 0, 0.0
        with RelevanceExplainer(model, rule) as explain:
            for chunk, start in enumerate(tqdm(range(0, num_originals, batch_size), desc=f"LRP {rule.name}", unit="batch")):
                slots = torch.arange(start, min(start + batch_size, num_originals))
                in_batch = ((pair_original >= start) & (pair_original < slots[-1] + 1)).nonzero().squeeze(1)
                originals = attack["originals"][slots].to(device).float() / 255
                began = time.perf_counter()
                original_maps = explain(originals, attack["labels"][slots].to(device)).cpu()
                adversarial_maps = explain(adversarials[in_batch].to(device), pair_target[in_batch].to(device)).cpu() if len(in_batch) else original_maps[:0]
                seconds += time.perf_counter() - began
                maps_done += len(original_maps) + len(adversarial_maps)
                distributions["original"].update(original_maps)
                distributions["adversarial"].update(adversarial_maps)
                ranking.update(original_maps[pair_original[in_batch] - start], adversarial_maps)
                for local, slot in enumerate(slots.tolist()):
                    if slot in examples:
                        rule_examples["original"][slot] = original_maps[local].half()
                        mine = (pair_original[in_batch] == slot).nonzero().squeeze(1)[:ADVERSARIALS_PER_EXAMPLE]
                        rule_examples["adversarial"][slot] = [(int(pair_target[in_batch][i]), adversarial_maps[i].half()) for i in mine.tolist()]
                if maps_dir is not None:
                    atomic_save({"original_slots": slots, "maps": original_maps.half()}, maps_dir / rule.name / f"originals_{chunk:05d}.pt")
                    atomic_save({"adversarial_pairs": attack["adversarial_pairs"][in_batch], "maps": adversarial_maps.half()},
                                maps_dir / rule.name / f"adversarials_{chunk:05d}.pt")
        summary["distributions"][rule.name] = {kind: d.state_dict() for kind, d in distributions.items()}
        summary["rankings"][rule.name] = ranking.state_dict()
        summary["examples"][rule.name] = rule_examples
        summary["timing"][rule.name] = {"maps": maps_done, "seconds": seconds}
    return summary


def relevance_metrics(timing: dict[str, dict[str, float]]) -> dict[str, float]:
    """Maps and throughput overall and per rule, from ``relevance_statistics(...)["timing"]``."""
    total_maps = sum(t["maps"] for t in timing.values())
    total_seconds = sum(t["seconds"] for t in timing.values())
    metrics = {"relevance/maps": float(total_maps), "relevance/seconds": total_seconds,
               "relevance/images_per_second": total_maps / total_seconds if total_seconds else float("nan")}
    for name, entry in timing.items():
        metrics[f"relevance/{name}/images_per_second"] = entry["maps"] / entry["seconds"] if entry["seconds"] else float("nan")
    return metrics


def restore_accumulators(summary: dict) -> tuple[dict[str, dict[str, RelevanceDistribution]], dict[str, RankingShiftAccumulator]]:
    """The distributions and ranking accumulators per rule from a ``relevance_statistics`` summary."""
    distributions = {rule: {kind: RelevanceDistribution.from_state_dict(state) for kind, state in by_kind.items()}
                     for rule, by_kind in summary["distributions"].items()}
    rankings = {rule: RankingShiftAccumulator.from_state_dict(state) for rule, state in summary["rankings"].items()}
    return distributions, rankings
