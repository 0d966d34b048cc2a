"""Evaluation of attacks on coarse-to-fine classifiers (Heidarizadeh et al., Sect. IV).

Fooling ratio, perceptibility rho_adv^p (eq. 10) for p = 1, 2, inf, mean iterations and time
per image; Tables I (coarse) and II (fine) with the paper's layout (one column per attack);
and Fig. 1/2-style panels: LRP of the original and the runner-up class before and after each
attack, plus the perturbation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from robex.attacks.base import AttackResult
from robex.attacks.c2f import C2FAttack, make_c2f_attack
from robex.attacks.lrp_attack import LRP, LRPAttackResult
from robex.models.c2f import C2FClassifier

PERCEPTIBILITY_NORMS = {"rho_2": 2.0, "rho_1": 1.0, "rho_inf": math.inf}


def perceptibility(images: torch.Tensor, adversarial: torch.Tensor, p: float) -> torch.Tensor:
    """Per-image ||eta||_p / ||x||_p; its mean over the data set is rho_adv^p of eq. (10)."""
    eta = (adversarial - images).flatten(1)
    return eta.norm(p=p, dim=1) / images.flatten(1).norm(p=p, dim=1).clamp_min(1e-12)


@dataclass
class AttackRun:
    """One attack over the evaluation set: its result and the wall time it took."""

    label: str
    level: str
    result: AttackResult
    seconds: float
    steps: int | None = None


def run_c2f_attack(
    attack: C2FAttack,
    images: torch.Tensor,
    fine_labels: torch.Tensor,
    label: str,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    steps: int | None = None,
) -> AttackRun:
    """Attack ``images`` batch by batch (progress bar), results gathered on the CPU."""
    parts: list[AttackResult] = []
    start = time.perf_counter()
    for first in tqdm(range(0, len(images), batch_size), desc=label, leave=False, mininterval=2):
        batch = images[first : first + batch_size].to(device)
        result = attack(batch, fine_labels[first : first + batch_size].to(device))
        parts.append(result)
    if device != "cpu" and torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    merged = LRPAttackResult(
        torch.cat([p.adversarial.cpu() for p in parts]),
        torch.cat([p.success.cpu() for p in parts]),
        torch.cat([p.iterations.cpu() for p in parts]),
        torch.cat([getattr(p, "stalled", torch.zeros_like(p.success)).cpu() for p in parts]),
    )
    return AttackRun(label, attack.level, merged, seconds, steps)


@torch.no_grad()
def failure_reasons(model: C2FClassifier, run: AttackRun, images: torch.Tensor, fine_labels: torch.Tensor,
                    device: torch.device | str = "cpu", batch_size: int = 256) -> dict[str, int]:
    """Why the failed images failed: counts per reason (an attack never crashes a batch).

    - ``coarse_changed``: a fine-level attack moved the coarse label (LRPF/PGDF/DFF must keep it);
    - ``stalled``: the LRP gradient was non-finite or exactly zero, so the image was frozen;
    - ``budget_exhausted``: the iteration limit was reached without a label change;
    - ``stopped_early``: anything else (an attack that stopped by its own criterion but whose
      final two-step decision is unchanged, e.g. DeepFool converging onto the boundary).
    """
    failed = ~run.result.success
    coarse_after = torch.cat([model.predict(run.result.adversarial[i : i + batch_size].to(device))[0].cpu()
                              for i in range(0, len(images), batch_size)])
    coarse_changed = failed & (coarse_after != model.hierarchy.coarse_of(fine_labels.cpu())) if run.level == "fine" else torch.zeros_like(failed)
    stalled = failed & ~coarse_changed & getattr(run.result, "stalled", torch.zeros_like(failed))
    rest = failed & ~coarse_changed & ~stalled
    exhausted = rest & (run.result.iterations >= run.steps) if run.steps is not None else torch.zeros_like(failed)
    reasons = {
        "coarse_changed": int(coarse_changed.sum()),
        "stalled": int(stalled.sum()),
        "budget_exhausted": int(exhausted.sum()),
        "stopped_early": int((rest & ~exhausted).sum()),
    }
    return {k: v for k, v in reasons.items() if v}


def summarize(run: AttackRun, images: torch.Tensor) -> dict[str, float]:
    """Fooling ratio (%), rho_adv^{2,1,inf} (eq. 10) over all attacked images, iterations, time."""
    summary = {name: float(perceptibility(images, run.result.adversarial, p).mean()) for name, p in PERCEPTIBILITY_NORMS.items()}
    summary["fooling_pct"] = 100.0 * run.result.success_rate
    summary["mean_iterations"] = float(run.result.iterations.float().mean())
    summary["seconds_per_image"] = run.seconds / max(len(images), 1)
    summary["images"] = float(len(images))
    summary["failed"] = float((~run.result.success).sum())
    return summary


TABLE_ROWS = {
    "rho_2": "rho_adv^2",
    "rho_1": "rho_adv^1",
    "rho_inf": "rho_adv^inf",
    "fooling_pct": "Fooling(%)",
    "mean_iterations": "mean iterations",
    "seconds_per_image": "seconds / image",
    "images": "images",
}


def paper_table(summaries: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Tables I/II layout: one row per metric, one column per attack (in the given order)."""
    rows = [{"Algorithm": title, **{label: summary[key] for label, summary in summaries.items()}}
            for key, title in TABLE_ROWS.items()]
    return pd.DataFrame(rows)


def select_correct(model: C2FClassifier, images: torch.Tensor, fine_labels: torch.Tensor,
                   device: torch.device | str = "cpu", batch_size: int = 256) -> torch.Tensor:
    """Mask of images whose coarse and fine two-step predictions are both right.

    Attacking only those makes "label changed" and "misclassified" the same thing, as in
    Algorithm 1 (lines 12 and 16 compare with the ground truth y, z).
    """
    hits = []
    with torch.no_grad():
        for first in range(0, len(images), batch_size):
            coarse, fine = model.predict(images[first : first + batch_size].to(device))
            labels = fine_labels[first : first + batch_size].to(device)
            hits.append(((coarse == model.hierarchy.coarse_of(labels)) & (fine == labels)).cpu())
    return torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool)


# ---------------------------------------------------------------- evaluation sets


def cifar10_eval_set(prepared_dir: str | Path, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """Prepared CIFAR-10 split as float images in [0, 1] and global fine labels (= CIFAR classes)."""
    from robex.data.cifar10 import load_cifar10

    images, labels = load_cifar10(prepared_dir, split)
    return images.float() / 255, labels.long()


def imagenet_eval_set(root: str | Path, split: str = "val", limit: int = 1000,
                      mapping_path: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` images (sorted paths) of an ImageNet split restricted to the C2F classes.

    The paper evaluates on "the first 1000 RGB images of the validation set"; labels are
    global fine indices of :func:`robex.data.hierarchy.imagenet_hierarchy`.
    """
    from robex.data.hierarchy import imagenet_hierarchy
    from robex.data.imagenet import WnidImageFolder, imagenet_transform

    hierarchy = imagenet_hierarchy(mapping_path)
    dataset = WnidImageFolder(Path(root) / split, hierarchy.fine_ids, transform=imagenet_transform())
    count = min(limit, len(dataset))
    if count == 0:
        raise FileNotFoundError(f"ImageNet folder {str(Path(root) / split)!r} holds no images of the C2F classes; check data.imagenet_root")
    # decoding JPEGs is per file by nature; this loop is I/O, not a tensor hot path
    pairs = [dataset[i] for i in tqdm(range(count), desc="decode imagenet", mininterval=2)]
    return torch.stack([image for image, _ in pairs]), torch.tensor([label for _, label in pairs])


# ---------------------------------------------------------------- figures


def _heatmap(ax, relevance: torch.Tensor, title: str) -> None:
    """Channel-summed relevance, red positive / blue negative, symmetric colour scale."""
    heat = relevance.sum(0).cpu().numpy()
    limit = max(float(abs(heat).max()), 1e-12)
    ax.imshow(heat, cmap="bwr", vmin=-limit, vmax=limit)
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def _image(ax, image: torch.Tensor, title: str) -> None:
    ax.imshow(image.permute(1, 2, 0).clamp(0, 1).cpu().numpy())
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def lrp_panel(
    model: C2FClassifier,
    image: torch.Tensor,
    fine_label: int,
    level: str,
    adversarials: dict[str, torch.Tensor],
    class_names: Callable[[int], str] | None = None,
):
    """Fig. 1 (coarse) / Fig. 2 (fine) for one image: a column for the benign image and one per attack.

    Rows: LRP of the original class (r_org / f_org) with ||R+||_1 and ||R-||_1, LRP of the
    runner-up class (r_adv / f_adv, eq. 6/8, fixed from the benign image), and the image with
    its predicted label and score (benign) or the perturbation (attacks, rescaled to be seen).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hierarchy = model.hierarchy
    device = next(model.parameters()).device
    coarse = int(hierarchy.coarse_of(torch.tensor([fine_label]))[0])
    if level == "coarse":
        head, names = model.coarse, list(hierarchy.coarse_names)
    else:
        head = model.fine[coarse]
        names = [hierarchy.fine_names[f] for f in hierarchy.members(coarse)]
    explainer = LRP(head)
    columns = {"benign": image, **adversarials}
    batch = torch.stack(list(columns.values())).to(device)
    with torch.no_grad():
        probabilities = head(batch).softmax(1)
    original, runner_up = probabilities[0].topk(2).indices.tolist()
    count = len(columns)
    _, relevance_org = explainer(batch, torch.full((count,), original, device=device))
    _, relevance_adv = explainer(batch, torch.full((count,), runner_up, device=device))
    figure, axes = plt.subplots(3, count, figsize=(1.9 * count, 6.2), squeeze=False)
    for column, (label, picture) in enumerate(columns.items()):
        for row, (heatmap, cls) in enumerate(((relevance_org[column], original), (relevance_adv[column], runner_up))):
            positive = float(heatmap.clamp(min=0).sum())
            negative = float((-heatmap).clamp(min=0).sum())
            role = ("r" if level == "coarse" else "f") + ("_org" if row == 0 else "_adv")
            _heatmap(axes[row, column], heatmap.detach(), f"{label}: LRP {role}={names[cls]}\n|R+|={positive:.3g} |R-|={negative:.3g}")
        prediction = int(probabilities[column].argmax())
        score = float(probabilities[column, prediction])
        if column == 0:
            _image(axes[2, 0], picture, f"benign: {names[prediction]} ({score:.2f})")
        else:
            eta = picture - image
            scale = max(float(eta.abs().max()), 1e-12)
            _image(axes[2, column], 0.5 + 0.5 * eta / scale,
                   f"eta (x{0.5 / scale:.0f}), ||eta||inf={255 * float(eta.abs().max()):.1f}/255\n-> {names[prediction]} ({score:.2f})")
    figure.suptitle(f"{level}-level attacks, true class {hierarchy.fine_names[fine_label]}", fontsize=9)
    figure.tight_layout()
    return figure


def failure_summary_rows(failures: dict[str, dict[str, int]]) -> pd.DataFrame:
    """One row per attack and failure reason (empty frame when nothing failed)."""
    rows = [{"attack": label, "reason": reason, "images": count} for label, reasons in failures.items() for reason, count in reasons.items()]
    return pd.DataFrame(rows, columns=["attack", "reason", "images"])


def attack_label(spec: dict) -> str:
    """Column title: "LRPC eps=10", "DFC", "PGDF eps=8"."""
    name = spec["name"].upper()
    return f"{name} eps={spec['eps']:g}" if name.startswith("LRP") and "eps" in spec else name


def expand_suite(suite: dict) -> list[dict]:
    """Attack specs of a Tables I/II suite: each LRP attack once per ``lrp_eps``, then the baselines.

    ``suite`` is a plain dict with ``coarse``/``fine`` name lists and the shared ``lrp``,
    ``pgd`` and ``deepfool`` options (see conf/attack/c2f_tables.yaml).
    """
    specs = []
    for level in ("coarse", "fine"):
        for name in suite.get(level, []):
            if name.lower().startswith("lrp"):
                specs += [{"name": name, "eps": eps, **suite["lrp"]} for eps in suite["lrp_eps"]]
            elif name.lower().startswith("pgd"):
                specs.append({"name": name, **suite["pgd"]})
            elif name.lower().startswith("df"):
                specs.append({"name": name, **suite["deepfool"]})
            else:
                raise ValueError(f"unknown attack {name!r} in the {level} list; use lrpc/dfc/pgdc (coarse) or lrpf/dff/pgdf (fine)")
    return specs


def attack_specs(attack: dict) -> list[dict]:
    """The attacks one stage run evaluates: a Tables I/II suite (``coarse``/``fine`` lists, see
    :func:`expand_suite`) or one attack's options without its output ``label``."""
    if "coarse" in attack or "fine" in attack:
        return expand_suite(attack)
    return [{k: v for k, v in attack.items() if k != "label"}]


def evaluate_c2f_attack(
    model: C2FClassifier, spec: dict, images: torch.Tensor, fine_labels: torch.Tensor, batch_size: int, device: torch.device,
) -> tuple[AttackRun, dict[str, float], dict[str, int]]:
    """Run one attack spec (``name`` plus its options) on every image: the run, its Table I/II
    column (:func:`summarize`) and why it failed where it did (:func:`failure_reasons`)."""
    options = {k: v for k, v in spec.items() if k != "name"}
    attack = make_c2f_attack(model, spec["name"], **options)
    run = run_c2f_attack(attack, images, fine_labels, attack_label(spec), batch_size, device, steps=spec.get("steps"))
    return run, summarize(run, images), failure_reasons(model, run, images, fine_labels, device)
