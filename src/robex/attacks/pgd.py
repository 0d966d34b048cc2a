"""Projected gradient descent (Madry et al. 2018), L-inf and L2, random start, (un)targeted.

Also home of the exact eps-ball projections every attack here shares: float rounding in
``x + delta`` can push ``|adv - x|`` one ulp past eps; :func:`clip_linf` and :func:`clip_l2`
correct that, so bounds hold to the last bit in the images' own dtype.
"""

from __future__ import annotations

import torch

from robex.attacks.base import Attack, AttackResult


def _flat_norm(x: torch.Tensor, p: float) -> torch.Tensor:
    return x.flatten(1).norm(p=p, dim=1).view(-1, *([1] * (x.dim() - 1)))


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project a perturbation batch onto the eps-ball of the given norm ('linf' or 'l2')."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    scale = (eps / _flat_norm(delta, 2).clamp_min(1e-12)).clamp(max=1.0)
    return delta * scale


def clip_linf(candidate: torch.Tensor, images: torch.Tensor, eps: float) -> torch.Tensor:
    """Clip ``candidate`` into [0, 1] and into the L-inf ball of radius eps around ``images``.

    ``images +/- eps`` is rounded in floating point, so the rounded bound may sit one ulp
    outside the ball; those bounds are moved one ulp inward, which makes
    ``(result - images).abs() <= eps`` (eps cast to the images' dtype) hold exactly.
    """
    bound = torch.tensor(eps, dtype=images.dtype, device=images.device)
    upper = images + bound
    upper = torch.where(upper - images > bound, torch.nextafter(upper, images), upper)
    lower = images - bound
    lower = torch.where(images - lower > bound, torch.nextafter(lower, images), lower)
    return torch.minimum(torch.maximum(candidate, lower), upper).clamp(0, 1)


def clip_l2(candidate: torch.Tensor, images: torch.Tensor, eps: float, max_fixes: int = 8) -> torch.Tensor:
    """Clip ``candidate`` into [0, 1] and the L2 ball of radius eps, exactly in the images' dtype.

    Clamping to [0, 1] only moves pixels toward ``images`` (which lie in [0, 1]), so it never
    leaves the ball; the rescaling may overshoot by rounding, hence the shrinking re-checks.
    """
    bound = float(torch.tensor(eps, dtype=images.dtype))
    delta = project(candidate - images, eps, "l2")
    adversarial = (images + delta).clamp(0, 1)
    for _ in range(max_fixes):
        norms = _flat_norm(adversarial - images, 2)
        outside = norms > bound
        if not outside.any():
            break
        shrink = torch.where(outside, bound / norms * (1 - 4 * torch.finfo(images.dtype).eps), torch.ones_like(norms))
        adversarial = (images + (adversarial - images) * shrink).clamp(0, 1)
    return adversarial


class PGD(Attack):
    """PGD with ``steps`` iterations of size ``step_size`` inside an eps-ball.

    L-inf: x <- Proj(x + a * sign(grad)); L2: x <- Proj(x + a * grad / ||grad||_2). Optional
    uniform random start inside the ball. ``early_stop`` freezes samples that already succeed,
    so iterations count per sample; without it every sample runs all steps (training use).
    Targeted attacks (``targeted=True``) take the targets as ``labels`` and descend their loss.
    """

    def __init__(
        self,
        model,
        eps: float = 8 / 255,
        step_size: float = 2 / 255,
        steps: int = 10,
        norm: str = "linf",
        random_start: bool = True,
        early_stop: bool = False,
        targeted: bool = False,
        loss_fn=None,
        success_fn=None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(model, targeted=targeted, loss_fn=loss_fn, success_fn=success_fn)
        if norm not in ("linf", "l2"):
            raise ValueError(f"norm={norm!r} is not supported; use 'linf' or 'l2'")
        if eps < 0 or step_size <= 0 or steps < 0:
            raise ValueError(f"PGD needs eps >= 0, step_size > 0, steps >= 0 (got {eps}, {step_size}, {steps})")
        self.eps, self.step_size, self.steps, self.norm = eps, step_size, steps, norm
        self.random_start, self.early_stop, self.generator = random_start, early_stop, generator

    def _random_delta(self, images: torch.Tensor) -> torch.Tensor:
        # drawn on the CPU so a seeded generator gives the same start on every device
        noise = torch.rand(images.shape, generator=self.generator, device="cpu").to(images)
        if self.norm == "linf":
            return (2 * noise - 1) * self.eps
        direction = torch.randn(images.shape, generator=self.generator, device="cpu").to(images)
        direction = direction / _flat_norm(direction, 2).clamp_min(1e-12)
        radius = noise.flatten(1)[:, :1].view(-1, *([1] * (images.dim() - 1)))
        return direction * radius * self.eps

    def _clip(self, candidate: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return clip_linf(candidate, images, self.eps) if self.norm == "linf" else clip_l2(candidate, images, self.eps)

    def perturb(self, images: torch.Tensor, labels: torch.Tensor, progress=None) -> AttackResult:
        """``progress``: a tqdm bar advanced per image as it stops early (the rest at the end)."""
        start = images + self._random_delta(images) if self.random_start else images
        done = 0
        adversarial = self._clip(start, images)
        iterations = torch.zeros(len(images), dtype=torch.long, device=images.device)
        active = torch.ones(len(images), dtype=torch.bool, device=images.device)
        for _ in range(self.steps):
            adversarial.requires_grad_(True)
            loss, logits = self.objective(adversarial, labels)
            if self.early_stop:
                active &= ~self.success_fn(logits.detach(), labels)
                if progress is not None:
                    progress.update(int((~active).sum()) - done)
                    done = int((~active).sum())
                if not active.any():
                    adversarial = adversarial.detach()
                    break
            (grad,) = torch.autograd.grad(loss.sum(), adversarial)
            if self.norm == "linf":
                step = self.step_size * grad.sign()
            else:
                step = self.step_size * grad / _flat_norm(grad, 2).clamp_min(1e-12)
            candidate = self._clip(adversarial.detach() + step, images)
            mask = active.view(-1, *([1] * (images.dim() - 1)))
            adversarial = torch.where(mask, candidate, adversarial.detach())
            iterations += active.long()
        with torch.no_grad():
            success = self.success_fn(self.model(adversarial), labels)
        if progress is not None:
            progress.update(len(images) - done)
        return AttackResult(adversarial.detach(), success, iterations)
