"""LOTS vs Grad-CAM: milliseconds per image on the same model and images, in one run, for the
thesis' step rule and a faster one, plus how far the faster rule's maps and metrics move.

The thesis (Table 5.3) reports LOTS at 25-63 s per image, 1,152x (DenseNet-121) to 2,260x
(AlexNet) Grad-CAM. Both LOTS runs use the thesis' defaults (zero target at the network output,
tau 0.1, 500 iterations, alpha 1/255); the fast run changes only the step rule.

    OMP_NUM_THREADS=1 python benchmarks/lots_vs_gradcam.py --model outputs/reference/train/cifar_cnn/model.pt \
        --data outputs/reference/data/cifar10 --images 20 --out docs/benchmarks/lots_vs_gradcam.json

It also measures how far the thesis rule's own maps move with its own settings (the same run at
400 iterations, and alpha 2/255 for 250 iterations: the same L-inf path budget), the scale
against which the fast rule's map agreement should be read.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _report import emit

from robex.explain.cam import LibraryCam
from robex.explain.data import cifar10_subset
from robex.explain.evaluate import METRIC_COLUMNS, LotsExplainer, evaluate_explainer
from robex.explain.layers import CAM_LAYERS
from robex.explain.lots import THESIS_ALPHA, THESIS_ITERATIONS, THESIS_TAU
from robex.explain.metrics import pearson_per_image
from robex.models.io import load_model


def timed(explainer, images: torch.Tensor, classes: torch.Tensor, batch_size: int, device: torch.device) -> tuple[float, float]:
    """(wall, CPU) milliseconds per image over all images, in batches of ``batch_size``.

    On a shared CPU the wall time depends on what else runs; the process' CPU time (one thread)
    does much less, so the ratios below use it on CPU and the wall time on CUDA."""
    wall = cpu = 0.0
    for start in range(0, len(images), batch_size):
        batch, batch_classes = images[start : start + batch_size], classes[start : start + batch_size]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        began, began_cpu = time.perf_counter(), time.process_time()
        explainer(batch, batch_classes)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall, cpu = wall + time.perf_counter() - began, cpu + time.process_time() - began_cpu
    return wall * 1000 / len(images), cpu * 1000 / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="outputs/reference/train/cifar_cnn/model.pt")
    parser.add_argument("--backbone", default="cifar_cnn", help="name in robex.explain.layers.CAM_LAYERS (the CAM layer)")
    parser.add_argument("--data", default="outputs/reference/data/cifar10", help="prepared CIFAR-10 folder")
    parser.add_argument("--images", type=int, default=20, help="first N/10 test images of each class")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--fast-rule", default="polyak", choices=["backtracking", "polyak"])
    parser.add_argument("--max-alpha", type=float, default=2 / 255, help="L-inf step cap of the polyak rule")
    parser.add_argument("--blur-size", type=int, default=7)
    parser.add_argument("--metric-steps", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()

    device = torch.device(args.device)
    model = load_model(Path(args.model), device=device)
    images, labels = cifar10_subset(args.data, "test", max(1, args.images // 10))
    images, labels = images[: args.images].to(device), labels[: args.images]
    with torch.no_grad():
        classes = model(images).argmax(dim=1)

    grad_cam = LibraryCam(model, CAM_LAYERS[args.backbone], "grad_cam")
    grad_cam(images[:2], classes[:2])  # warm-up: first calls pay for lazy imports and allocations
    grad_cam_wall, grad_cam_cpu = timed(grad_cam, images, classes, args.batch_size, device)
    grad_cam_ms = grad_cam_wall if device.type == "cuda" else grad_cam_cpu
    runs = {}
    for rule in ("thesis", args.fast_rule):
        explainer = LotsExplainer(model, None, None, THESIS_ITERATIONS, THESIS_TAU, THESIS_ALPHA, "euclidean", args.blur_size,
                                  step_rule=rule, max_alpha=args.max_alpha)
        explainer.record = True
        wall, cpu = timed(explainer, images, classes, args.batch_size, device)
        ms = wall if device.type == "cuda" else cpu
        recorded = explainer.recorded()
        scores = evaluate_explainer(model, explainer, images, "lots", args.batch_size, args.metric_steps, 5, 2.0, progress=False)
        runs[rule] = {"ms": ms, "wall": wall, "recorded": recorded, "scores": scores}
    thesis, fast = runs["thesis"], runs[args.fast_rule]
    similarity = pearson_per_image(thesis["scores"].maps, fast["scores"].maps)
    both = thesis["recorded"].converged & fast["recorded"].converged
    sensitivity = {}
    for label, iterations, alpha in (("iterations_400", 400, THESIS_ALPHA), ("alpha_2_255_iterations_250", 250, 2 * THESIS_ALPHA)):
        other = LotsExplainer(model, None, None, iterations, THESIS_TAU, alpha, "euclidean", args.blur_size)
        other_maps = torch.cat([other(images[i : i + args.batch_size], classes[i : i + args.batch_size]) for i in range(0, len(images), args.batch_size)])
        moved = pearson_per_image(thesis["scores"].maps, other_maps.cpu())
        sensitivity[label] = {"mean": round(float(moved.mean()), 4), "min": round(float(moved.min()), 4)}

    def summary(run) -> dict:
        return {
            "ms_per_image": round(run["ms"], 2),
            "wall_ms_per_image": round(run["wall"], 2),
            "mean_steps": round(float(run["recorded"].steps.float().mean()), 1),
            "converged_pct": round(float(run["recorded"].converged.float().mean() * 100), 1),
            **{key: round(value, 2) for key, value in run["scores"].summary().items() if key in METRIC_COLUMNS},
        }

    result = {
        "model": args.model,
        "model_accuracy_on_these_images": round(float((classes.cpu() == labels).float().mean()), 3),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "images": len(images),
        "batch_size": args.batch_size,
        "cam_layer": CAM_LAYERS[args.backbone],
        "lots": {"iterations": THESIS_ITERATIONS, "tau": THESIS_TAU, "alpha": THESIS_ALPHA, "target": "zero", "layer": "output"},
        "fast_rule": {"step_rule": args.fast_rule, "max_alpha": args.max_alpha if args.fast_rule == "polyak" else None},
        "timing": "process CPU time (1 thread)" if device.type != "cuda" else "wall time",
        "grad_cam_ms_per_image": round(grad_cam_ms, 3),
        "grad_cam_wall_ms_per_image": round(grad_cam_wall, 3),
        "lots_thesis": summary(thesis),
        "lots_fast": summary(fast),
        "lots_over_gradcam": round(thesis["ms"] / grad_cam_ms, 1),
        "lots_over_gradcam_fast": round(fast["ms"] / grad_cam_ms, 1),
        "fast_over_thesis_steps": round(float(fast["recorded"].steps.float().mean() / thesis["recorded"].steps.float().mean()), 3),
        "fast_vs_thesis_map_pearson": {"mean": round(float(similarity.mean()), 4), "min": round(float(similarity.min()), 4)},
        "fast_vs_thesis_map_pearson_where_both_converged": {
            "images": int(both.sum()),
            "mean": round(float(similarity[both.cpu()].mean()), 4) if both.any() else None,
        },
        "thesis_rule_map_pearson_to_its_own_variants": sensitivity,
        "fast_minus_thesis_metrics": {k: round(fast["scores"].summary()[k] - thesis["scores"].summary()[k], 2) for k in METRIC_COLUMNS},
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
