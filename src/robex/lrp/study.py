"""The steps of the LRP study (Dieter & Zisgen 2023, Fig. 1) as library functions.

(1) correctly classified images, (2) a targeted attack toward every other class (Sect. 3.2) and
(3) LRP maps of originals and adversarials streamed into score statistics and ranking shifts
(Sect. 3.3-3.4). They take a model, tensors and plain arguments, so a notebook can run them;
``python -m robex.lrp_study`` wires them to the config, MLflow and DVC outputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from robex.lrp.attribution import LRPAttribution, LRPRule, max_abs_normalize
from robex.lrp.ranking import RankingShiftAccumulator
from robex.lrp.statistics import RelevanceDistribution
from robex.utils.errors import RobexError
from robex.utils.io import atomic_save, atomic_write_json

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
    device: torch.device, checkpoint_dir: Path | None = None, fingerprint: str = "", progress: bool = False,
) -> tuple[dict[str, torch.Tensor], float]:
    """Attack every original toward every other class in batches of pairs.

    ``attack(images, targets)`` returns an L-BFGS-style result (adversarial, success,
    target_probability, iterations, c, distance). Only successful adversarials are kept, as the
    paper analyses them (Sect. 3.4). Returns the payload and the seconds spent attacking.

    With ``checkpoint_dir`` every finished batch is saved there (``pairs_<first>_<end>.pt``) with a
    key made of ``fingerprint`` (the attack settings and model), the batch's original pixels and its
    targets; a rerun loads the batches whose key matches instead of attacking them again, so a
    stopped run loses at most one batch. Originals are a prefix of one seeded order, so a smaller
    ``count`` reuses the batches of a larger run when ``batch_size`` is a multiple of
    ``num_classes - 1``. ``progress`` shows one bar over all pairs that moves as pairs finish.
    """
    original_slot, targets = target_pairs(labels, num_classes)
    fields = ("adversarial", "success", "target_probability", "iterations", "c", "distance")
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in fields}
    resumed, seconds = [], 0.0
    bar = tqdm(total=len(targets), desc="L-BFGS attack", unit="pair", disable=not progress, mininterval=1, smoothing=0.05)
    for start in range(0, len(targets), batch_size):
        end = min(start + batch_size, len(targets))
        slots = original_slot[start:end]
        key = _batch_key(fingerprint, originals_uint8[slots], targets[start:end])
        path = None if checkpoint_dir is None else Path(checkpoint_dir) / f"pairs_{start:07d}_{end:07d}.pt"
        stored = _load_batch(path, key)
        if stored is None:
            began = time.perf_counter()
            originals = originals_uint8[slots].to(device).float() / 255
            result = _call_attack(attack, originals, targets[start:end].to(device), bar)
            stored = {name: getattr(result, name).detach().cpu() for name in fields}
            stored["seconds"] = time.perf_counter() - began
            if path is not None:
                atomic_save({"key": key, **stored}, path)
        bar.n = end  # a resumed batch jumps; an attacked one has already been counted pair by pair
        bar.refresh()
        resumed.append(torch.full((end - start,), bool(stored.get("resumed", False))))
        for name in fields:
            parts[name].append(stored[name])
        seconds += float(stored["seconds"])
    bar.close()
    success_all = torch.cat(parts["success"])
    keep = success_all.nonzero().squeeze(1)
    payload = {
        "labels": labels, "originals": originals_uint8,
        "pair_original": original_slot, "pair_target": targets, "pair_success": success_all,
        "pair_target_probability": torch.cat(parts["target_probability"]), "pair_iterations": torch.cat(parts["iterations"]),
        "pair_c": torch.cat(parts["c"]), "pair_distance": torch.cat(parts["distance"]),
        "pair_resumed": torch.cat(resumed), "adversarial_pairs": keep, "adversarials": torch.cat(parts["adversarial"])[keep],
    }
    return payload, seconds


def _batch_key(fingerprint: str, originals_uint8: torch.Tensor, targets: torch.Tensor) -> str:
    import hashlib

    digest = hashlib.sha256(fingerprint.encode())
    digest.update(originals_uint8.contiguous().numpy().tobytes())
    digest.update(targets.to(torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _load_batch(path: Path | None, key: str) -> dict | None:
    """A saved attack batch whose key matches, marked ``resumed``; None if absent, stale or unreadable."""
    blob = _load_keyed(path, key)
    return None if blob is None else {**blob, "resumed": True}


def _call_attack(attack: Callable, images: torch.Tensor, targets: torch.Tensor, bar) -> object:
    """``attack(images, targets)``, passing the bar to attacks that advance it per finished pair."""
    import inspect

    perturb = getattr(attack, "perturb", None)
    if perturb is not None and "progress" in inspect.signature(perturb).parameters:
        return attack(images, targets, progress=bar)
    result = attack(images, targets)
    bar.update(len(targets))
    return result


def model_fingerprint(model: nn.Module) -> str:
    """sha256 of the model's parameters and buffers (the resume key's model part)."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).to(torch.float64).numpy().tobytes())
    return digest.hexdigest()


def build_rules(names: Sequence[str], specs: dict[str, dict]) -> list[LRPRule]:
    """The rules named in ``names`` from ``{name: LRPRule arguments}`` (the config's ``lrp.rules``)."""
    missing = [name for name in names if name not in specs]
    if missing or not names:
        listed = ", ".join(repr(name) for name in missing) or "nothing"
        raise RobexError(f"lrp.rule_names lists {listed}, which is not defined in lrp.rules; choose from {list(specs)}")
    return [LRPRule(name=str(name), **specs[name]) for name in names]


def load_step_output(path: Path, producer: str) -> dict:
    """A previous step's ``.pt`` output, or a one-sentence error naming the step to run first."""
    if not Path(path).is_file():
        raise RobexError(f"{str(path)!r} does not exist; run `python -m robex.lrp_study step={producer}` with the same overrides first")
    return torch.load(path, map_location="cpu", weights_only=False)


def attack_step(
    model: nn.Module, images_uint8: torch.Tensor, labels: torch.Tensor, attack: Callable, out_dir: Path, *, count: int | None,
    seed: int, batch_size: int, device: torch.device, resume: bool = True, fingerprint: str = "", progress: bool = False,
) -> dict[str, float]:
    """Steps (1)-(2) of Fig. 1: the correctly classified images (all, or ``count`` seeded) attacked
    toward every other class; writes ``attack/adversarials.pt`` and ``attack/metrics.json``.

    With ``resume`` finished batches are kept under ``attack/partial/`` and reused by a rerun with
    the same ``fingerprint`` (the attack settings; the model's weights are added here), see
    :func:`attack_all_pairs`; ``attack/seconds`` then counts the stored batches' original time."""
    selected = select_correct_images(model, images_uint8, labels, count, seed, device)
    if len(selected) == 0:
        raise RobexError("no correctly classified image found in the prepared split; check model_path and prepared_dir")
    num_classes = int(getattr(model, "num_classes", 10))
    checkpoint_dir = Path(out_dir) / "attack" / "partial" if resume else None
    pairs, seconds = attack_all_pairs(attack, images_uint8[selected], labels[selected], num_classes, batch_size, device,
                                      checkpoint_dir=checkpoint_dir, fingerprint=f"{fingerprint}|{model_fingerprint(model)}", progress=progress)
    payload = {"image_indices": selected, **pairs}
    metrics = attack_metrics(payload, seconds)
    metrics["attack/resumed_pairs"] = float(payload["pair_resumed"].sum())
    atomic_save(payload, Path(out_dir) / "attack" / "adversarials.pt")
    atomic_write_json(metrics, Path(out_dir) / "attack" / "metrics.json")
    return metrics


def relevance_step(model: nn.Module, rules: Sequence[LRPRule], out_dir: Path, device: torch.device, resume: bool = False,
                   **options) -> dict[str, float]:
    """Step (3): :func:`relevance_statistics` on ``attack/adversarials.pt`` (``options`` are its keyword
    arguments, ``save_maps`` a bool); writes ``relevance/summary.pt`` and ``relevance/metrics.json``.
    With ``resume`` each finished (treatment, rule) part is kept under ``relevance/partial/`` and
    reused by a rerun on the same attack output, model and options."""
    out_dir = Path(out_dir)
    attack = load_step_output(out_dir / "attack" / "adversarials.pt", "attack")
    maps_dir = out_dir / "relevance" / "maps" if options.pop("save_maps", False) else None
    checkpoint_dir = out_dir / "relevance" / "partial" if resume and maps_dir is None else None
    summary = relevance_statistics(model, rules, attack, device, maps_dir=maps_dir, checkpoint_dir=checkpoint_dir, **options)
    atomic_save(summary, out_dir / "relevance" / "summary.pt")
    metrics = relevance_metrics(summary["timing"])
    atomic_write_json(metrics, out_dir / "relevance" / "metrics.json")
    return metrics


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
    for level in (0.001, 0.005, 0.01, 0.1, 0.5):
        metrics[f"attack/target_probability_q{level}"] = float(np.quantile(probabilities, level)) if len(keep) else float("nan")
    # Sect. 4.1: 99% of the paper's adversarials have p_c' above 0.9337
    metrics["attack/share_target_probability_above_0.9337"] = float((probabilities > 0.9337).mean()) if len(keep) else float("nan")
    return metrics


def relevance_statistics(
    model: nn.Module, rules: Sequence[LRPRule], attack: dict, device: torch.device, batch_size: int,
    irrelevant_threshold: float = 1e-3, small_fraction: float = 0.01, large_fraction: float = 0.10, rank_by: str = "value",
    heatmap_examples: int = 0, maps_dir: Path | None = None, batchnorm: Sequence[str] = ("layer", "merge"),
    zplus_bias: str = "include", checkpoint_dir: Path | None = None, progress: bool = False,
) -> dict:
    """LRP maps of all originals and their successful adversarials, one rule at every layer
    (Sect. 3.3), streamed into score distributions (Sect. 3.4) and ranking shifts (Sect. 4.2.3),
    for every BatchNorm treatment in ``batchnorm`` (see :mod:`robex.lrp.attribution`).

    ``attack`` is the payload of ``attack_all_pairs`` (plus ``image_indices``). Returns, nested
    ``{batchnorm: {rule: ...}}``, the state dicts, a few half-precision example maps for figures
    and the timing; with ``maps_dir`` every map is also saved in chunks of ``batch_size`` originals.
    With ``checkpoint_dir`` each (treatment, rule) part is saved when done and reused by a rerun
    whose attack payload, model, rule and options are the same. ``progress``: one bar over all maps.
    """
    summary: dict = {"rules": [r.name for r in rules], "batchnorm": list(batchnorm), "distributions": {}, "rankings": {},
                     "examples": {}, "timing": {}}
    options = dict(batch_size=batch_size, irrelevant_threshold=irrelevant_threshold, small_fraction=small_fraction,
                   large_fraction=large_fraction, rank_by=rank_by, heatmap_examples=heatmap_examples, zplus_bias=zplus_bias)
    base_key = _relevance_key(model, attack, options) if checkpoint_dir is not None else ""
    maps_per_part = len(attack["image_indices"]) + len(attack["adversarial_pairs"])
    bar = tqdm(total=maps_per_part * len(rules) * len(batchnorm), desc="LRP maps", unit="map", disable=not progress, mininterval=1)
    parts_done = 0
    for treatment in batchnorm:
        for key in ("distributions", "rankings", "examples", "timing"):
            summary[key][treatment] = {}
        for rule in rules:
            path = None if checkpoint_dir is None else Path(checkpoint_dir) / treatment / f"{rule.name}.pt"
            key = f"{base_key}|{treatment}|{rule!r}"
            part = _load_keyed(path, key)
            if part is None:
                bar.set_postfix(rule=f"{rule.name} [{treatment}]", refresh=False)
                part = _relevance_one_rule(model, rule, attack, device, batch_size, irrelevant_threshold, small_fraction,
                                           large_fraction, rank_by, heatmap_examples,
                                           None if maps_dir is None else maps_dir / treatment, treatment, zplus_bias, bar)
                if path is not None:
                    atomic_save({"key": key, **part}, path)
            parts_done += 1
            bar.n = parts_done * maps_per_part  # a reused part jumps; a computed one was counted batch by batch
            bar.refresh()
            for name in ("distributions", "rankings", "examples", "timing"):
                summary[name][treatment][rule.name] = part[name]
    bar.close()
    return summary


def _relevance_key(model: nn.Module, attack: dict, options: dict) -> str:
    """What a saved relevance part depends on besides its rule and treatment: model, attack payload, options."""
    import hashlib

    digest = hashlib.sha256(model_fingerprint(model).encode())
    for name in ("image_indices", "labels", "originals", "pair_original", "pair_target", "adversarial_pairs", "adversarials"):
        digest.update(attack[name].detach().cpu().contiguous().view(-1).numpy().tobytes())
    digest.update(repr(sorted(options.items())).encode())
    return digest.hexdigest()


def _load_keyed(path: Path | None, key: str) -> dict | None:
    """A saved attack batch or relevance part whose key matches; None if absent, stale or unreadable."""
    if path is None or not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - a half-written or corrupt file is simply computed again
        return None
    return blob if isinstance(blob, dict) and blob.get("key") == key else None


def _relevance_one_rule(
    model, rule, attack, device, batch_size, irrelevant_threshold, small_fraction, large_fraction, rank_by,
    heatmap_examples, maps_dir, batchnorm, zplus_bias, bar,
) -> dict:
    num_originals = len(attack["image_indices"])
    pair_original = attack["pair_original"][attack["adversarial_pairs"]]
    pair_target = attack["pair_target"][attack["adversarial_pairs"]]
    adversarials = attack["adversarials"]
    num_components = int(attack["originals"][0].numel())
    examples = set(range(min(int(heatmap_examples), num_originals)))

    distributions = {kind: RelevanceDistribution(float(irrelevant_threshold)) for kind in IMAGE_KINDS}
    ranking = RankingShiftAccumulator(num_components, small_fraction, large_fraction, rank_by)
    rule_examples = {"original": {}, "adversarial": {}}
    maps_done, seconds = 0, 0.0
    # Sect. 3.3: initial relevance = the pre-softmax value of the explained class; maps max-abs normalised
    attribution = LRPAttribution(model, rule, batchnorm=batchnorm, zplus_bias=zplus_bias, relevance_init="logit")

    def explain(images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return max_abs_normalize(attribution(images, classes)[1])

    with attribution:
        for chunk, start in enumerate(range(0, num_originals, batch_size)):
            slots = torch.arange(start, min(start + batch_size, num_originals))
            in_batch = ((pair_original >= start) & (pair_original < slots[-1] + 1)).nonzero().squeeze(1)
            originals = attack["originals"][slots].to(device).float() / 255
            began = time.perf_counter()
            original_maps = explain(originals, attack["labels"][slots].to(device)).cpu()
            adversarial_maps = explain(adversarials[in_batch].to(device), pair_target[in_batch].to(device)).cpu() if len(in_batch) else original_maps[:0]
            seconds += time.perf_counter() - began
            maps_done += len(original_maps) + len(adversarial_maps)
            bar.update(len(original_maps) + len(adversarial_maps))
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
    return {"distributions": {kind: d.state_dict() for kind, d in distributions.items()}, "rankings": ranking.state_dict(),
            "examples": rule_examples, "timing": {"maps": maps_done, "seconds": seconds}}


def relevance_metrics(timing: dict[str, dict[str, dict[str, float]]]) -> dict[str, float]:
    """Maps and throughput overall and per treatment and rule, from ``relevance_statistics(...)["timing"]``."""
    entries = {f"{batchnorm}/{rule}": entry for batchnorm, by_rule in timing.items() for rule, entry in by_rule.items()}
    total_maps = sum(t["maps"] for t in entries.values())
    total_seconds = sum(t["seconds"] for t in entries.values())
    metrics = {"relevance/maps": float(total_maps), "relevance/seconds": total_seconds,
               "relevance/images_per_second": total_maps / total_seconds if total_seconds else float("nan")}
    for name, entry in entries.items():
        metrics[f"relevance/{name}/images_per_second"] = entry["maps"] / entry["seconds"] if entry["seconds"] else float("nan")
    return metrics


def restore_accumulators(summary: dict) -> tuple[dict, dict]:
    """``({batchnorm: {rule: {kind: RelevanceDistribution}}}, {batchnorm: {rule: RankingShiftAccumulator}})``
    from a ``relevance_statistics`` summary."""
    distributions = {
        batchnorm: {rule: {kind: RelevanceDistribution.from_state_dict(state) for kind, state in by_kind.items()}
                    for rule, by_kind in by_rule.items()}
        for batchnorm, by_rule in summary["distributions"].items()
    }
    rankings = {batchnorm: {rule: RankingShiftAccumulator.from_state_dict(state) for rule, state in by_rule.items()}
                for batchnorm, by_rule in summary["rankings"].items()}
    return distributions, rankings


def statistics_outputs(out_dir: Path, levels: Sequence[float], shift_levels: Sequence[float]) -> tuple[dict, Iterator, dict]:
    """Steps (4)-(5): (tables, (name, figure) pairs, metrics) of Sect. 4 (Tables 3-5, Figs. 5-9) from the attack
    payload and the relevance summary under ``out_dir``; figures for every BatchNorm treatment."""
    from robex.lrp import figures as plots
    from robex.lrp import tables

    attack = load_step_output(Path(out_dir) / "attack" / "adversarials.pt", "attack")
    summary = load_step_output(Path(out_dir) / "relevance" / "summary.pt", "relevance")
    distributions, rankings = restore_accumulators(summary)
    probabilities = attack["pair_target_probability"][attack["adversarial_pairs"]].double().numpy()
    out_tables = {"attack_summary": tables.attack_summary_table(len(attack["image_indices"]), attack["pair_success"], probabilities)}
    out_tables.update(tables.statistics_tables(distributions, rankings, levels, shift_levels))

    def figures() -> Iterator[tuple[str, object]]:
        # one figure at a time: the caller saves and closes each before the next is drawn
        for index, batchnorm in enumerate(summary["batchnorm"]):
            suffix = "" if index == 0 else f"_{batchnorm}"  # the default treatment keeps the stable file names
            for name, figure in plots.heatmap_figures(summary["examples"][batchnorm], summary["rules"], attack, batchnorm).items():
                yield f"{name}{suffix}", figure
            yield f"relevance_distributions{suffix}", plots.distribution_figure(distributions[batchnorm], batchnorm)
            for rule, accumulator in rankings[batchnorm].items():
                yield f"shifts_{rule}{suffix}", plots.shift_figure(rule, accumulator, batchnorm)
        if len(probabilities):
            yield "target_probability", plots.probability_figure(probabilities)

    return out_tables, figures(), tables.statistics_metrics(distributions, rankings)


def load_study_model(model_path: str | Path, device: torch.device) -> nn.Module:
    """The trained CIFAR-10 classifier at ``model_path``, checked to accept one 3x32x32 image."""
    from robex.models.io import check_model_input, load_model

    model = load_model(model_path, device=device)
    check_model_input(model, torch.zeros(1, 3, 32, 32, device=device), model_path, "CIFAR-10")
    return model


def statistics_step(out_dir: Path, levels: Sequence[float], shift_levels: Sequence[float]) -> dict[str, float]:
    """Steps (4)-(5): :func:`statistics_outputs` logged to the active MLflow run and written atomically
    under ``out_dir/statistics`` (``tables/``, ``figures/``, ``metrics.json``); returns the metrics."""
    from robex.tracking import log_figure, log_table
    from robex.utils.io import staged_directory

    tables, figures, metrics = statistics_outputs(out_dir, levels, shift_levels)
    with staged_directory(Path(out_dir) / "statistics") as staging:
        for name, frame in tables.items():
            log_table(frame, f"tables/{name}", out_dir=staging / "tables")
        for name, figure in figures:
            log_figure(figure, f"figures/{name}.png", out_path=staging / "figures" / f"{name}.png")
        atomic_write_json(metrics, staging / "metrics.json")
    return metrics


def run_steps(
    steps: Sequence[str], out_dir: Path, *, model: nn.Module | None, rules: Sequence[LRPRule], device: torch.device,
    prepared_dir: str | Path, split: str, make_attack: Callable[[nn.Module], Callable], attack_options: dict,
    relevance_options: dict, levels: Sequence[float], shift_levels: Sequence[float],
) -> dict[str, float]:
    """Fig. 1 step by step (``attack``, ``relevance``, ``statistics``), each writing under ``out_dir``; the CIFAR-10
    ``split`` of ``prepared_dir`` is loaded and ``make_attack(model)`` called only when the attack step runs
    (``attack_options``, ``relevance_options``: keyword arguments of those steps). After each step the metrics
    so far, with ``<step>/wall_seconds``, are logged to the active MLflow run; returns them."""
    from robex.tracking import log_metrics

    metrics: dict[str, float] = {}
    for step in steps:
        began = time.perf_counter()
        if step == "attack":
            from robex.data.cifar10 import load_cifar10

            images, labels = load_cifar10(prepared_dir, split)
            step_metrics = attack_step(model, images, labels, make_attack(model), out_dir, device=device, **attack_options)
        elif step == "relevance":
            step_metrics = relevance_step(model, rules, out_dir, device, **relevance_options)
        else:
            step_metrics = statistics_step(out_dir, levels, shift_levels)
        metrics.update(step_metrics)
        metrics[f"{step}/wall_seconds"] = time.perf_counter() - began
        log_metrics(metrics)
    return metrics
