"""Attacks on coarse-to-fine classifiers (Heidarizadeh et al., Sect. III and IV).

Coarse-level attacks (LRPC, PGDC, DFC) succeed when C(x + eta) != C(x). Fine-level attacks
(LRPF, PGDF, DFF) attack F^{r_org} and succeed only when its label changes while the coarse
label stays: C(x + eta) = r_org and F^{r_org}(x + eta) != f_org. Fine-level attacks run once
per coarse class present in the batch (a loop over classes, not images), because each coarse
class has its own fine classifier.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from robex.attacks.base import Attack, AttackResult
from robex.attacks.deepfool import DeepFool
from robex.attacks.lrp_attack import LRPAttack, LRPAttackResult, LRPOptions
from robex.attacks.pgd import PGD
from robex.models.c2f import C2FClassifier


class _GuardedFine(nn.Module):
    """F^c's local logits followed by C's logits, so one forward tells both labels (PGDF)."""

    def __init__(self, model: C2FClassifier, coarse_class: int) -> None:
        super().__init__()
        self.model, self.coarse_class = model, coarse_class
        self.num_fine = len(model.hierarchy.members(coarse_class))
        # a new Module starts in training mode; Attack restores that flag recursively afterwards,
        # which would leave the wrapped C2F model's batch norms in training mode
        self.training = model.training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.model.fine_logits(x, self.coarse_class), self.model.coarse_logits(x)], dim=1)


class C2FAttack(ABC):
    """Attack a :class:`C2FClassifier` at one level; call with images and *global* fine labels.

    The labels are the original labels (f_org; r_org is derived through the hierarchy). Pass
    the model's own predictions to measure the fooling ratio (label changed), as the paper does.
    ``success`` of the returned result is recomputed with the full two-step decision.
    """

    level: str = "coarse"

    def __init__(self, model: C2FClassifier) -> None:
        if not isinstance(model, C2FClassifier):
            raise ValueError(f"coarse-to-fine attacks need a C2FClassifier, got {type(model).__name__}; load a C2F model such as c2f_cifar")
        self.model = model

    @abstractmethod
    def level_attack(self, coarse_class: int | None) -> Attack:
        """The single-classifier attack: on C (``coarse_class`` None) or on F^coarse_class."""

    def __call__(self, images: torch.Tensor, fine_labels: torch.Tensor, progress=None) -> AttackResult:
        """``progress``: a tqdm bar the level attacks advance by one per finished image."""
        was_training = self.model.training
        self.model.eval()
        try:
            return self._run(images.detach().clamp(0, 1), fine_labels, progress)
        finally:
            self.model.train(was_training)

    def _run(self, images: torch.Tensor, fine_labels: torch.Tensor, progress=None) -> AttackResult:
        hierarchy = self.model.hierarchy
        coarse_labels = hierarchy.coarse_of(fine_labels)
        if self.level == "coarse":
            result = self.level_attack(None)(images, coarse_labels, progress=progress)
            adversarial, iterations = result.adversarial, result.iterations
            stalled = getattr(result, "stalled", None)
        else:
            adversarial = images.clone()
            iterations = torch.zeros(len(images), dtype=torch.long, device=images.device)
            stalled = torch.zeros(len(images), dtype=torch.bool, device=images.device)
            local_labels = hierarchy.local_index(fine_labels)
            for coarse_class in coarse_labels.unique().tolist():
                rows = coarse_labels == coarse_class
                part = self.level_attack(coarse_class)(images[rows], local_labels[rows], progress=progress)
                adversarial[rows] = part.adversarial
                iterations[rows] = part.iterations
                if getattr(part, "stalled", None) is not None:
                    stalled[rows] = part.stalled
        coarse_after, fine_after = self.model.predict(adversarial)
        if self.level == "coarse":
            success = coarse_after != coarse_labels
        else:
            success = (coarse_after == coarse_labels) & (fine_after != fine_labels)
        if stalled is None:
            stalled = torch.zeros_like(success)
        return LRPAttackResult(adversarial, success, iterations, stalled & ~success)


class _LRPC2FAttack(C2FAttack):
    """Shared options of LRPC and LRPF: Algorithm 1's eps, K, step rule (``step``: gradient with
    ``lr`` | sign with ``step_size``) and how the LRP is computed (:class:`LRPOptions` fields)."""

    def __init__(self, model: C2FClassifier, eps: float = 10 / 255, lr: float = 0.5, steps: int = 100,
                 step: str = "gradient", step_size: float | None = None, ascend: bool = False,
                 guard: str = "none", **lrp_options) -> None:
        super().__init__(model)
        self.options = dict(eps=eps, lr=lr, steps=steps, step=step, step_size=step_size, ascend=ascend,
                            guard=guard, lrp=LRPOptions(**lrp_options))


class LRPC(_LRPC2FAttack):
    """LRPC: Algorithm 1 with loss (7) on the coarse classifier C."""

    level = "coarse"

    def __init__(self, model: C2FClassifier, **options) -> None:
        super().__init__(model, **options)
        self._attack = LRPAttack(model.coarse, **self.options)

    def level_attack(self, coarse_class: int | None) -> Attack:
        return self._attack


class LRPF(_LRPC2FAttack):
    """LRPF: Algorithm 1 with loss (9) on F^{r_org}, stopping only when C(x + eta) = r_org
    (``guard="backtrack"``: steps that would change C's label are halved, see :class:`LRPAttack`)."""

    level = "fine"

    def __init__(self, model: C2FClassifier, **options) -> None:
        super().__init__(model, **options)
        self._attacks: dict[int, LRPAttack] = {}

    def level_attack(self, coarse_class: int | None) -> Attack:
        if coarse_class not in self._attacks:
            def coarse_kept(adversarial: torch.Tensor, c: int = coarse_class) -> torch.Tensor:
                return self.model.coarse_logits(adversarial).argmax(dim=1) == c

            self._attacks[coarse_class] = LRPAttack(self.model.fine[coarse_class], constraint=coarse_kept, **self.options)
        return self._attacks[coarse_class]


class PGDC(C2FAttack):
    """PGDC: untargeted L-inf PGD (Madry et al.) on the coarse classifier, stopping per sample."""

    level = "coarse"

    def __init__(self, model: C2FClassifier, eps: float = 8 / 255, step_size: float = 2 / 255, steps: int = 20,
                 random_start: bool = True, seed: int = 0) -> None:
        super().__init__(model)
        self.options = dict(eps=eps, step_size=step_size, steps=steps, random_start=random_start)
        self.seed = seed

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def level_attack(self, coarse_class: int | None) -> Attack:
        return PGD(self.model.coarse, norm="linf", early_stop=True, generator=self._generator(), **self.options)


class PGDF(PGDC):
    """PGDF: L-inf PGD ascending F^{r_org}'s cross-entropy; success needs C's label kept."""

    level = "fine"

    def level_attack(self, coarse_class: int | None) -> Attack:
        guarded = _GuardedFine(self.model, coarse_class)
        count = guarded.num_fine

        def fine_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(logits[:, :count], labels, reduction="none")

        def fine_changed_coarse_kept(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return (logits[:, :count].argmax(dim=1) != labels) & (logits[:, count:].argmax(dim=1) == coarse_class)

        return PGD(guarded, norm="linf", early_stop=True, generator=self._generator(),
                   loss_fn=fine_loss, success_fn=fine_changed_coarse_kept, **self.options)


class DFC(C2FAttack):
    """DFC: DeepFool (L2) on the coarse classifier."""

    level = "coarse"

    def __init__(self, model: C2FClassifier, steps: int = 50, overshoot: float = 0.02, candidates: int = 10) -> None:
        super().__init__(model)
        self.options = dict(steps=steps, overshoot=overshoot, candidates=candidates)

    def level_attack(self, coarse_class: int | None) -> Attack:
        return DeepFool(self.model.coarse, **self.options)


class DFF(DFC):
    """DFF: DeepFool (L2) on F^{r_org}; success needs C's label kept."""

    level = "fine"

    def level_attack(self, coarse_class: int | None) -> Attack:
        return DeepFool(self.model.fine[coarse_class], **self.options)


C2F_ATTACKS: dict[str, type[C2FAttack]] = {
    "lrpc": LRPC, "lrpf": LRPF, "pgdc": PGDC, "pgdf": PGDF, "dfc": DFC, "dff": DFF,
}
# options given on the 0..255 pixel scale in configs and the paper; divided by 255 here
PIXEL_SCALE_OPTIONS = ("eps", "step_size")


def make_c2f_attack(model: C2FClassifier, name: str, pixel_scale: bool = True, **options) -> C2FAttack:
    """Build a C2F attack by its paper name (lrpc, lrpf, pgdc, pgdf, dfc, dff).

    With ``pixel_scale`` the L-inf sizes ``eps`` and ``step_size`` are on the 0..255 scale
    (the paper's eps = 10, 20, 40) and converted to the models' [0, 1] inputs.
    """
    key = name.lower()
    if key not in C2F_ATTACKS:
        raise ValueError(f"unknown coarse-to-fine attack {name!r}; choose one of {sorted(C2F_ATTACKS)}")
    if pixel_scale:
        options = {k: (v / 255 if k in PIXEL_SCALE_OPTIONS and v is not None else v) for k, v in options.items()}
    try:
        return C2F_ATTACKS[key](model, **options)
    except TypeError as error:
        raise ValueError(f"attack {name!r} does not accept these options {sorted(options)} ({error})") from error
