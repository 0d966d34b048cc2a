"""LRP relevance maps with zennit, one rule at every layer (Dieter & Zisgen 2023, Sect. 3.3, Table 1).

Rules (Table 1): LRP-0, LRP-epsilon (z + eps * sgn(z) in the denominator, sgn(0) = 1), and
LRP-alpha-beta with alpha + beta = 1 in the paper's sign convention (zennit writes the negative
part with a minus sign, so its ``beta`` is ``alpha - 1`` >= 0). As the paper states, no
composite mixes rules by layer position: every Conv2d and Linear gets the same rule; ReLU passes
relevance through unchanged; max-pooling keeps zennit's gradient (winner-take-all); BatchNorm is
merged into the preceding convolution by zennit's ``SequentialMergeBatchNorm`` canonizer, so its
affine transform is explained as part of the convolution instead of as a separate layer.

Input normalisation: robex models start with a ``normalize`` layer ((x - mean) / std). Folding it
into the first convolution is not exact on the zero-padded border (padding zeros in normalised
space are ``mean`` in pixel space), so instead relevance is explained at the *normalised* input,
i.e. the actual input of the first convolution, with Normalize treated as preprocessing. The map
has the same 3 x 32 x 32 components (Normalize is element-wise), the conservation property holds
at the first convolution's input, and the paper's TensorFlow pipeline saw the same input if it
standardised the data before the network.

Initial relevance (Sect. 3.3): the pre-softmax logit of the explained class, all other outputs 0.
Each map is then divided by its own max-abs (maximum norm), keeping ratios and signs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import LayerMapComposite
from zennit.rules import AlphaBeta, Epsilon, Pass
from zennit.types import Activation, Convolution, Linear


def _safe_denominator(z: torch.Tensor) -> torch.Tensor:
    # LRP-0 divides by z itself; where z == 0 exactly the incoming relevance is 0 in a ReLU
    # network, so dividing by 1 there only avoids 0/0 and leaves every other message exact.
    return torch.where(z == 0, torch.ones_like(z), z)


@dataclass(frozen=True)
class LRPRule:
    """One decomposition rule of Table 1: ``kind`` in {"lrp0", "epsilon", "alpha_beta"}.

    ``epsilon`` is used by "epsilon"; ``alpha`` by "alpha_beta" (beta = 1 - alpha, paper
    convention); ``stabilizer`` only guards alpha-beta's divisions by an all-zero part.
    """

    name: str
    kind: str
    epsilon: float = 0.0
    alpha: float = 1.0
    stabilizer: float = 1e-6

    def __post_init__(self) -> None:
        if self.kind not in ("lrp0", "epsilon", "alpha_beta"):
            raise ValueError(f"LRP rule {self.name!r} has kind={self.kind!r}; use 'lrp0', 'epsilon' or 'alpha_beta'")
        if self.kind == "epsilon" and self.epsilon <= 0:
            raise ValueError(f"LRP rule {self.name!r} needs epsilon > 0 (got {self.epsilon}); use kind='lrp0' for epsilon = 0")
        if self.kind == "alpha_beta" and self.alpha < 1:
            raise ValueError(f"LRP rule {self.name!r} needs alpha >= 1 (got {self.alpha}), as Table 1 requires")

    def hook(self):
        """The zennit rule for Conv2d/Linear layers."""
        if self.kind == "lrp0":
            return Epsilon(epsilon=_safe_denominator)
        if self.kind == "epsilon":
            return Epsilon(epsilon=self.epsilon)
        return AlphaBeta(alpha=self.alpha, beta=self.alpha - 1.0, stabilizer=self.stabilizer)


def paper_rules() -> list[LRPRule]:
    """The seven rules of Sect. 3.3 in the column order of Tables 3 and 4."""
    return [
        LRPRule("lrp0", "lrp0"),
        LRPRule("epsilon_0.0001", "epsilon", epsilon=1e-4),
        LRPRule("epsilon_0.01", "epsilon", epsilon=0.01),
        LRPRule("epsilon_0.1", "epsilon", epsilon=0.1),
        LRPRule("epsilon_1", "epsilon", epsilon=1.0),
        LRPRule("alpha_beta_1", "alpha_beta", alpha=1.0),
        LRPRule("alpha_beta_2", "alpha_beta", alpha=2.0),
    ]


def split_input_normalization(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(normalize, body) with body(normalize(x)) == model(x); body is a copy with Identity in place.

    The copy keeps the caller's model free of canonizer edits and hooks.
    """
    body = copy.deepcopy(model).eval()
    normalize = getattr(model, "normalize", None)
    if normalize is None:
        return nn.Identity(), body
    body.normalize = nn.Identity()
    return copy.deepcopy(normalize).eval(), body


def same_rule_composite(rule: LRPRule) -> LayerMapComposite:
    """Every Conv2d/Linear gets ``rule``; activations pass; BatchNorm merged; max-pool by gradient."""
    return LayerMapComposite(
        layer_map=[(Activation, Pass()), (Convolution, rule.hook()), (Linear, rule.hook())],
        canonizers=[SequentialMergeBatchNorm()],
    )


class RelevanceExplainer:
    """Batched LRP maps for one rule; use as a context manager so hooks are always removed.

    >>> with RelevanceExplainer(model, rule) as explain:
    ...     maps = explain(images, classes)   # (N, 3, H, W), each max-abs normalised
    """

    def __init__(self, model: nn.Module, rule: LRPRule) -> None:
        self.normalize, self.body = split_input_normalization(model)
        self.rule = rule
        self._attributor: Gradient | None = None

    def __enter__(self) -> RelevanceExplainer:
        self._attributor = Gradient(model=self.body, composite=same_rule_composite(self.rule))
        self._attributor.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._attributor is not None:
            self._attributor.__exit__(*exc_info)
            self._attributor = None

    def raw(self, images: torch.Tensor, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unnormalised input relevance (at the normalised input) and the logits."""
        if self._attributor is None:
            raise RuntimeError("RelevanceExplainer must be entered with `with` before use")
        with torch.no_grad():
            normalized = self.normalize(images)
        classes = classes.to(images.device).view(-1, 1)

        def initial_relevance(logits: torch.Tensor) -> torch.Tensor:
            # Sect. 3.3: R^{n_L} = pre-softmax logit of the explained class, 0 elsewhere
            return torch.zeros_like(logits).scatter_(1, classes, 1.0) * logits

        logits, relevance = self._attributor(normalized, attr_output=initial_relevance)
        return relevance.detach(), logits.detach()

    def __call__(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        relevance, _ = self.raw(images, classes)
        return max_abs_normalize(relevance)


def max_abs_normalize(maps: torch.Tensor) -> torch.Tensor:
    """Divide each map by its own maximum absolute value (Sect. 3.3, maximum norm); all-zero maps stay 0."""
    scale = maps.flatten(1).abs().amax(dim=1).clamp_min(torch.finfo(maps.dtype).tiny)
    return maps / scale.view(-1, *([1] * (maps.dim() - 1)))


@contextmanager
def explainer(model: nn.Module, rule: LRPRule) -> Iterator[RelevanceExplainer]:
    with RelevanceExplainer(model, rule) as explain:
        yield explain
