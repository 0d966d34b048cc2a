"""Training-time defenses: none, random black rectangles (L0) and PGD adversarial training."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from robex.attacks.pgd import PGD
from robex.utils.errors import RobexError


def _never_done(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.zeros(len(logits), dtype=torch.bool, device=logits.device)


class Defense:
    """Maps a clean training batch to the batch the model is trained on."""

    name = "none"

    def set_epoch(self, epoch: int) -> None:
        """Called by the training module at the start of every epoch (0-based); a schedule hook."""

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, loss_fn: Callable) -> torch.Tensor:
        return images


class NoDefense(Defense):
    pass


class RandomRectangle(Defense):
    """L0 defense: paste one black rectangle of random size and position into each image.

    Side lengths are drawn uniformly from [min_size, max_size] pixels (per image, per side).
    Occluding random regions teaches the model not to rely on any small pixel set, the threat
    model of L0 / patch attacks (Mour 2023, Sect. 4).
    """

    name = "l0"

    def __init__(self, min_size: int = 4, max_size: int = 16, probability: float = 1.0, seed: int = 0) -> None:
        if not 1 <= min_size <= max_size:
            raise RobexError(f"defense.obj.min_size={min_size} and defense.obj.max_size={max_size} need 1 <= min_size <= max_size")
        if not 0.0 <= probability <= 1.0:
            raise RobexError(f"defense.obj.probability={probability} must lie in [0, 1]")
        self.min_size, self.max_size, self.probability = min_size, max_size, probability
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, model, images, labels, loss_fn):
        n, _, height, width = images.shape
        g = self.generator
        heights = torch.randint(self.min_size, min(self.max_size, height) + 1, (n,), generator=g)
        widths = torch.randint(self.min_size, min(self.max_size, width) + 1, (n,), generator=g)
        tops = (torch.rand(n, generator=g) * (height - heights + 1)).long()
        lefts = (torch.rand(n, generator=g) * (width - widths + 1)).long()
        apply = torch.rand(n, generator=g) < self.probability
        rows = torch.arange(height).view(1, -1)
        cols = torch.arange(width).view(1, -1)
        inside_rows = (rows >= tops[:, None]) & (rows < (tops + heights)[:, None])
        inside_cols = (cols >= lefts[:, None]) & (cols < (lefts + widths)[:, None])
        box = (inside_rows[:, :, None] & inside_cols[:, None, :] & apply[:, None, None]).to(images.device)
        return images.masked_fill(box[:, None], 0.0)


class PGDTraining(Defense):
    """PGD adversarial training (Madry et al. 2018): train on L-inf PGD examples.

    ``fraction`` of each batch is replaced by its adversarial version (1.0 = Madry's recipe;
    0.5 is the mixed clean/adversarial loss of Goodfellow et al. 2015, Sect. 6). The attack
    ascends the same per-sample loss the model is trained with, so it serves single-label,
    multi-label and coarse-to-fine tasks alike.

    Schedule (a small net that sees full-strength PGD from epoch 0 learns little, issue 11):
    the first ``warmup_epochs`` epochs train on clean images only, then the radius grows
    linearly over ``ramp_epochs`` epochs to ``eps`` (the step size scales with it), and stays
    there. Both 0 = Madry's constant schedule.
    """

    name = "pgd"

    def __init__(self, eps: float = 0.1, steps: int = 10, step_size: float = 0.025, random_start: bool = True, fraction: float = 1.0, seed: int = 0,
                 warmup_epochs: int = 0, ramp_epochs: int = 0) -> None:
        if not 0.0 <= eps <= 1.0:
            raise RobexError(f"defense.obj.eps={eps} must lie in [0, 1] (inputs are in [0, 1]); e.g. 0.1 for DOUBLE-MNIST, 8/255 for CIFAR-10")
        if steps < 1 or step_size <= 0:
            raise RobexError(f"defense.obj.steps={steps} must be >= 1 and defense.obj.step_size={step_size} > 0")
        if not 0.0 < fraction <= 1.0:
            raise RobexError(f"defense.obj.fraction={fraction} must lie in (0, 1]")
        if warmup_epochs < 0 or ramp_epochs < 0:
            raise RobexError(f"defense.obj.warmup_epochs={warmup_epochs} and defense.obj.ramp_epochs={ramp_epochs} must be >= 0")
        self.eps, self.steps, self.step_size, self.random_start, self.fraction = eps, steps, step_size, random_start, fraction
        self.warmup_epochs, self.ramp_epochs = warmup_epochs, ramp_epochs
        self.epoch = 0
        self.generator = torch.Generator().manual_seed(seed)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def current_scale(self) -> float:
        """Share of ``eps`` used in the current epoch: 0 during warm-up, then a linear ramp to 1."""
        if self.epoch < self.warmup_epochs:
            return 0.0
        if self.ramp_epochs == 0:
            return 1.0
        return min(1.0, (self.epoch - self.warmup_epochs + 1) / self.ramp_epochs)

    def attack(self, model, loss_fn, scale: float = 1.0) -> PGD:
        # success is irrelevant here (every sample runs all steps); this criterion works for any task
        return PGD(model, eps=self.eps * scale, step_size=self.step_size * scale, steps=self.steps, norm="linf",
                   random_start=self.random_start, loss_fn=loss_fn, success_fn=_never_done, generator=self.generator)

    def __call__(self, model, images, labels, loss_fn):
        scale = self.current_scale()
        if scale == 0.0:
            return images
        count = max(1, int(round(self.fraction * len(images))))
        result = self.attack(model, loss_fn, scale)(images[:count], labels[:count])
        return torch.cat([result.adversarial, images[count:]])
