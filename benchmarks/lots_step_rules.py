"""LOTS step rules side by side: steps, share within tau, and how close each rule's maps are to the
thesis rule's (Algorithm 1 with alpha 1/255, 500 iterations), on the same images in one run.

Besides the faster rules (``polyak`` at several L-inf caps, ``backtracking``) it runs the thesis
rule itself with other settings of its own: twice the step for half the iterations (the same
L-inf path budget), 400 instead of 500 iterations, and run on until it is within tau (more
iterations, at alpha and at alpha / 2). How far those maps move is the scale on which "the same
maps" can be asked of a faster rule at all. The ``thesis_first_N_steps`` rows are the thesis rule's
own path cut after N steps: a rule allowed N forward/backward passes (LOTS/Grad-CAM <= 50x needs
N <= ~70 here) must reach, in N steps, a map that the thesis rule itself only reaches after ~500.

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
from robex.explain.lots import THESIS_ALPHA, lots
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
)


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
    converged_maps = None
    for name, rule, cap, iterations, alpha in RULES:
        if name in args.skip:
            continue
        summary, maps = run(rule, cap, iterations, alpha)
        similarity = pearson_per_image(reference_maps, maps)
        summary["map_pearson_to_thesis"] = {"mean": round(float(similarity.mean()), 4), "min": round(float(similarity.min()), 4)}
        if name == "thesis_until_tau_3000_iterations":
            converged_maps = maps
        elif converged_maps is not None:
            to_converged = pearson_per_image(converged_maps, maps)
            summary["map_pearson_to_thesis_until_tau"] = {"mean": round(float(to_converged.mean()), 4), "min": round(float(to_converged.min()), 4)}
        rows[name] = summary
        print(json.dumps({name: summary}), flush=True)
    result = {"command": "python benchmarks/lots_step_rules.py " + " ".join(sys.argv[1:]), "model": args.model, "images": len(images), "blur_size": args.blur_size, "tau": 0.1, "target": "zero (network output)",
              "timing": "process CPU time (1 thread)", "rules": rows}
    emit(result, args.out)


if __name__ == "__main__":
    main()
