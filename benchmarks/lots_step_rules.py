"""LOTS step rules side by side: steps, share within tau, and how close each rule's maps are to the
thesis rule's (Algorithm 1 with alpha 1/255, 500 iterations), on the same images in one run.

Besides the faster rules (``polyak`` at several L-inf caps, ``backtracking``) it runs the thesis
rule itself with other settings of its own: twice the step for half the iterations (the same
L-inf path budget), 400 instead of 500 iterations, and run on until it is within tau (more
iterations, at alpha and at alpha / 2). How far those maps move is the scale on which "the same
maps" can be asked of a faster rule at all. The ``thesis_first_N_steps`` rows are the thesis rule's
own path cut after N steps: a rule allowed N forward/backward passes (LOTS/Grad-CAM <= 50x needs
N <= ~70 here) must reach, in N steps, a map that the thesis rule itself only reaches after ~500.

Why larger steps along the same path do not help (session 10): the thesis rule is explicit Euler on
the flow dx/ds = -g / max|g| (g the gradient of eq. 3.1) with step alpha in L-inf arc length, so a
rule that follows the same flow with larger steps would give the same maps faster. The
``heun_euler_*`` row integrates that flow with per-image step sizes chosen by the Heun-Euler
error estimate (h/2 max|d(x + h d) - d(x)| <= tolerance, the standard embedded pair; one
forward/backward pass per trial step, rejected trials counted), and the ``direction_change``
entry measures, along the thesis path, how far the normalised direction d = g / max|g| moves
between consecutive steps (L-inf, at most 2) and the share of pixels whose gradient changes sign:
if d changes by O(1) from one alpha-step to the next, the path is not smooth at a scale above
alpha and no step-size control can take longer steps on it.

    OMP_NUM_THREADS=1 python benchmarks/lots_step_rules.py --model outputs/reference/train/cifar_cnn/model.pt \\
        --data outputs/reference/data/cifar10 --images 20 --out docs/benchmarks/lots_step_rules.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from _report import emit

from robex.explain.data import cifar10_subset
from robex.explain.layers import FeatureExtractor
from robex.explain.lots import THESIS_ALPHA, THESIS_TAU, Distance, _features_and_gradients, lots
from robex.explain.metrics import pearson_per_image
from robex.explain.visualize import lots_activation_map
from robex.models.io import load_model

# (name, step rule, L-inf cap in units of 1/255, iterations, alpha in units of 1/255)
RULES = (
    ("thesis_first_50_steps", "thesis", None, 50, 1.0),
    ("thesis_first_70_steps", "thesis", None, 70, 1.0),
    ("thesis_first_100_steps", "thesis", None, 100, 1.0),
    ("thesis_first_200_steps", "thesis", None, 200, 1.0),
    ("thesis_400_iterations", "thesis", None, 400, 1.0),
    ("thesis_alpha_2_255_250_iterations", "thesis", None, 250, 2.0),
    ("backtracking", "backtracking", None, 500, 1.0),
    ("polyak_cap_2_255", "polyak", 2.0, 500, 1.0),
    ("polyak_cap_4_255", "polyak", 4.0, 500, 1.0),
    ("polyak_cap_8_255", "polyak", 8.0, 500, 1.0),
    ("thesis_until_tau_3000_iterations", "thesis", None, 3000, 1.0),
    ("thesis_alpha_half_until_tau_4000_iterations", "thesis", None, 4000, 0.5),
    ("backtracking_until_tau_3000_iterations", "backtracking", None, 3000, 1.0),
)
UNTIL_TAU_REFERENCES = {"thesis_until_tau_3000_iterations": "map_pearson_to_thesis_until_tau",
                         "thesis_alpha_half_until_tau_4000_iterations": "map_pearson_to_thesis_alpha_half_until_tau"}
HEUN_EULER_TOLERANCE_255 = 1.0  # the thesis' own step: a local path error of alpha per step


def _direction(gradient: torch.Tensor) -> torch.Tensor:
    return gradient / gradient.flatten(1).abs().amax(dim=1).clamp_min(torch.finfo(gradient.dtype).tiny).view(-1, 1, 1, 1)


def heun_euler_lots(model, images: torch.Tensor, tolerance: float, iterations: int, tau: float = THESIS_TAU):
    """LOTS (zero target, network output) along the thesis rule's flow with adaptive step sizes.

    Written here, not in robex.explain.lots: it is the experiment that shows such a rule gains
    nothing on this model (see the module docstring). Returns the adversarials, forward/backward
    passes per image, converged flags and the mean accepted L-inf step per image.
    """
    extractor = FeatureExtractor(model, None)
    batch = len(images)
    current = images.detach().clamp(0, 1).clone()
    result = current.clone()
    passes = torch.ones(batch, dtype=torch.long)
    converged = torch.zeros(batch, dtype=torch.bool)
    accepted_sum, accepted_count = torch.zeros(batch), torch.zeros(batch)
    active = torch.arange(batch)
    step = torch.full((batch,), THESIS_ALPHA)
    gap, _, gradient = _features_and_gradients(extractor, current, None, Distance.euclidean, 4)
    direction = _direction(gradient)
    while active.numel():
        done = (gap <= tau) | (passes[active] >= iterations + 1)
        if done.any():
            finished = active[done]
            result[finished], converged[finished] = current[done], gap[done] <= tau
            keep = ~done
            active, current, gap, direction, step = active[keep], current[keep], gap[keep], direction[keep], step[keep]
            if not active.numel():
                break
        trial = (current - step.view(-1, 1, 1, 1) * direction).clamp(0, 1)
        trial_gap, _, trial_gradient = _features_and_gradients(extractor, trial, None, Distance.euclidean, 4)
        passes[active] += 1
        trial_direction = _direction(trial_gradient)
        error = step / 2 * (trial_direction - direction).flatten(1).abs().amax(dim=1)
        accept = (error <= tolerance) | (trial_gap <= tau)
        accepted_sum[active] += torch.where(accept, step, torch.zeros_like(step))
        accepted_count[active] += accept.float()
        current = torch.where(accept.view(-1, 1, 1, 1), trial, current)
        gap = torch.where(accept, trial_gap, gap)
        direction = torch.where(accept.view(-1, 1, 1, 1), trial_direction, direction)
        step = step * (0.9 * (tolerance / error.clamp_min(1e-12)).sqrt()).clamp(0.3, 2.0)
    return result, passes - 1, converged, accepted_sum / accepted_count.clamp_min(1)


HEAVY_BALL = ((1.0, 0.5), (1.0, 0.9), (2.0, 0.9), (4.0, 0.9))  # (alpha in units of 1/255, momentum)


def heavy_ball_lots(model, images: torch.Tensor, alpha: float, momentum: float, iterations: int, tau: float = THESIS_TAU):
    """LOTS (zero target, network output) with Polyak's heavy ball on the thesis' normalised direction:
    v <- momentum v + g / max|g|, x <- clamp(x - alpha v / max|v|, 0, 1), until distance <= tau.

    Benchmark only: the momentum averages out the step-to-step sign flips that ``direction_change``
    measures, so it reaches tau in fewer passes, but along another path, i.e. to another
    adversarial and map; the rows say how far.
    """
    extractor = FeatureExtractor(model, None)
    batch = len(images)
    current = images.detach().clamp(0, 1).clone()
    result = current.clone()
    passes = torch.zeros(batch, dtype=torch.long)
    converged = torch.zeros(batch, dtype=torch.bool)
    velocity = torch.zeros_like(current)
    active = torch.arange(batch)
    for iteration in range(iterations + 1):
        gap, _, gradient = _features_and_gradients(extractor, current, None, Distance.euclidean, 4)
        done = (gap <= tau) | (iteration == iterations)
        if done.any():
            finished = active[done]
            result[finished], converged[finished], passes[finished] = current[done], gap[done] <= tau, iteration
            keep = ~done
            active, current, gradient, velocity = active[keep], current[keep], gradient[keep], velocity[keep]
            if not active.numel():
                break
        velocity = momentum * velocity + _direction(gradient)
        current = (current - alpha * _direction(velocity)).clamp(0, 1)
    return result, passes, converged


def direction_change_along_thesis_path(model, images: torch.Tensor, steps: int) -> dict:
    """Per consecutive pair of thesis steps: max|d_k+1 - d_k| and the share of pixels whose gradient sign flips."""
    extractor = FeatureExtractor(model, None)
    current = images.detach().clamp(0, 1).clone()
    _, _, gradient = _features_and_gradients(extractor, current, None, Distance.euclidean, 4)
    changes, flips = [], []
    for _ in range(steps):
        current = (current - THESIS_ALPHA * _direction(gradient)).clamp(0, 1)
        _, _, following = _features_and_gradients(extractor, current, None, Distance.euclidean, 4)
        changes.append((_direction(following) - _direction(gradient)).flatten(1).abs().amax(dim=1))
        flips.append(((following * gradient) < 0).flatten(1).float().mean(dim=1))
        gradient = following
    changes, flips = torch.stack(changes), torch.stack(flips)
    return {"steps": steps, "median_linf_change_of_direction": round(float(changes.median()), 4),
            "share_of_steps_with_change_above_1": round(float((changes > 1).float().mean()), 4),
            "median_share_of_pixels_flipping_sign": round(float(flips.median()), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="outputs/reference/train/cifar_cnn/model.pt")
    parser.add_argument("--data", default="outputs/reference/data/cifar10", help="prepared CIFAR-10 folder")
    parser.add_argument("--images", type=int, default=20, help="first N/10 test images of each class")
    parser.add_argument("--blur-size", type=int, default=7)
    parser.add_argument("--skip", nargs="*", default=[], help="rule names to leave out (the long until-tau runs take minutes)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    model = load_model(Path(args.model), device=torch.device("cpu")).eval()
    images, _ = cifar10_subset(args.data, "test", max(1, args.images // 10))
    images = images[: args.images]

    def run(rule: str, cap: float | None, iterations: int, alpha: float) -> tuple[dict, torch.Tensor]:
        began = time.process_time()
        result = lots(model, images, iterations=iterations, alpha=alpha * THESIS_ALPHA, step_rule=rule,
                      max_alpha=None if cap is None else cap * THESIS_ALPHA)
        seconds = time.process_time() - began
        summary = {"step_rule": rule, "iterations": iterations, "alpha_255": alpha, "max_alpha_255": cap,
                   "mean_steps": round(float(result.steps.float().mean()), 1),
                   "converged_pct": round(float(result.converged.float().mean() * 100), 1),
                   "mean_final_distance": round(float(result.distance.mean()), 3), "cpu_s": round(seconds, 1)}
        return summary, lots_activation_map(images, result.adversarial, args.blur_size)

    reference, reference_maps = run("thesis", None, 500, 1.0)
    rows = {"thesis": reference}
    references = {"map_pearson_to_thesis": reference_maps}  # later rows are also compared with the until-tau runs

    def compare(name: str, summary: dict, maps: torch.Tensor) -> None:
        for key, other in references.items():
            similarity = pearson_per_image(other, maps)
            summary[key] = {"mean": round(float(similarity.mean()), 4), "min": round(float(similarity.min()), 4)}
        if name in UNTIL_TAU_REFERENCES:
            references[UNTIL_TAU_REFERENCES[name]] = maps
        rows[name] = summary
        print(json.dumps({name: summary}), flush=True)

    for name, rule, cap, iterations, alpha in RULES:
        if name not in args.skip:
            compare(name, *run(rule, cap, iterations, alpha))
    name = f"heun_euler_tol_{HEUN_EULER_TOLERANCE_255:g}_255_until_tau_3000_passes"
    if name not in args.skip:
        began = time.process_time()
        adversarial, passes, converged, mean_step = heun_euler_lots(model, images, HEUN_EULER_TOLERANCE_255 * THESIS_ALPHA, 3000)
        summary = {"step_rule": "heun_euler (benchmark only)", "iterations": 3000, "tolerance_255": HEUN_EULER_TOLERANCE_255,
                   "mean_steps": round(float(passes.float().mean()), 1), "converged_pct": round(float(converged.float().mean() * 100), 1),
                   "mean_accepted_step_255": round(float(mean_step.mean() * 255), 3), "cpu_s": round(time.process_time() - began, 1)}
        compare(name, summary, lots_activation_map(images, adversarial, args.blur_size))
    for alpha_255, momentum in HEAVY_BALL:
        name = f"heavy_ball_momentum_{momentum:g}_alpha_{alpha_255:g}_255_until_tau_3000_passes"
        if name in args.skip:
            continue
        began = time.process_time()
        adversarial, passes, converged = heavy_ball_lots(model, images, alpha_255 * THESIS_ALPHA, momentum, 3000)
        summary = {"step_rule": "heavy_ball (benchmark only)", "iterations": 3000, "alpha_255": alpha_255, "momentum": momentum,
                   "mean_steps": round(float(passes.float().mean()), 1), "converged_pct": round(float(converged.float().mean() * 100), 1),
                   "cpu_s": round(time.process_time() - began, 1)}
        compare(name, summary, lots_activation_map(images, adversarial, args.blur_size))
    changes = None if "direction_change" in args.skip else direction_change_along_thesis_path(model, images, 500)
    result = {"command": "python benchmarks/lots_step_rules.py " + " ".join(sys.argv[1:]), "model": args.model, "images": len(images), "blur_size": args.blur_size, "tau": 0.1, "target": "zero (network output)",
              "timing": "process CPU time (1 thread)", "rules": rows,
              "direction_change": changes}
    emit(result, args.out)


if __name__ == "__main__":
    main()
