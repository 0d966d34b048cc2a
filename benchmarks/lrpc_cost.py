"""Cost of one LRPC iteration vs one PGD iteration, old and new LRPC in one run; prints JSON.

"old" is the previous implementation (kept here verbatim in spirit as the reference): two
heatmaps from a doubled batch through zennit's ``Gradient`` attributor, with create_graph, then
the second backward. "new" is :func:`robex.attacks.lrp_attack.lrp_loss`: one forward and one
backward with the signed start R^L(org) - R^L(adv) (loss (7) with p = 1 is the sum of that one
heatmap) and the one-branch z+ (ZPlus's negative-input branch is zero behind ReLUs). All three run a fixed number of full steps on the coarse classifier of the same C2F
model over the same images (no early stop), so the comparison is per image-iteration:

    OMP_NUM_THREADS=1 python benchmarks/lrpc_cost.py --model outputs/train/c2f_cifar/model.pt --images 32 --steps 10
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def old_loss_and_grad(lrp, images: torch.Tensor) -> torch.Tensor:
    """The previous LRPC step: doubled batch, zennit Gradient attributor, loss from both heatmaps."""
    from zennit.attribution import Gradient

    from robex.attacks.lrp_attack import lrp_attack_loss

    count = len(images)
    probe = images.detach().requires_grad_(True)
    doubled = torch.cat([probe, probe])

    def org_then_adv(logits: torch.Tensor) -> torch.Tensor:
        top2 = logits[:count].detach().topk(2, dim=1).indices
        chosen = torch.cat([top2[:, 0], top2[:, 1]])
        return lrp.start(logits, chosen, True)

    with Gradient(lrp.model, lrp.composite, create_graph=True) as attributor:
        _, heatmaps = attributor(doubled, org_then_adv)
    loss = lrp_attack_loss(heatmaps[:count], heatmaps[count:])
    (grad,) = torch.autograd.grad(loss.sum(), probe)
    return grad


def new_loss_and_grad(lrp, images: torch.Tensor) -> torch.Tensor:
    from robex.attacks.lrp_attack import lrp_loss

    probe = images.detach().requires_grad_(True)
    loss, _ = lrp_loss(lrp, probe)
    (grad,) = torch.autograd.grad(loss.sum(), probe)
    return grad


def pgd_grad(model, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    probe = images.detach().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(probe), labels)
    (grad,) = torch.autograd.grad(loss, probe)
    return grad


def timed_steps(step, images: torch.Tensor, steps: int, eps: float) -> tuple[float, float]:
    """(wall, CPU) seconds for ``steps`` sign steps of size eps/10 driven by ``step(x) -> gradient``.

    The CPU time of this process is what the ratios use: on a machine shared with other jobs the
    wall time mostly measures the neighbours (run with OMP_NUM_THREADS=1 so CPU time = work).
    """
    from robex.attacks.pgd import clip_linf

    adversarial = images.clone()
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        grad = step(adversarial)
        adversarial = clip_linf(adversarial - eps / 10 * grad.sign(), images, eps).detach()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - cpu_start


def main() -> None:
    from robex.attacks.lrp_attack import LRP, LRPOptions
    from robex.data.cifar10 import load_cifar10
    from robex.models.io import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="outputs/train/c2f_cifar/model.pt")
    parser.add_argument("--data", default="outputs/data/cifar10")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5, help="best of this many interleaved timings per method")
    parser.add_argument("--eps", type=float, default=10, help="L-inf bound on the 0..255 scale")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    model = load_model(args.model, args.device).eval()
    images, fine = load_cifar10(args.data, "test")
    images = images[: args.images].float().div(255).to(args.device)
    coarse = model.hierarchy.coarse_of(fine[: args.images]).to(args.device)
    eps = args.eps / 255
    options = LRPOptions()  # the working configuration (the cost does not depend on the start)
    lrp = LRP(model.coarse, options)
    old_lrp = LRP(model.coarse, options, one_branch_zplus=False)  # the old code used zennit's two-branch ZPlus
    methods = {
        "pgd": lambda x: -pgd_grad(model.coarse, x, coarse[: len(x)]),  # PGD ascends: the step subtracts the sign
        "lrpc_old": lambda x: old_loss_and_grad(old_lrp, x),
        "lrpc_new": lambda x: new_loss_and_grad(lrp, x),
    }
    # same direction from old and new: the identity sum R_org - sum R_adv = loss (7) holds
    agreement = float(torch.nn.functional.cosine_similarity(
        old_loss_and_grad(old_lrp, images).flatten(1), new_loss_and_grad(lrp, images).flatten(1)).min())
    # what differs from a plain margin attack: the working loss is f_org - f_adv minus the relevance the
    # positive biases absorb (zennit's ZPlus), so compare its gradient with the logit margin's
    probe = images.detach().requires_grad_(True)
    top2 = model.coarse(probe).topk(2, dim=1).values
    (margin_gradient,) = torch.autograd.grad((top2[:, 0] - top2[:, 1]).sum(), probe)
    margin_cosine = torch.nn.functional.cosine_similarity(new_loss_and_grad(lrp, images).flatten(1), margin_gradient.flatten(1))
    for step in methods.values():
        timed_steps(step, images[:2], 1, eps)  # warm-up
    # interleaved repeats, best of each: the methods see the same load on a shared machine
    best = {name: (float("inf"), float("inf")) for name in methods}
    for _ in range(args.repeats):
        for name, step in methods.items():
            wall, cpu = timed_steps(step, images, args.steps, eps)
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    count = args.images * args.steps
    results = {name: {"wall_seconds": wall, "cpu_seconds": cpu, "image_iterations": count,
                      "wall_ms_per_image_iteration": 1000 * wall / count, "ms_per_image_iteration": 1000 * cpu / count}
               for name, (wall, cpu) in best.items()}
    per = {name: r["ms_per_image_iteration"] for name, r in results.items()}  # CPU ms (see timed_steps)
    print(json.dumps({
        "images": args.images, "steps": args.steps, "device": str(args.device), "threads": torch.get_num_threads(),
        "model": args.model, **results,
        "min_cosine_old_vs_new_gradient": agreement,
        "cosine_lrpc_vs_logit_margin_gradient": {"mean": float(margin_cosine.mean()), "min": float(margin_cosine.min())},
        "lrpc_old_over_pgd_per_iteration": per["lrpc_old"] / per["pgd"],
        "lrpc_over_pgd_per_iteration": per["lrpc_new"] / per["pgd"],
        "speedup_new_over_old": per["lrpc_old"] / per["lrpc_new"],
    }, indent=2))


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"benchmark: error: {error}") from None
