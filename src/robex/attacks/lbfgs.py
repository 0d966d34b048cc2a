"""Targeted box-constrained L-BFGS attack (Szegedy et al. 2014) as Foolbox 2.4 runs it, batched.

Dieter & Zisgen (2023, paper 001), Sect. 3.2, create their adversarial examples with Foolbox's
``foolbox.v1.attacks.LBFGSAttack`` (their ``02_generate_adversarial_examples.py``: distance
``MeanAbsoluteDistance``, ``maxiter=1000``, the Keras model wrapped by
``TensorFlowModel.from_keras``). This module reproduces that attack per image -- objective,
c search, best-adversarial bookkeeping -- and solves many images at once.

Batching without changing the per-image algorithm: every image runs its own, independent
L-BFGS-B problem (scipy's ``fmin_l_bfgs_b``, one worker thread per image, each with its own
c search), and the workers' objective evaluations are answered together, in lockstep, by one
batched forward/backward pass of the model in the calling thread. An image's trajectory is
therefore the one it has when attacked alone (up to the batch's floating-point summation
order); images that finish their c search leave the batch early. The previous batched version
flattened the whole batch into a single L-BFGS-B problem, whose shared line search and
stopping rule stalled on the hardest image and re-ran every image for every c
(``benchmarks/lbfgs_batched_vs_loop.py`` compares the two).

No maintained library offers a batched L-BFGS-B attack (torchattacks has none, Foolbox 3
dropped it), so it is written here by hand around scipy's solver.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import scipy.optimize
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from robex.attacks.base import Attack, AttackResult

DISTANCES = ("mse", "mean_abs")
LOSS_ON = ("logits", "probabilities")
WARM_START_PHASES = ("all", "bisection")


@dataclass
class LBFGSResult(AttackResult):
    """:class:`AttackResult` plus what the LRP study needs about each adversarial.

    ``target_probability``: softmax probability of the target class at the returned image (the
    paper's p_c', Sect. 4.1); ``ce_weight``: the smallest cross-entropy weight (Foolbox's ``c``)
    at which an L-BFGS-B solution was adversarial (the upper end of the final bracket); ``c``:
    Szegedy's weight of the distance instead, 1 / (n * ce_weight) for the mean over n = C*H*W
    values (NaN where the attack failed); ``distance``: squared L2 norm of the perturbation;
    ``objective_distance``: the attack's own distance (MSE or mean absolute difference).
    """

    target_probability: torch.Tensor
    ce_weight: torch.Tensor
    c: torch.Tensor
    distance: torch.Tensor
    objective_distance: torch.Tensor | None = None


class _LockstepOracle:
    """Answers the objective requests of many worker threads with one batched model call.

    A worker posts (slot, x, ce_weight) and blocks; once every live worker has posted (or ended),
    the calling thread evaluates all requests together and wakes them. Keeps Foolbox's
    ``Adversarial`` bookkeeping: every evaluated point inside the box that hits the target is a
    candidate, and the closest (attack distance) is kept per slot.
    """

    def __init__(self, attack: LBFGS, originals: torch.Tensor, targets: torch.Tensor, workers: int) -> None:
        self.attack = attack
        self.originals, self.targets = originals, targets
        self.flat_originals = originals.flatten(1)
        self.best = originals.clone()
        self.best_distance = torch.full((len(originals),), float("inf"), dtype=torch.float64, device=originals.device)
        self.condition = threading.Condition()
        self.pending: dict[int, tuple[np.ndarray, float]] = {}
        self.answers: dict[int, tuple[float, np.ndarray, bool]] = {}
        self.ready = {slot: threading.Event() for slot in range(len(originals))}
        self.alive = workers
        self.evaluations = 0

    # ---------------------------------------------------------------- worker side
    def request(self, slot: int, x: np.ndarray, ce_weight: float) -> tuple[float, np.ndarray, bool]:
        with self.condition:
            self.pending[slot] = (x, ce_weight)
            self.condition.notify_all()
        self.ready[slot].wait()
        self.ready[slot].clear()
        answer = self.answers.pop(slot)
        if answer is None:
            raise RuntimeError("the batched model evaluation failed in the calling thread")
        return answer

    def leave(self) -> None:
        with self.condition:
            self.alive -= 1
            self.condition.notify_all()

    # ---------------------------------------------------------------- caller side
    def serve(self, progress: tqdm | None = None) -> None:
        """Answer requests until every worker has left; ``progress`` advances by one per finished worker."""
        total, counted = self.alive, 0
        while True:
            with self.condition:
                while len(self.pending) < self.alive:
                    self.condition.wait()
                if self.alive == 0:
                    if progress is not None:  # workers that left after the last answered request
                        progress.update(total - counted)
                    return
                batch, self.pending = self.pending, {}
            try:
                self._answer(batch)
            except BaseException:
                # wake every waiting worker with a failure so that none blocks forever, then re-raise
                self.failed = True
                for slot in batch:
                    self.answers[slot] = None
                    self.ready[slot].set()
                raise
            if progress is not None:
                finished = total - self.alive
                progress.update(finished - counted)  # a shared bar may already count earlier batches
                counted = finished
                progress.set_postfix(active=self.alive, found=int(torch.isfinite(self.best_distance).sum()), refresh=False)

    def _answer(self, batch: dict[int, tuple[np.ndarray, float]]) -> None:
        slots = list(batch)
        index = torch.tensor(slots, device=self.originals.device)
        dtype, shape = self.originals.dtype, self.originals.shape[1:]
        x = torch.from_numpy(np.stack([batch[s][0] for s in slots])).to(self.originals.device, dtype).view(-1, *shape)
        if x.dim() == 4:  # CPU convolutions run ~1.3x faster on channels-last batches (measured, benchmarks/)
            x = x.contiguous(memory_format=torch.channels_last)
        weights = torch.tensor([batch[s][1] for s in slots], dtype=dtype, device=x.device)
        x.requires_grad_(True)
        logits = self.attack.model(x)
        distance = self.attack.distance_of(x.reshape(len(x), -1), self.flat_originals[index])
        per_image = distance + weights * self.attack.ce_loss(logits, self.targets[index])
        (gradient,) = torch.autograd.grad(per_image.sum() * self.attack.scale, x)
        with torch.no_grad():
            hits = self.attack.success_fn(logits, self.targets[index])
            in_box = (x >= 0).flatten(1).all(1) & (x <= 1).flatten(1).all(1)
            closer = hits & in_box & (distance.double() < self.best_distance[index])
            self.best[index[closer]] = x[closer].detach()
            self.best_distance[index[closer]] = distance[closer].double()
        values = (per_image.detach().double() * self.attack.scale).cpu().numpy()
        gradients = gradient.detach().reshape(len(x), -1).double().cpu().numpy()
        hits_list = hits.cpu().tolist()
        self.evaluations += 1
        for row, slot in enumerate(slots):
            self.answers[slot] = (float(values[row]), gradients[row], bool(hits_list[row]))
            self.ready[slot].set()


class LBFGS(Attack):
    """Targeted L-BFGS attack, Szegedy et al. (2014) Sect. 4.1 / paper 001 Eq. (5), Foolbox 2.4's.

    Per image i it minimises, over the box [0, 1]^n with scipy's L-BFGS-B,

        f_i(x) = D(x, x_i) + lambda * CE(g(model(x)), t_i),

    with D = ``distance``: ``"mse"`` (mean squared difference, Foolbox's default) or
    ``"mean_abs"`` (mean absolute difference, the paper's choice), and g = ``loss_on``:
    ``"logits"`` (the model's logits) or ``"probabilities"`` (the softmax outputs fed to the
    cross-entropy as if they were logits: what Foolbox's ``TensorFlowModel.from_keras`` did with
    the paper's Keras model, whose last layer is a softmax; its CE never reaches 0, so the
    optimiser keeps pushing p_t up). lambda (Foolbox's c) is searched per image as Foolbox does:
    first ``initial_ce_weight`` (default 2 * ``tolerance``), doubled (at most ``max_doublings``
    solves) until the L-BFGS-B solution is adversarial, then bisection on [0, lambda_high] while
    the bracket is at least ``tolerance`` wide (at most ``max_bisections`` solves). Every
    L-BFGS-B run starts from x_i; every evaluated point in the box that hits the target is a
    candidate and the one closest to x_i (distance D) is returned. ``scale`` multiplies the
    objective (Foolbox: 1e10). An image that already has the target class is returned unchanged.

    ``maxiter`` bounds L-BFGS-B iterations per solve (Foolbox default 150; the paper passed 1000).

    ``warm_start`` (not Foolbox's; default off) starts each solve after the first from the previous
    solve's solution instead of x_i, i.e. from the minimiser for the neighbouring lambda, and caps
    those solves at ``warm_start_maxiter`` iterations: the c search then costs less for the same
    distortion (measured in ``benchmarks/lbfgs_batched_vs_loop.py``). ``warm_start_phase``:
    ``"all"`` warm-starts every later solve; ``"bisection"`` keeps the doubling solves cold (from
    x_i, ``maxiter``), so whether an image is attacked successfully is decided exactly as without
    warm start, and warm-starts only the bisection solves, from the first adversarial solution (on
    the paper's non-smooth mean-absolute objective, warm doubling solves lose attacks).
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
        distance: str = "mse",
        loss_on: str = "logits",
        warm_start: bool = False,
        warm_start_maxiter: int | None = None,
        warm_start_phase: str = "all",
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
        if distance not in DISTANCES:
            raise ValueError(f"LBFGS distance={distance!r} is not supported; use 'mse' or 'mean_abs' (the paper's)")
        if loss_on not in LOSS_ON:
            raise ValueError(f"LBFGS loss_on={loss_on!r} is not supported; use 'logits' or 'probabilities' (the paper's code)")
        self.tolerance = tolerance
        self.initial_ce_weight = initial_ce_weight if initial_ce_weight is not None else 2 * tolerance
        self.max_doublings, self.max_bisections = max_doublings, max_bisections
        self.maxiter, self.history_size, self.factr, self.scale = maxiter, history_size, factr, scale
        if warm_start_maxiter is not None and warm_start_maxiter < 1:
            raise ValueError(f"LBFGS warm_start_maxiter must be >= 1 or None (got {warm_start_maxiter})")
        if warm_start_phase not in WARM_START_PHASES:
            raise ValueError(f"LBFGS warm_start_phase={warm_start_phase!r} is not supported; use 'all' or 'bisection'")
        self.distance, self.loss_on, self.warm_start, self.warm_start_phase = distance, loss_on, warm_start, warm_start_phase
        self.warm_start_maxiter = maxiter if warm_start_maxiter is None else warm_start_maxiter
        self.show_progress = show_progress

    # ---------------------------------------------------------------- objective pieces
    def distance_of(self, flat: torch.Tensor, flat_originals: torch.Tensor) -> torch.Tensor:
        """Per-image D(x, x_i) over the flattened values (Foolbox's MeanSquared/MeanAbsoluteDistance)."""
        difference = flat - flat_originals
        return difference.pow(2).mean(1) if self.distance == "mse" else difference.abs().mean(1)

    def ce_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        scores = logits.softmax(dim=1) if self.loss_on == "probabilities" else logits
        return self.loss_fn(scores, targets)

    # ---------------------------------------------------------------- per-image search
    def _solve(
        self, oracle: _LockstepOracle, slot: int, start: np.ndarray, ce_weight: float, maxiter: int,
    ) -> tuple[bool, int, np.ndarray]:
        """One L-BFGS-B run from ``start`` at weight ``ce_weight``: (solution adversarial, iterations, solution)."""

        def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
            value, gradient, _ = oracle.request(slot, x, ce_weight)
            return value, gradient

        solution, _, info = scipy.optimize.fmin_l_bfgs_b(
            objective, start, bounds=[(0.0, 1.0)] * start.size, m=self.history_size, factr=self.factr, maxiter=maxiter,
        )
        # L-BFGS-B may step marginally outside the box; Foolbox clips, then asks the model
        solution = np.clip(solution, 0.0, 1.0)
        _, _, adversarial = oracle.request(slot, solution, ce_weight)
        return adversarial, int(info["nit"]), solution

    def _search(self, oracle: _LockstepOracle, slot: int, start: np.ndarray, record: dict) -> None:
        try:
            iterations, weight, point, maxiter = 0, self.initial_ce_weight, start, self.maxiter
            warm_doubling = self.warm_start and self.warm_start_phase == "all"
            for _ in range(self.max_doublings):
                adversarial, steps, solution = self._solve(oracle, slot, point, weight, maxiter)
                if warm_doubling:
                    point, maxiter = solution, self.warm_start_maxiter
                iterations += steps
                if adversarial:
                    break
                weight *= 2
            else:
                record[slot] = (float("nan"), iterations)
                return
            if self.warm_start:  # bisections start from the last solve's (adversarial) solution
                point, maxiter = solution, self.warm_start_maxiter
            low, high, bisections = 0.0, weight, 0
            while high - low >= self.tolerance and (self.max_bisections is None or bisections < self.max_bisections):
                middle = (low + high) / 2
                adversarial, steps, solution = self._solve(oracle, slot, point, middle, maxiter)
                if self.warm_start:
                    point, maxiter = solution, self.warm_start_maxiter
                iterations += steps
                bisections += 1
                if adversarial:
                    high = middle
                else:
                    low = middle
            record[slot] = (high, iterations)
        except BaseException as error:  # surfaced in the calling thread
            record[slot] = error
        finally:
            oracle.leave()

    def perturb(self, images: torch.Tensor, labels: torch.Tensor, progress: tqdm | None = None) -> LBFGSResult:
        """``labels`` are the target classes (targeted attack, as in :class:`Attack`). ``progress``: a
        tqdm bar (e.g. one over a whole study) advanced by one per image whose c search ends;
        without it, ``show_progress`` draws a bar of this batch."""
        count, device = len(images), images.device
        targets = labels.to(device)
        with torch.no_grad():
            already = self.success_fn(self.model(images), targets)
        # Foolbox does not run an attack whose original already is adversarial (distance 0)
        todo = (~already).nonzero().squeeze(1)
        oracle = _LockstepOracle(self, images[todo].detach(), targets[todo], workers=len(todo))
        record: dict[int, object] = {}
        starts = images[todo].detach().flatten(1).double().cpu().numpy()
        workers = [threading.Thread(target=self._search, args=(oracle, slot, starts[slot], record), daemon=True)
                   for slot in range(len(todo))]
        own_bar = progress is None
        if own_bar:
            progress = tqdm(total=len(todo), desc="L-BFGS", unit="pair", disable=not self.show_progress, leave=False)
        for worker in workers:
            worker.start()
        oracle.serve(progress)
        for worker in workers:
            worker.join()
        if own_bar:
            progress.close()
        else:
            progress.update(count - len(todo))  # images that already had the target class
        errors = [value for value in record.values() if isinstance(value, BaseException)]
        if errors:
            raise errors[0]

        ce_weight = torch.full((count,), float("nan"), dtype=torch.float64, device=device)
        iterations = torch.zeros(count, dtype=torch.long, device=device)
        for slot, (weight, steps) in record.items():
            ce_weight[todo[slot]] = weight
            iterations[todo[slot]] = steps
        adversarial = images.detach().clone()
        objective_distance = torch.zeros(count, dtype=torch.float64, device=device)
        found = torch.isfinite(oracle.best_distance)
        adversarial[todo[found]] = oracle.best[found]
        objective_distance[todo] = oracle.best_distance
        success = already.clone()
        success[todo] = found
        with torch.no_grad():
            probabilities = F.softmax(self.model(adversarial), dim=1)
        target_probability = probabilities.gather(1, targets.view(-1, 1)).squeeze(1)
        ce_weight[already] = float("nan")
        return LBFGSResult(
            adversarial=adversarial,
            success=success,
            iterations=iterations,
            target_probability=target_probability,
            ce_weight=ce_weight,
            c=1.0 / (images[0].numel() * ce_weight),
            distance=(adversarial - images).flatten(1).pow(2).sum(1),
            objective_distance=objective_distance,
        )
