"""DeepFool (Moosavi-Dezfooli et al. 2016, Algorithm 2: multi-class, L2), batched.

Written by hand: no installable library offers a batched DeepFool that fits this project
(torchattacks loops over images and cannot be installed beside mlflow 3.x).
"""

from __future__ import annotations

import torch

from robex.attacks.base import Attack, AttackResult


class DeepFool(Attack):
    """Iterate the linearised minimal L2 step toward the closest decision boundary.

    At each step, for the candidate classes k != label, w_k = grad(f_k - f_label) and
    f'_k = f_k - f_label; the step is r = (|f'_l| + 1e-4) / ||w_l||^2 * w_l for
    l = argmin_k |f'_k| / ||w_k||_2 (Algorithm 2, lines 6-8). The accumulated step is applied
    with ``(1 + overshoot)`` as in the paper's implementation. Only the ``candidates`` classes
    with the highest initial logits are considered (10 in the paper, all for small heads).
    Samples stop individually once ``success_fn`` holds (default: label changed).
    """

    def __init__(self, model, steps: int = 50, overshoot: float = 0.02, candidates: int = 10, success_fn=None) -> None:
        super().__init__(model, targeted=False, success_fn=success_fn)
        if steps < 1 or overshoot < 0 or candidates < 2:
            raise ValueError(f"DeepFool needs steps >= 1, overshoot >= 0, candidates >= 2 (got {steps}, {overshoot}, {candidates})")
        self.steps, self.overshoot, self.candidates = steps, overshoot, candidates

    def perturb(self, images: torch.Tensor, labels: torch.Tensor, progress=None) -> AttackResult:
        """``progress``: a tqdm bar advanced per image as it crosses the boundary (the rest at the end)."""
        batch = torch.arange(len(images), device=images.device)
        done = 0
        with torch.no_grad():
            initial = self.model(images)
        count = min(self.candidates, initial.shape[1])
        others = initial.scatter(1, labels[:, None], float("-inf")).topk(count - 1, dim=1).indices
        total_step = torch.zeros_like(images)
        adversarial = images.clone()
        active = torch.ones(len(images), dtype=torch.bool, device=images.device)
        iterations = torch.zeros(len(images), dtype=torch.long, device=images.device)
        shape = (-1, *([1] * (images.dim() - 1)))
        for _ in range(self.steps):
            probe = adversarial.detach().requires_grad_(True)
            logits = self.model(probe)
            active &= ~self.success_fn(logits.detach(), labels)
            if progress is not None:
                progress.update(int((~active).sum()) - done)
                done = int((~active).sum())
            if not active.any():
                break
            margins = logits.gather(1, others) - logits.gather(1, labels[:, None])
            # one backward per candidate class (a loop over classes, not images)
            directions = torch.stack(
                [
                    torch.autograd.grad(margins[:, j].sum(), probe, retain_graph=j < count - 2)[0]
                    for j in range(count - 1)
                ],
                dim=1,
            )
            norms = directions.flatten(2).norm(dim=2).clamp_min(1e-12)
            margins = margins.detach()
            closest = (margins.abs() / norms).argmin(dim=1)
            step_size = (margins[batch, closest].abs() + 1e-4) / norms[batch, closest] ** 2
            step = step_size.view(shape) * directions[batch, closest]
            total_step = total_step + step * active.view(shape)
            adversarial = (images + (1 + self.overshoot) * total_step).clamp(0, 1)
            iterations += active.long()
        with torch.no_grad():
            success = self.success_fn(self.model(adversarial), labels)
        if progress is not None:
            progress.update(len(images) - done)
        return AttackResult(adversarial.detach(), success, iterations)
