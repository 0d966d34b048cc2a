"""Shared base of all attacks (torchattacks-style: one attack per file over this class).

torchattacks itself cannot be a dependency (3.5.1 pins requests~=2.25, which conflicts with
mlflow 3.x), so the attacks are written here by hand; ``benchmarks/`` compares against it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SuccessFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class AttackResult:
    """Adversarial batch in [0, 1], per-sample success (bool) and iterations used (long)."""

    adversarial: torch.Tensor
    success: torch.Tensor
    iterations: torch.Tensor

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean()) if self.success.numel() else 0.0


def cross_entropy_per_sample(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


def misclassified(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return logits.argmax(dim=1) != labels


def hits_target(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return logits.argmax(dim=1) == targets


class Attack(ABC):
    """An attack on a model that maps [0, 1] images to logits.

    Subclasses implement :meth:`perturb`. ``loss_fn(logits, labels)`` returns a per-sample loss
    that an untargeted attack *ascends* (a targeted one descends it toward ``labels`` = targets);
    ``success_fn(logits, labels)`` says which samples are adversarial. Both default to the
    single-label choices and are swapped for multi-label or coarse-to-fine objectives.
    """

    def __init__(
        self,
        model: nn.Module,
        targeted: bool = False,
        loss_fn: LossFn | None = None,
        success_fn: SuccessFn | None = None,
    ) -> None:
        self.model = model
        self.targeted = targeted
        self.loss_fn = loss_fn or cross_entropy_per_sample
        self.success_fn = success_fn or (hits_target if targeted else misclassified)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, **options) -> AttackResult:
        """``options`` go to :meth:`perturb` (e.g. ``progress``, a tqdm bar that attacks advance per image)."""
        was_training = self.model.training
        self.model.eval()
        try:
            return self.perturb(images.detach().clamp(0, 1), labels, **options)
        finally:
            self.model.train(was_training)

    @abstractmethod
    def perturb(self, images: torch.Tensor, labels: torch.Tensor) -> AttackResult: ...

    def objective(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample loss to *ascend* (sign flipped for targeted attacks) and the logits."""
        logits = self.model(images)
        loss = self.loss_fn(logits, labels)
        return (-loss if self.targeted else loss), logits
