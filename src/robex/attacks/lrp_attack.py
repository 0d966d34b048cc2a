"""LRP-guided attacks on one classifier (Heidarizadeh et al., Algorithm 1, losses (7) and (9)).

The LRP comes from the one zennit front-end, :mod:`robex.lrp.attribution`. Paper rule set: z+ on every hidden layer (eq. 4), z-beta (ZBox)
with the input bounds on the first layer (eq. 5), one-hot initial relevance (eq. 3). Options a
researcher can sweep (see docs/attack.md):

- ``relevance_init``: ``onehot`` (eq. 3, R^L = delta), ``logit`` (R^L = f_c(x) delta) or
  ``softmax`` (R^L = softmax_c(x) delta); the start is differentiated with the rest.
- ``zplus_bias``: ``include`` (zennit's ZPlus/ZBox: the positive bias sits in the denominator and
  absorbs relevance) or ``exclude`` (eqs. 4 and 5 as written: no bias term).
- ``rules``: ``paper`` (z+ hidden), ``epsilon`` (LRP-epsilon hidden) or ``alpha_beta``; ZBox on
  the first layer in every set.

Why the paper-literal setting is degenerate: with p = 1, ||R+||_1 - ||R-||_1 = sum R, so loss (7)
is exactly sum LRP(x; r_org) - sum LRP(x; r_adv). Eqs. (4)/(5) without bias conserve relevance
(every layer's relevance sums to the one above), so both sums equal sum R^L = 1 for the one-hot
start: the loss is a constant and its gradient is rounding noise. The same identity makes the
loss cheap: LRP is linear in the output relevance at fixed activations, so the loss is the sum
of ONE heatmap started at R^L_org - R^L_adv (one forward, one backward per step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from robex.attacks.base import Attack, AttackResult
from robex.attacks.pgd import clip_linf

ConstraintFn = Callable[[torch.Tensor], torch.Tensor]
ClassesFn = Callable[[torch.Tensor], torch.Tensor]

RELEVANCE_INITS = ("onehot", "logit", "softmax")
ZPLUS_BIAS = ("include", "exclude")
RULE_SETS = ("paper", "epsilon", "alpha_beta")
STEPS = ("gradient", "sign")
# what a step that would break ``constraint`` does (LRPF: the coarse label must stay, Alg. 1 line 13)
GUARDS = ("none", "backtrack")


@dataclass(frozen=True)
class LRPOptions:
    """How LRP_G(x; c) is computed (Sect. II-B); defaults are the working configuration.

    ``epsilon`` is used by ``rules="epsilon"``, ``alpha`` (beta = alpha - 1) by
    ``rules="alpha_beta"``; ``stabilizer`` guards the z+/ZBox/alpha-beta denominators.
    """

    rules: str = "paper"
    zplus_bias: str = "include"
    relevance_init: str = "logit"
    epsilon: float = 0.25
    alpha: float = 2.0
    stabilizer: float = 1e-6

    def __post_init__(self) -> None:
        for key, value, allowed in (("rules", self.rules, RULE_SETS), ("zplus_bias", self.zplus_bias, ZPLUS_BIAS),
                                    ("relevance_init", self.relevance_init, RELEVANCE_INITS)):
            if value not in allowed:
                raise ValueError(f"{key}={value!r} is not supported; use one of {list(allowed)}")
        if self.epsilon <= 0 or self.stabilizer <= 0 or self.alpha < 1:
            raise ValueError(f"LRP needs epsilon > 0, stabilizer > 0, alpha >= 1 (got {self.epsilon}, {self.stabilizer}, {self.alpha})")

    def rule(self):
        """The front-end's :class:`~robex.lrp.attribution.LRPRule`: the hidden rule, ZBox (eq. 5) first."""
        from robex.lrp.attribution import LRPRule, zplus_zbox_rule

        if self.rules == "paper":
            return zplus_zbox_rule(self.stabilizer)
        if self.rules == "epsilon":
            return LRPRule(f"epsilon_{self.epsilon:g}", "epsilon", epsilon=self.epsilon, stabilizer=self.stabilizer, input_rule="zbox")
        return LRPRule(f"alpha_beta_{self.alpha:g}", "alpha_beta", alpha=self.alpha, stabilizer=self.stabilizer, input_rule="zbox")


PAPER_LITERAL = LRPOptions(rules="paper", zplus_bias="exclude", relevance_init="onehot")


def _nonnegative_zplus(stabilizer: float, zero_params):
    """zennit's ZPlus without its second branch (negative inputs times negative weights).

    Behind a ReLU or max-pool every hidden layer's input is >= 0, so that branch is identically
    zero but still costs a convolution, its backward and their double backward per layer and step.
    :class:`LRP` uses this rule only after checking on the first batch that it gives ZPlus's map.
    """
    from zennit.core import BasicHook, Stabilizer
    from zennit.rules import ClampMod

    stabilize = Stabilizer.ensure(stabilizer)
    return BasicHook(
        input_modifiers=[lambda input: input.clamp(min=0)],
        param_modifiers=[ClampMod(min=0.0, zero_params=zero_params)],
        output_modifiers=[lambda output: output],
        gradient_mapper=lambda out_grad, outputs: [out_grad / stabilize(outputs[0])],
        reducer=lambda inputs, gradients: inputs[0] * gradients[0],
    )


def _fast_paper_rule(stabilizer: float):
    """The paper rule set (z+ hidden, ZBox first) with :func:`_nonnegative_zplus` as the hidden hook."""
    from robex.lrp.attribution import LRPRule

    @dataclass(frozen=True)
    class NonNegativeZPlusRule(LRPRule):
        def hook(self, zplus_bias: str = "include"):
            return _nonnegative_zplus(self.stabilizer, ["bias"] if zplus_bias == "exclude" else None)

    return NonNegativeZPlusRule("zplus_zbox_nonnegative", "zplus", stabilizer=stabilizer, input_rule="zbox")


class LRP:
    """LRP_G(x; c) of one classifier G (the paper's notation), optionally differentiable.

    A thin layer over the one front-end :class:`robex.lrp.attribution.LRPAttribution`
    (BatchNorm merged into a frozen copy once, composite built once and attached per call),
    adding :meth:`signed`: a heatmap for an arbitrary output relevance, which LRPC needs.
    """

    def __init__(self, model: nn.Module, options: LRPOptions | None = None, one_branch_zplus: bool = True) -> None:
        from robex.lrp.attribution import LRPAttribution, build_composite

        self.options = options or LRPOptions()
        self.attribution = LRPAttribution(model, self.options.rule(), zplus_bias=self.options.zplus_bias,
                                          batchnorm="merge", relevance_init=self.options.relevance_init)
        self.model = self.attribution.model
        self.composite = self.attribution.composite()
        # the paper's rules get the one-branch z+ once the first batch shows it agrees (see _nonnegative_zplus)
        self._fast = None
        if self.options.rules == "paper" and one_branch_zplus:
            fast_rule = _fast_paper_rule(self.options.stabilizer)
            self._fast = build_composite(self.model, fast_rule, zplus_bias=self.options.zplus_bias, batchnorm="merge")

    def _choose_composite(self, images: torch.Tensor) -> None:
        """On the first batch: keep the one-branch z+ only if it reproduces zennit's ZPlus map."""
        if self._fast is None:
            return
        probe = images[:4].detach()
        maps = []
        for composite in (self.composite, self._fast):
            x = probe.clone().requires_grad_(True)
            with composite.context(self.model):
                logits = self.model(x)
                start = torch.nn.functional.one_hot(logits.argmax(1), logits.shape[1]).to(logits.dtype)
                maps.append(torch.autograd.grad(logits, x, grad_outputs=start)[0])
        if torch.allclose(maps[0], maps[1], rtol=1e-4, atol=1e-6 * float(maps[0].abs().max())):
            self.composite = self._fast
        self._fast = None

    def start(self, logits: torch.Tensor, classes: torch.Tensor, create_graph: bool) -> torch.Tensor:
        """R^L of ``classes`` (eq. 3 or its logit/softmax variants), in the graph of ``logits``
        when ``create_graph`` (R^L = f_c(x + eta) delta is a function of eta)."""
        from robex.lrp.attribution import initial_relevance

        return initial_relevance(logits, classes, self.options.relevance_init, create_graph)

    def signed(
        self,
        images: torch.Tensor,
        start: Callable[[torch.Tensor], torch.Tensor],
        create_graph: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, relevance) for the output relevance ``start(logits)`` (any sign, any rows).

        With ``create_graph`` the relevance is differentiable in ``images``. Differentiate it
        only after this call returns: while the composite is attached its hooks would rewrite
        that second backward too (they are removed on exit, which deactivates them).
        """
        self._choose_composite(images)
        probe = images if images.requires_grad else images.detach().requires_grad_(True)
        with self.composite.context(self.model):
            logits = self.model(probe)
            (heatmap,) = torch.autograd.grad(logits, probe, grad_outputs=start(logits), create_graph=create_graph)
        return logits, heatmap

    def __call__(
        self,
        images: torch.Tensor,
        classes: torch.Tensor | ClassesFn,
        create_graph: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, relevance shaped like ``images``): LRP of ``classes`` (a (B,) tensor or a
        function of the logits returning one), started as ``options.relevance_init`` says."""

        def start(logits: torch.Tensor) -> torch.Tensor:
            chosen = classes(logits.detach()) if callable(classes) else classes.to(logits.device)
            return self.start(logits, chosen, create_graph)

        return self.signed(images, start, create_graph)


def split_norms(heatmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ||R+||_1 and ||R-||_1 of a relevance batch."""
    flat = heatmap.flatten(1)
    return flat.clamp(min=0).sum(1), (-flat).clamp(min=0).sum(1)


def lrp_attack_loss(relevance_original: torch.Tensor, relevance_adversarial: torch.Tensor) -> torch.Tensor:
    """Per-sample loss (7)/(9) with p = 1, from the two heatmaps as the paper writes it:
    ||R_org+|| - ||R_adv+|| - ||R_org-|| + ||R_adv-||  (= sum R_org - sum R_adv)."""
    original_positive, original_negative = split_norms(relevance_original)
    adversarial_positive, adversarial_negative = split_norms(relevance_adversarial)
    return original_positive - adversarial_positive - original_negative + adversarial_negative


def top2_classes(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(org, adv): the current top-1 class and the runner-up (eqs. 6 and 8)."""
    top2 = logits.topk(2, dim=1).indices
    return top2[:, 0], top2[:, 1]


def lrp_loss(lrp: LRP, images: torch.Tensor, create_graph: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample loss (7)/(9) at ``images`` (org/adv = current top-2 classes) and the logits.

    One forward and one backward: the loss is the sum of a single heatmap started at
    R^L(org) - R^L(adv) (see the module docstring); ``tests/test_lrp_attack.py`` checks it
    against :func:`lrp_attack_loss` on two separately computed heatmaps.
    """
    def difference(logits: torch.Tensor) -> torch.Tensor:
        original, adversarial = top2_classes(logits.detach())
        return lrp.start(logits, original, create_graph) - lrp.start(logits, adversarial, create_graph)

    logits, heatmap = lrp.signed(images, difference, create_graph=create_graph)
    return heatmap.flatten(1).sum(1), logits


@dataclass
class LRPAttackResult(AttackResult):
    """``stalled``: samples frozen because their LRP gradient was non-finite or exactly zero."""

    stalled: torch.Tensor | None = None


class LRPAttack(Attack):
    """Algorithm 1 on one classifier G: LRPC with G = C, LRPF with G = F^{r_org}.

    ``labels`` are the original labels (r_org resp. f_org); at every iteration the current
    top-1 / top-2 classes of G(x + eta) are the org / adv labels (line 9), loss (7)/(9) comes
    from :func:`lrp_loss` (lines 5-6), eta takes a step against its gradient (line 7) and is
    clipped to [-eps, eps] with x + eta kept in [0, 1] (line 8). A sample stops once its label
    differs from ``labels`` and ``constraint(x + eta)`` holds (lines 11-18; LRPF passes "coarse
    label unchanged"). ``step="gradient"`` is line 7 (eta <- eta - lr dL/deta); ``step="sign"``
    is PGD's step, eta <- eta - step_size sign(dL/deta), scale-free (``step_size`` None = eps/10).
    ``guard="backtrack"`` (not in the paper) halves a step, up to ``guard_halvings`` times, while
    it would break ``constraint``; a sample whose every halving breaks it keeps its point and stops
    (the next gradient, from the same point, would be the same). Loss (9) only sees F^{r_org}, so
    without the guard a larger eps lets LRPF walk over C's boundary and fail (docs/attack.md).
    ``ascend=True`` climbs the loss instead (a control: a working attack must fool less then).
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 10 / 255,
        lr: float = 0.5,
        steps: int = 100,
        step: str = "gradient",
        step_size: float | None = None,
        lrp: LRPOptions | None = None,
        constraint: ConstraintFn | None = None,
        ascend: bool = False,
        guard: str = "none",
        guard_halvings: int = 4,
    ) -> None:
        super().__init__(model)
        if step not in STEPS:
            raise ValueError(f"step={step!r} is not supported; use 'gradient' (the paper's) or 'sign'")
        if guard not in GUARDS or guard_halvings < 0:
            raise ValueError(f"guard={guard!r} (halvings {guard_halvings}) is not supported; use 'none' (the paper's) or 'backtrack' with halvings >= 0")
        if eps < 0 or lr <= 0 or steps < 0 or (step_size is not None and step_size <= 0):
            raise ValueError(f"LRP attack needs eps >= 0, lr > 0, steps >= 0, step_size > 0 (got {eps}, {lr}, {steps}, {step_size})")
        self.eps, self.lr, self.steps, self.step = eps, lr, steps, step
        self.step_size = eps / 10 if step_size is None else step_size
        self.constraint, self.ascend = constraint, ascend
        self.guard, self.guard_halvings = guard, guard_halvings
        self.lrp = LRP(model, lrp)

    def _succeeded(self, logits: torch.Tensor, adversarial: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        changed = logits.argmax(dim=1) != labels
        if self.constraint is not None:
            changed &= self.constraint(adversarial)
        return changed

    @torch.no_grad()
    def _backtrack(self, moved: torch.Tensor, current: torch.Tensor, direction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Halve the steps whose result breaks ``constraint`` (in place in ``moved``); returns the
        rows that break it after ``guard_halvings`` halvings. ``current`` satisfies it already."""
        broken = ~self.constraint(moved)
        scale = torch.ones(len(moved), device=moved.device)
        for _ in range(self.guard_halvings):
            if not broken.any():
                break
            scale[broken] /= 2
            retry = broken.nonzero().squeeze(1)
            step = direction[retry] * scale[retry].view(-1, *([1] * (direction.dim() - 1)))
            moved[retry] = clip_linf(current[retry] - step, images[retry], self.eps)
            broken[retry] = ~self.constraint(moved[retry])
        return broken

    def perturb(self, images: torch.Tensor, labels: torch.Tensor, progress=None) -> LRPAttackResult:
        """``progress``: a tqdm bar advanced by one per image as it succeeds (the rest at the end),
        its postfix showing the iteration."""
        adversarial = images.clone()
        success = torch.zeros(len(images), dtype=torch.bool, device=images.device)
        stalled = torch.zeros_like(success)
        active = torch.ones_like(success)
        iterations = torch.zeros(len(images), dtype=torch.long, device=images.device)
        progress_done = 0
        for index in range(self.steps + 1):
            # only the still-active rows are explained and differentiated: finished ones cost nothing
            rows = active.nonzero().squeeze(1)
            probe = adversarial[rows].detach().requires_grad_(True)
            if index == self.steps:  # the last check needs labels only, not heatmaps
                with torch.no_grad():
                    logits = self.model(probe)
            else:
                loss, logits = lrp_loss(self.lrp, probe)
            with torch.no_grad():
                success[rows] = self._succeeded(logits.detach(), probe.detach(), labels[rows])
            active &= ~success
            if progress is not None:
                progress.update(int(success.sum()) - int(progress_done))
                progress_done = int(success.sum())
                progress.set_postfix(step=f"{index}/{self.steps}", refresh=False)
            if index == self.steps or not active.any():
                break
            keep = ~success[rows]
            # d L / d eta = d L / d (x + eta) inside the box; per-sample losses are independent
            (grad,) = torch.autograd.grad(loss.sum(), probe)
            grad = grad[keep]
            rows = rows[keep]
            flat = grad.flatten(1)
            bad = ~(torch.isfinite(flat).all(1) & (flat.abs().amax(1) > 0))
            stalled[rows[bad]] = True
            grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
            direction = grad.sign() * self.step_size if self.step == "sign" else grad * self.lr
            if self.ascend:
                direction = -direction
            moved = clip_linf(adversarial[rows] - direction, images[rows], self.eps)
            good = ~bad
            if self.guard == "backtrack" and self.constraint is not None:
                blocked = self._backtrack(moved, adversarial[rows], direction, images[rows])
                stalled[rows[blocked & good]] = True
                active[rows[blocked]] = False
                good &= ~blocked
            adversarial[rows[good]] = moved[good].detach()
            iterations[rows[good]] += 1
            active[rows[bad]] = False
        if progress is not None:
            progress.update(len(images) - progress_done)
        return LRPAttackResult(adversarial.detach(), success, iterations, stalled)
