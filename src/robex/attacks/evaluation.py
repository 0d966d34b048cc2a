"""Evaluation of attacks on coarse-to-fine classifiers (Heidarizadeh et al., Sect. IV), on tensors.

Fooling ratio, perceptibility rho_adv^p (eq. 10) for p = 1, 2, inf, mean iterations, time per
image, and the explainability view the paper argues for (Sect. IV, "our attack concentrates it
on critical image regions"): the share of each perturbation's L1 mass on the top-relevance pixels
of the original class's LRP map. Tables: :mod:`robex.attacks.tables`; figures:
:mod:`robex.attacks.figures`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from robex.attacks.base import AttackResult
from robex.attacks.c2f import C2FAttack, make_c2f_attack
from robex.attacks.lrp_attack import LRP, LRPAttackResult, LRPOptions
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
    progress: bool = False,
) -> AttackRun:
    """Attack ``images`` batch by batch, results gathered on the CPU; ``progress`` shows a bar that
    moves per image as the attack finishes it (its postfix: the LRP iteration)."""
    parts: list[AttackResult] = []
    start = time.perf_counter()
    bar = tqdm(total=len(images), desc=label, unit="image", disable=not progress, mininterval=1)
    for first in range(0, len(images), batch_size):
        batch = images[first : first + batch_size].to(device)
        done = bar.n
        result = attack(batch, fine_labels[first : first + batch_size].to(device), progress=bar)
        bar.n = done + len(batch)  # exact even if an attack reported fewer
        bar.refresh()
        parts.append(result)
    bar.close()
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
    - ``stalled``: the LRP gradient was non-finite or exactly zero, or (LRPF with
      ``guard="backtrack"``) every halving of the step would change the coarse label, so the image
      was frozen;
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


def attack_label(spec: dict) -> str:
    """Column title: "LRPC eps=10", "LRPC eps=10 (working)" (with an LRP ``config``), "DFC", "PGDF"."""
    name = spec["name"].upper()
    label = f"{name} eps={spec['eps']:g}" if name.startswith("LRP") and "eps" in spec else name
    return f"{label} ({spec['config']})" if spec.get("config") else label


def expand_suite(suite: dict) -> list[dict]:
    """Attack specs of a Tables I/II suite: each LRP attack once per LRP configuration and
    ``lrp_eps``, then the baselines.

    ``suite`` is a plain dict with ``coarse``/``fine`` name lists, the shared ``lrp``, ``pgd`` and
    ``deepfool`` options and optionally ``lrp_configs`` (name -> LRP options overriding ``lrp``,
    e.g. ``working`` and ``paper_literal``; see conf/attack/c2f_tables.yaml).
    """
    def given(options: dict | None) -> dict:
        # unset options mean "the attack's default"; `levels` selects specs and is no attack option
        return {k: v for k, v in (options or {}).items() if v is not None and k != "levels"}

    configs = suite.get("lrp_configs") or {"": {}}
    specs = []
    for level in ("coarse", "fine"):
        for name in suite.get(level, []):
            if name.lower().startswith("lrp"):
                # a configuration's optional `levels` restricts it to coarse or fine attacks (e.g. the
                # unguarded LRPF: LRPC has no constraint to guard, so its columns would repeat)
                specs += [{"name": name, "eps": eps, **given(suite.get("lrp")), **given(options), **({"config": config} if config else {})}
                          for config, options in configs.items() if level in ((options or {}).get("levels") or (level,))
                          for eps in suite["lrp_eps"]]
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
    specs = expand_suite(attack) if "coarse" in attack or "fine" in attack else [{k: v for k, v in attack.items() if k != "label"}]
    from robex.attacks.c2f import C2F_ATTACKS
    from robex.utils.errors import RobexError

    unknown = [s["name"] for s in specs if s["name"].lower() not in C2F_ATTACKS]
    if unknown:
        raise RobexError(f"attack {unknown[0]!r} is not a coarse-to-fine attack; choose one of {sorted(C2F_ATTACKS)}")
    # unset (null) options of the schema mean "the attack's default"
    return [{k: v for k, v in spec.items() if v is not None} for spec in specs]


def evaluate_c2f_attack(
    model: C2FClassifier, spec: dict, images: torch.Tensor, fine_labels: torch.Tensor, batch_size: int, device: torch.device,
    progress: bool = False,
) -> tuple[AttackRun, dict[str, float], dict[str, int]]:
    """Run one attack spec (``name`` plus its options) on every image: the run, its Table I/II
    column (:func:`summarize`) and why it failed where it did (:func:`failure_reasons`)."""
    options = {k: v for k, v in spec.items() if k not in ("name", "config")}
    attack = make_c2f_attack(model, spec["name"], **options)
    run = run_c2f_attack(attack, images, fine_labels, attack_label(spec), batch_size, device, steps=spec.get("steps"), progress=progress)
    summary = summarize(run, images)
    summary["top_relevance_share"] = float(relevance_focus(model, run.level, images, fine_labels, run.result.adversarial, device=device).mean())
    return run, summary, failure_reasons(model, run, images, fine_labels, device)


def perturbation_share_on_top_relevance(eta: torch.Tensor, relevance: torch.Tensor, fraction: float = 0.1) -> torch.Tensor:
    """Per image: the share of ||eta||_1 (summed over channels per pixel) that lies on the
    ``fraction`` most relevant pixels (channel-summed relevance, highest first; at least one pixel).

    A perturbation spread evenly over the image gives ``fraction``; one concentrated on what the
    model looks at (the paper's claim for LRPC, Sect. IV and Fig. 1) gives more.
    """
    mass = eta.abs().sum(1).flatten(1)
    score = relevance.sum(1).flatten(1)
    count = max(1, round(fraction * score.shape[1]))
    top = score.topk(count, dim=1).indices
    return mass.gather(1, top).sum(1) / mass.sum(1).clamp_min(1e-12)


def relevance_focus(model: C2FClassifier, level: str, images: torch.Tensor, fine_labels: torch.Tensor,
                    adversarial: torch.Tensor, fraction: float = 0.1, device: torch.device | str = "cpu",
                    batch_size: int = 128) -> torch.Tensor:
    """:func:`perturbation_share_on_top_relevance` of each image against the LRP map of its original
    class (r_org on C for coarse attacks, f_org on F^{r_org} for fine ones) on the benign image.

    The map is the same for every attack (paper rules, zennit bias convention, one-hot start), so
    the numbers compare attacks; images the attack left unperturbed are left out.
    """
    hierarchy = model.hierarchy
    coarse = hierarchy.coarse_of(fine_labels.cpu())
    local = hierarchy.local_index(fine_labels.cpu())
    options = LRPOptions(relevance_init="onehot")
    heads = {None: model.coarse} if level == "coarse" else {int(c): model.fine[int(c)] for c in coarse.unique()}
    shares = torch.full((len(images),), float("nan"))
    for key, head in heads.items():
        rows = torch.arange(len(images)) if key is None else (coarse == key).nonzero().squeeze(1)
        explainer = LRP(head, options)
        classes = coarse if key is None else local
        for first in range(0, len(rows), batch_size):
            part = rows[first : first + batch_size]
            _, relevance = explainer(images[part].to(device), classes[part].to(device))
            eta = (adversarial[part] - images[part]).to(device)
            shares[part] = perturbation_share_on_top_relevance(eta, relevance.detach(), fraction).cpu()
    moved = (adversarial - images).flatten(1).abs().amax(1) > 0
    return shares[moved]


# ---------------------------------------------------------------- the stage's loop


def check_target(name: str, targets: dict) -> dict:
    """The ``targets`` entry called ``name`` (model_path, images loader), or a one-sentence error."""
    from robex.utils.errors import RobexError

    if name not in targets:
        raise RobexError(f"target={name!r} is not configured; choose one of {sorted(targets)} or add it under `targets`")
    return targets[name]


def check_c2f_model(model, path: str) -> C2FClassifier:
    from robex.utils.errors import RobexError

    if not isinstance(model, C2FClassifier):
        raise RobexError(f"model {path!r} is a {type(model).__name__}, not a C2FClassifier; point target at a coarse-to-fine model")
    return model


def correct_subset(model: C2FClassifier, images: torch.Tensor, fine_labels: torch.Tensor, count: int | None,
                   device: torch.device | str, model_path: str = "") -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """The first ``count`` (None: all) images that the model classifies right at both levels
    (:func:`select_correct`), and the split's clean accuracy."""
    from robex.utils.errors import RobexError

    correct = select_correct(model, images, fine_labels, device)
    if not correct.any():
        raise RobexError(f"model {model_path!r} classifies none of the evaluation images correctly; check the model and the data split")
    chosen = correct.nonzero().squeeze(1)[: count]
    coarse_pred = torch.cat([model.predict(images[i : i + 256].to(device))[0].cpu() for i in range(0, len(images), 256)])
    accuracy = {"clean_accuracy_split": float(correct.float().mean()),
                "clean_coarse_accuracy_split": float((coarse_pred == model.hierarchy.coarse_of(fine_labels.cpu())).float().mean()),
                "attacked_images": float(len(chosen))}
    return images[chosen], fine_labels[chosen], accuracy


def metric_key(label: str) -> str:
    """An MLflow-safe metric prefix of a column title: "LRPC eps=10 (working)" -> "LRPC_eps10_working"."""
    import re

    return re.sub(r"_+", "_", re.sub(r"[^\w.-]", "_", label.replace("=", ""))).strip("_")


@dataclass
class SuiteResult:
    """Per level (coarse/fine): column title -> Table I/II summary; failure reasons; the first
    adversarial images of each attack (for the figures)."""

    summaries: dict[str, dict[str, dict[str, float]]]
    failures: dict[str, dict[str, int]]
    examples: dict[str, dict[str, torch.Tensor]]

    def flat_metrics(self) -> dict[str, float]:
        return {f"{label}.{name}": value for level in self.summaries.values() for label, summary in level.items()
                for name, value in summary.items()}


def evaluate_suite(model: C2FClassifier, specs: list[dict], images: torch.Tensor, fine_labels: torch.Tensor,
                   batch_size: int, device: torch.device | str, examples: int = 2, on_result=None, progress: bool = False) -> SuiteResult:
    """Every attack spec over the same images (:func:`evaluate_c2f_attack`); ``on_result(label,
    summary)`` is called after each attack (the stage logs it to MLflow as it goes); ``progress``:
    a bar per attack moving per image, and one over the attacks."""
    import logging

    log = logging.getLogger("robex.attack")
    result = SuiteResult({"coarse": {}, "fine": {}}, {}, {"coarse": {}, "fine": {}})
    for spec in tqdm(specs, desc="attacks", unit="attack", disable=not progress, leave=False):
        label = attack_label(spec)
        run, summary, result.failures[label] = evaluate_c2f_attack(model, spec, images, fine_labels, batch_size, device, progress)
        result.summaries[run.level][label] = summary
        result.examples[run.level][label] = run.result.adversarial[:examples]
        if result.failures[label]:
            log.warning("%s failed on %d of %d images: %s", label, int(summary["failed"]), len(images), result.failures[label])
        log.info("%s: fooling %.1f%%, rho_inf %.4f, top-10%% share %.3f, %.3f s/image", label, summary["fooling_pct"],
                 summary["rho_inf"], summary["top_relevance_share"], summary["seconds_per_image"])
        if on_result is not None:
            on_result(label, summary)
    return result
