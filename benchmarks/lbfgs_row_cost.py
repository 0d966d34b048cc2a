"""What batching can buy the L-BFGS attack: model forward+backward cost per image row, by batch size.

The lockstep L-BFGS (robex.attacks.lbfgs) keeps every image's trajectory and answers all images'
objective evaluations with one batched model call. So at equal success and distance (the cold
search, the per-image algorithm unchanged) its speed-up over the per-image loop is at most

    cost per row at batch 1 / cost per row at the lockstep's batch,

and less where few images are left in the batch (the c search's tail). This script measures that
ceiling for a model: the loss and gradient the attack evaluates (distance + weight * CE), per row,
for each batch size. On a CPU the conv layers are compute-bound already at batch 1, so the ceiling
is small; on a GPU it is large. Prints JSON (and writes it with --out).

    OMP_NUM_THREADS=1 python benchmarks/lbfgs_row_cost.py --model weights/cifar_cnn/model.pt \
        --out docs/benchmarks/lbfgs_row_cost.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _report import emit

from robex.models.cifar_cnn import CifarCNN
from robex.models.io import load_model


def row_cost_ms(model, batch: int, device: str, seconds: float) -> float:
    """Median over repeats of (one objective value and gradient for ``batch`` images) / batch, in ms."""
    x = torch.rand(batch, 3, 32, 32, device=device)
    if device == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)  # as the attack feeds it
    origin, targets = x.detach().clone(), torch.randint(0, 10, (batch,), device=device)
    x.requires_grad_(True)

    def once() -> None:
        logits = model(x)
        objective = (x - origin).abs().flatten(1).mean(1) + 0.01 * F.cross_entropy(logits.softmax(1), targets, reduction="none")
        torch.autograd.grad(objective.sum(), x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(3):  # warm-up: allocator, kernel choice
        once()
    timings, began = [], time.perf_counter()
    while time.perf_counter() - began < seconds or len(timings) < 5:
        start = time.perf_counter()
        once()
        timings.append(time.perf_counter() - start)
    timings.sort()
    return 1000 * timings[len(timings) // 2] / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="weights/cifar_cnn/model.pt")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16, 64, 270])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per batch size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    torch.manual_seed(0)
    trained = Path(args.model).is_file()
    model = load_model(args.model, args.device) if trained else CifarCNN().to(args.device).eval()
    costs = {str(batch): round(row_cost_ms(model, batch, args.device, args.seconds), 4) for batch in args.batch_sizes}
    single = costs[str(args.batch_sizes[0])]
    report = {
        "command": "OMP_NUM_THREADS=1 python " + " ".join(sys.argv),
        "model": args.model if trained else "random CifarCNN (no trained model found)",
        "device": args.device, "torch_threads": torch.get_num_threads(),
        "objective": "mean |x - x0| + 0.01 * CE(softmax(logits)) and its input gradient (the paper objective)",
        "ms_per_row_by_batch": costs,
        "lockstep_ceiling_over_loop": {batch: round(single / cost, 3) for batch, cost in costs.items()},
    }
    emit(report, args.out)


if __name__ == "__main__":
    main()
