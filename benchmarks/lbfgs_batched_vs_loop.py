"""Batched vs. per-image L-BFGS: the old joint batch, the new lockstep batch, and a per-image loop.

One run, the same pairs and settings for every variant:

* ``loop``: robex.attacks.lbfgs.LBFGS called on one pair at a time (Foolbox 2.4's per-image algorithm;
  the reference for success and distance);
* ``old_joint``: the previous robex implementation (below, verbatim): one L-BFGS-B problem over the
  concatenated batch per c-search round;
* ``lockstep``: the new LBFGS on the whole batch (independent per-image problems, evaluations batched);
* ``lockstep_warm``: the same with ``warm_start=True`` and ``warm_start_maxiter``;
* ``lockstep_warm_bisection``: warm start in the bisection solves only (``warm_start_phase=bisection``):
  the doubling solves stay cold, so success is decided as in ``lockstep``.

Prints JSON (and writes it with --out): seconds, success rate, median L2 and target-probability
quantiles of each, ``lbfgs_batched_over_loop`` (loop seconds / seconds of the ``--headline`` variant,
default lockstep_warm; its success and distance are printed beside the loop's) and the ratios of the others.

    OMP_NUM_THREADS=1 python benchmarks/lbfgs_batched_vs_loop.py --pairs 24 --out docs/benchmarks/lbfgs_batched_vs_loop.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import scipy.optimize
import torch
import torch.nn.functional as F
from _report import emit
from tqdm.auto import tqdm

from robex.attacks.base import Attack
from robex.attacks.lbfgs import LBFGS, LBFGSResult
from robex.models.cifar_cnn import CifarCNN
from robex.models.io import load_model

_DOUBLING, _BISECTING, _DONE = 0, 1, 2


class JointLBFGS(Attack):
    """The previous robex LBFGS (commit 0a27c3e), kept verbatim as the benchmark's "old" batched variant:
    one joint L-BFGS-B problem over the whole batch per c-search round, MSE distance only.

    Per image i it minimises, over the box [0, 1]^n with scipy's L-BFGS-B,

        f_i(x) = MSE(x, x_i) + lambda_i * CE(model(x), t_i),

    which is Foolbox 2.4's objective; it has the same minimiser as Szegedy's
    ``c_i * ||x - x_i||_2^2 + CE`` with ``c_i = 1 / (n * lambda_i)``. lambda_i is searched as
    Foolbox does: start at ``2 * tolerance`` and double (at most ``max_doublings`` times) until the
    L-BFGS-B solution is adversarial, then bisect on [0, lambda_high] until the bracket is
    narrower than ``tolerance`` (at most ``max_bisections`` steps). Like Foolbox's ``Adversarial``
    object, every point L-BFGS-B evaluates that lies in the box and hits the target is a
    candidate, and the one closest to x_i (MSE) is returned.

    Batching: all images still searching are optimised in one L-BFGS-B call over the
    concatenated variables, minimising sum_i f_i. The sum separates, so its minimiser is the
    per-image minimisers; lambda_i is a vector. The stopping rule (``factr`` on the relative
    decrease of the sum, ``maxiter``) and the limited-memory Hessian are joint, so trajectories
    differ slightly from per-image runs; ``benchmarks/lbfgs_batched_vs_loop.py`` compares both.
    ``scale`` multiplies the objective (Foolbox uses 1e10) so the relative stopping rule, not
    the absolute gradient tolerance, ends each call.
    """

    def __init__(
        self,
        model,
        tolerance: float = 1e-5,
        initial_ce_weight: float | None = None,
        max_doublings: int = 30,
        max_bisections: int | None = None,
        maxiter: int = 150,
        history_size: int = 15,
        factr: float = 1e7,
        scale: float = 1e10,
        loss_fn=None,
        success_fn=None,
        show_progress: bool = False,
    ) -> None:
        super().__init__(model, targeted=True, loss_fn=loss_fn, success_fn=success_fn)
        if tolerance <= 0 or maxiter < 1 or max_doublings < 1 or scale <= 0:
            raise ValueError(
                f"LBFGS needs tolerance > 0, maxiter >= 1, max_doublings >= 1 and scale > 0 "
                f"(got {tolerance}, {maxiter}, {max_doublings}, {scale})"
            )
        if initial_ce_weight is not None and initial_ce_weight <= 0:
            raise ValueError(f"LBFGS initial_ce_weight must be > 0 (got {initial_ce_weight})")
        if max_bisections is not None and max_bisections < 0:
            raise ValueError(f"LBFGS max_bisections must be >= 0 or None (got {max_bisections})")
        self.tolerance = tolerance
        self.initial_ce_weight = initial_ce_weight if initial_ce_weight is not None else 2 * tolerance
        self.max_doublings, self.max_bisections = max_doublings, max_bisections
        self.maxiter, self.history_size, self.factr, self.scale = maxiter, history_size, factr, scale
        self.show_progress = show_progress

    def _solve(
        self,
        originals: torch.Tensor,
        targets: torch.Tensor,
        ce_weights: torch.Tensor,
        best: torch.Tensor,
        best_distance: torch.Tensor,
    ) -> tuple[torch.Tensor, int]:
        """One joint L-BFGS-B run from the originals; updates ``best``/``best_distance`` in place."""
        shape, dtype, device = originals.shape, originals.dtype, originals.device
        flat_originals = originals.detach().reshape(len(originals), -1)

        def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
            # float64 in scipy, model dtype in torch: Foolbox also evaluates in the model's dtype
            x = torch.from_numpy(flat).to(device=device, dtype=dtype).view(shape).requires_grad_(True)
            logits = self.model(x)
            squared_error = (x.reshape(len(x), -1) - flat_originals).pow(2).mean(dim=1)
            per_image = squared_error + ce_weights * self.loss_fn(logits, targets)
            (gradient,) = torch.autograd.grad(per_image.sum() * self.scale, x)
            with torch.no_grad():
                in_box = (x >= 0).flatten(1).all(1) & (x <= 1).flatten(1).all(1)
                better = self.success_fn(logits, targets) & in_box & (squared_error < best_distance)
                best[better] = x[better].detach()
                best_distance[better] = squared_error[better].detach()
            value = float(per_image.detach().sum().double()) * self.scale
            return value, gradient.detach().reshape(-1).double().cpu().numpy()

        start = originals.detach().reshape(-1).double().cpu().numpy()
        solution, _, info = scipy.optimize.fmin_l_bfgs_b(
            objective,
            start,
            bounds=np.tile([[0.0, 1.0]], (start.size, 1)),
            m=self.history_size,
            factr=self.factr,
            maxiter=self.maxiter,
        )
        final = torch.from_numpy(np.clip(solution, 0.0, 1.0)).to(device=device, dtype=dtype).view(shape)
        return final, int(info["nit"])

    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> LBFGSResult:
        """``labels`` are the target classes (targeted attack, as in :class:`Attack`)."""
        count, device = len(images), images.device
        targets = labels.to(device)
        n_values = images[0].numel()
        phase = torch.full((count,), _DOUBLING, dtype=torch.long, device=device)
        ce_weight = torch.full((count,), self.initial_ce_weight, dtype=images.dtype, device=device)
        low = torch.zeros_like(ce_weight)
        high = torch.full_like(ce_weight, float("inf"))
        doublings = torch.zeros(count, dtype=torch.long, device=device)
        bisections = torch.zeros(count, dtype=torch.long, device=device)
        iterations = torch.zeros(count, dtype=torch.long, device=device)
        best = images.detach().clone()
        best_distance = torch.full((count,), float("inf"), dtype=images.dtype, device=device)

        progress = tqdm(desc="L-BFGS c search", unit="round", disable=not self.show_progress, leave=False)
        while bool((phase != _DONE).any()):
            active = (phase != _DONE).nonzero().squeeze(1)
            active_best, active_distance = best[active], best_distance[active]
            final, steps = self._solve(images[active], targets[active], ce_weight[active], active_best, active_distance)
            best[active], best_distance[active] = active_best, active_distance
            iterations[active] += steps
            with torch.no_grad():
                adversarial_now = self.success_fn(self.model(final), targets[active])

            tried = ce_weight[active]
            doubling = phase[active] == _DOUBLING
            # doubling phase: first success opens the bracket [0, tried], else double or give up
            found = doubling & adversarial_now
            high[active[found]] = tried[found]
            phase[active[found]] = _BISECTING
            keep_doubling = doubling & ~adversarial_now
            doublings[active[keep_doubling]] += 1
            ce_weight[active[keep_doubling]] = tried[keep_doubling] * 2
            exhausted = keep_doubling & (doublings[active] >= self.max_doublings)
            phase[active[exhausted]] = _DONE
            # bisection phase: shrink the bracket toward the smallest adversarial weight
            bisecting = ~doubling
            high[active[bisecting & adversarial_now]] = tried[bisecting & adversarial_now]
            low[active[bisecting & ~adversarial_now]] = tried[bisecting & ~adversarial_now]
            bisections[active[bisecting]] += 1

            in_bracket = phase == _BISECTING
            limit_reached = torch.zeros_like(in_bracket)
            if self.max_bisections is not None:
                limit_reached = bisections >= self.max_bisections
            finished = in_bracket & (((high - low) < self.tolerance) | limit_reached)
            phase[finished] = _DONE
            ce_weight[phase == _BISECTING] = (low[phase == _BISECTING] + high[phase == _BISECTING]) / 2
            progress.update(1)
            progress.set_postfix(active=int((phase != _DONE).sum()), found=int(torch.isfinite(best_distance).sum()))
        progress.close()

        success = torch.isfinite(best_distance)
        with torch.no_grad():
            probabilities = F.softmax(self.model(best), dim=1)
        target_probability = probabilities.gather(1, targets.view(-1, 1)).squeeze(1)
        found_weight = torch.where(success, high, torch.full_like(high, float("nan")))
        squared_l2 = (best - images).flatten(1).pow(2).sum(1)
        return LBFGSResult(
            adversarial=best,
            success=success,
            iterations=iterations,
            target_probability=target_probability,
            ce_weight=found_weight,
            c=1.0 / (n_values * found_weight),
            distance=squared_l2,
        )


def _summary(result, seconds: float) -> dict:
    success = result.success
    probability = result.target_probability[success].double().numpy()
    return {
        "seconds": seconds, "pairs_per_second": len(success) / seconds, "success_rate": float(success.float().mean()),
        "median_l2": float(result.distance[success].sqrt().median()) if success.any() else float("nan"),
        "mean_l2": float(result.distance[success].sqrt().mean()) if success.any() else float("nan"),
        "target_probability_q0.01": float(np.quantile(probability, 0.01)) if len(probability) else float("nan"),
        "target_probability_median": float(np.median(probability)) if len(probability) else float("nan"),
        "total_iterations": int(result.iterations.sum()),
    }


def _concat(results):
    return LBFGSResult(
        adversarial=torch.cat([r.adversarial for r in results]), success=torch.cat([r.success for r in results]),
        iterations=torch.cat([r.iterations for r in results]), target_probability=torch.cat([r.target_probability for r in results]),
        ce_weight=torch.cat([r.ce_weight.double() for r in results]), c=torch.cat([r.c.double() for r in results]),
        distance=torch.cat([r.distance for r in results]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="outputs/train/cifar_cnn/model.pt")
    parser.add_argument("--data", default="outputs/data/cifar10/test.pt")
    parser.add_argument("--pairs", type=int, default=24)
    parser.add_argument("--maxiter", type=int, default=60)
    parser.add_argument("--warm-start-maxiter", type=int, default=15)
    parser.add_argument("--initial-ce-weight", type=float, default=0.01)
    parser.add_argument("--tolerance", type=float, default=1e-3)
    parser.add_argument("--max-bisections", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=["loop", "old_joint", "lockstep", "lockstep_warm"])
    parser.add_argument("--distance", default="mse", choices=["mse", "mean_abs"])
    parser.add_argument("--loss-on", default="logits", choices=["logits", "probabilities"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--headline", default="lockstep_warm", help="the variant whose speed-up is lbfgs_batched_over_loop")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    torch.manual_seed(0)
    trained = Path(args.model).is_file()
    model = load_model(args.model, args.device) if trained else CifarCNN().to(args.device).eval()
    if Path(args.data).is_file():
        blob = torch.load(args.data, weights_only=True)
        images, labels = blob["images"].float().div(255), blob["labels"]
        with torch.no_grad():
            correct = (model(images[:2000].to(args.device)).argmax(1).cpu() == labels[:2000]).nonzero().squeeze(1)
        images = images[correct[: args.pairs]]
    else:
        images = torch.rand(args.pairs, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    images = images.to(args.device)
    with torch.no_grad():
        predicted = model(images).argmax(1)
    targets = (predicted + 1 + torch.arange(len(images), device=images.device) % 9) % 10
    common = dict(tolerance=args.tolerance, initial_ce_weight=args.initial_ce_weight, max_bisections=args.max_bisections,
                  maxiter=args.maxiter, max_doublings=12)
    objective = dict(distance=args.distance, loss_on=args.loss_on)
    if objective != {"distance": "mse", "loss_on": "logits"} and "old_joint" in args.variants:
        raise SystemExit("the old joint variant only has distance=mse, loss_on=logits; drop it from --variants")
    attacks = {
        "loop": LBFGS(model, **common, **objective), "old_joint": JointLBFGS(model, **common), "lockstep": LBFGS(model, **common, **objective),
        "lockstep_warm": LBFGS(model, warm_start=True, warm_start_maxiter=args.warm_start_maxiter, **common, **objective),
        "lockstep_warm_bisection": LBFGS(model, warm_start=True, warm_start_maxiter=args.warm_start_maxiter, warm_start_phase="bisection",
                                         **common, **objective),
    }
    report = {
        "model": args.model if trained else "random CifarCNN (no trained model found)", "pairs": len(images),
        "settings": {**common, "warm_start_maxiter": args.warm_start_maxiter, **objective},
        "device": args.device, "torch_threads": torch.get_num_threads(),
    }
    for name in args.variants:
        began = time.perf_counter()
        if name == "loop":
            result = _concat([attacks[name](images[i : i + 1], targets[i : i + 1]) for i in tqdm(range(len(images)), desc="loop")])
        else:
            result = attacks[name](images, targets)
        report[name] = _summary(result, time.perf_counter() - began)
        print(name, json.dumps(report[name]), flush=True)
    if "loop" in report:
        for name in ("old_joint", "lockstep", "lockstep_warm", "lockstep_warm_bisection"):
            if name in report:
                report[f"{name}_over_loop"] = report["loop"]["seconds"] / report[name]["seconds"]
        headline = args.headline
        if headline in report:
            report["headline_variant"] = headline
            report["lbfgs_batched_over_loop"] = report[f"{headline}_over_loop"]
            # the flat keys benchmarks/summarize.py reads (batched = the headline variant)
            report.update({
                "batched_pairs_per_second": report[headline]["pairs_per_second"], "loop_pairs_per_second": report["loop"]["pairs_per_second"],
                "throughput_ratio": report["lbfgs_batched_over_loop"], "batched_success_rate": report[headline]["success_rate"],
                "loop_success_rate": report["loop"]["success_rate"],
            })
    emit(report, args.out)


if __name__ == "__main__":
    main()
