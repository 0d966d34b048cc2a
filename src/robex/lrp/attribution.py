"""The one zennit LRP front-end of robex: composites, BatchNorm treatment, initial relevance, heatmaps.

Every LRP map in robex comes from here: the LRP study (Dieter & Zisgen 2023, paper 001, Sect. 3.3,
Table 1) and the LRP-guided attacks LRPC/LRPF (Heidarizadeh et al., paper 002, eqs. 3-5).

Options (all plain arguments, so a sweep can set them):

``rule`` (:class:`LRPRule`)
    The rule of every Conv/Linear layer: LRP-0, LRP-epsilon (z + eps * sgn(z), sgn(0) = 1),
    LRP-alpha-beta in paper 001's sign convention (alpha + beta = 1; zennit's ``beta`` is
    ``alpha - 1``), or z+ (alpha = 1, paper 002 eq. 4). ``input_rule="zbox"`` replaces the rule of
    the first Conv/Linear by z-beta (ZBox, paper 002 eq. 5) with the pixel bounds [0, 1] mapped
    through the model's ``Normalize``. Paper 001 uses no such mix ("no composition of different
    decomposition rules", Sect. 3.3); paper 002 does.
``zplus_bias``: ``"include"`` | ``"exclude"``
    z+ and alpha-beta split every pre-activation into positive and negative parts. ``include``
    (zennit's ZPlus/AlphaBeta and paper 001's code) keeps the positive bias in the positive
    denominator, z_j^+ = sum_i (x_i w_ij)^+ + b_j^+, so relevance is absorbed by biases and a map no
    longer sums to R^L. ``exclude`` is eq. (4) of paper 002 as written, z_j^+ = sum_i (x_i w_ij)^+:
    relevance is conserved exactly (every one-hot map sums to 1, whatever the input).
``batchnorm``: ``"merge"`` | ``"layer"``
    ``merge`` folds every BatchNorm into the conv/linear before it (torch's ``fuse_conv_bn_eval``
    on a frozen copy, the canonizer view: BN's affine map is part of the layer's weights and bias,
    so the layer rule sees w' = w * gamma / sqrt(var + eps_bn), b' = (b - mu) gamma / sqrt(...) + beta).
    ``layer`` is the treatment of paper 001's public code (``LRP.py``, ``backprop_batchNorm``): BN
    stays a layer with a rule of its own, whatever the chosen conv rule,

        R_i^in = x_i R_i^out / (y_i + eps),   x_i = a_i gamma_i / sqrt(var_i + eps_bn),
                                              y_i = x_i + beta_i - mu_i gamma_i / sqrt(var_i + eps_bn),

    i.e. LRP-0 with an unsigned additive stabiliser ``eps`` (the rule's epsilon; 1e-7 for the
    other rules, as its ``03_run_LRP.py`` sets). Where the BN shift has the other sign than x_i,
    x_i / y_i is negative, so even alpha = 1 (z+) gives negative input relevance (paper 001 Table 4,
    alpha = 1, q0.001 = -0.2043); merging BN first can never (the z+ messages stay >= 0).
    Differences kept on purpose: the paper's code puts its LRP epsilon inside the square root in
    place of BN's own eps (for eps = 1 that changes the layer's scale); we use the model's BN eps
    so the explained function is the model's.
``relevance_init``: ``"onehot"`` | ``"logit"`` | ``"softmax"``
    R^L = delta_c (paper 002 eq. 3), f_c(x) delta_c (paper 001 Sect. 3.3: the pre-softmax value)
    or softmax_c(x) delta_c. With ``create_graph`` the logit/softmax start stays differentiable.

Pixel space: robex models take [0, 1] images and normalise inside (``Normalize``). ``Normalize``
gets zennit's ``Pass`` rule, so the returned map is the relevance at the first layer's input (the
normalised image), indexed like the pixels; conservation holds there. Paper 001's code did not
standardise: it only divided the pixels by 255 (``images_norm``), so its first convolution saw
[0, 1] values; with our standardised first layer the input relevance of a pixel differs by the
per-channel affine map, while the network function is the same kind of Table 2 CNN.

Max-pooling keeps zennit's gradient (winner-take-all), activations pass relevance unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from zennit.attribution import Gradient
from zennit.composites import LayerMapComposite, SpecialFirstLayerMapComposite, layer_map_base
from zennit.rules import AlphaBeta, Epsilon, Pass, ZBox, ZPlus
from zennit.types import BatchNorm
from zennit.types import Linear as LinearOrConv

from robex.models.normalize import Normalize

ClassSelector = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]

RULE_KINDS = ("lrp0", "epsilon", "alpha_beta", "zplus")
INPUT_RULES = ("same", "zbox")
ZPLUS_BIAS = ("include", "exclude")
BATCHNORM = ("merge", "layer")
RELEVANCE_INIT = ("onehot", "logit", "softmax")
PAPER_BATCHNORM_EPSILON = 1e-7  # paper 001's 03_run_LRP.py: epsilon of every non-epsilon rule


def _safe_denominator(z: torch.Tensor) -> torch.Tensor:
    # LRP-0 divides by z itself; where z == 0 exactly the incoming relevance is 0 in a ReLU
    # network, so dividing by 1 there only avoids 0/0 and leaves every other message exact.
    return torch.where(z == 0, torch.ones_like(z), z)


@dataclass(frozen=True)
class LRPRule:
    """One decomposition rule (paper 001 Table 1, paper 002 eqs. 4-5).

    ``kind`` in {"lrp0", "epsilon", "alpha_beta", "zplus"}; ``epsilon`` is used by "epsilon";
    ``alpha`` by "alpha_beta" (beta = 1 - alpha, paper 001's convention); ``stabilizer`` only
    guards divisions by an all-zero part (alpha-beta, z+, ZBox). ``input_rule="zbox"`` gives
    the first Conv/Linear the z-beta rule (paper 002 eq. 5).
    """

    name: str
    kind: str
    epsilon: float = 0.0
    alpha: float = 1.0
    stabilizer: float = 1e-6
    input_rule: str = "same"

    def __post_init__(self) -> None:
        if self.kind not in RULE_KINDS:
            raise ValueError(f"LRP rule {self.name!r} has kind={self.kind!r}; use one of {', '.join(RULE_KINDS)}")
        if self.kind == "epsilon" and self.epsilon <= 0:
            raise ValueError(f"LRP rule {self.name!r} needs epsilon > 0 (got {self.epsilon}); use kind='lrp0' for epsilon = 0")
        if self.kind == "alpha_beta" and self.alpha < 1:
            raise ValueError(f"LRP rule {self.name!r} needs alpha >= 1 (got {self.alpha}), as Table 1 requires")
        if self.input_rule not in INPUT_RULES:
            raise ValueError(f"LRP rule {self.name!r} has input_rule={self.input_rule!r}; use 'same' or 'zbox'")

    def hook(self, zplus_bias: str = "include"):
        """A fresh zennit rule for Conv/Linear layers."""
        zero = ["bias"] if zplus_bias == "exclude" else None
        if self.kind == "lrp0":
            return Epsilon(epsilon=_safe_denominator)
        if self.kind == "epsilon":
            return Epsilon(epsilon=self.epsilon)
        if self.kind == "zplus":
            return ZPlus(stabilizer=self.stabilizer, zero_params=zero)
        return AlphaBeta(alpha=self.alpha, beta=self.alpha - 1.0, stabilizer=self.stabilizer, zero_params=zero)

    @property
    def batchnorm_epsilon(self) -> float:
        """The stabiliser paper 001's code used in its BatchNorm rule for this rule."""
        return self.epsilon if self.kind == "epsilon" else PAPER_BATCHNORM_EPSILON


def paper_rules() -> list[LRPRule]:
    """The seven rules of paper 001 Sect. 3.3 in the column order of its Tables 3 and 4."""
    return [
        LRPRule("lrp0", "lrp0"),
        LRPRule("epsilon_0.0001", "epsilon", epsilon=1e-4),
        LRPRule("epsilon_0.01", "epsilon", epsilon=0.01),
        LRPRule("epsilon_0.1", "epsilon", epsilon=0.1),
        LRPRule("epsilon_1", "epsilon", epsilon=1.0),
        LRPRule("alpha_beta_1", "alpha_beta", alpha=1.0),
        LRPRule("alpha_beta_2", "alpha_beta", alpha=2.0),
    ]


def zplus_zbox_rule(stabilizer: float = 1e-6) -> LRPRule:
    """Paper 002's rules: z+ on hidden layers (eq. 4), z-beta/ZBox on the first (eq. 5)."""
    return LRPRule("zplus_zbox", "zplus", stabilizer=stabilizer, input_rule="zbox")


def batchnorm_layer_rule(epsilon: float) -> Epsilon:
    """Paper 001's BatchNorm rule (``backprop_batchNorm``): R_in = x R_out / (y + eps).

    zennit's Epsilon hook computes input * d y/d input * R / stabilised(y); for eval-mode BN
    d y_i / d a_i = gamma_i / sqrt(var_i + eps_bn), so input * gradient = x_i of the docstring
    above, and the stabiliser adds ``epsilon`` without the sign (as the paper's code does).
    """

    def shifted(z: torch.Tensor) -> torch.Tensor:
        shifted_z = z + epsilon
        return torch.where(shifted_z == 0, torch.ones_like(z), shifted_z)

    return Epsilon(epsilon=shifted)


def input_bounds(model: nn.Module) -> tuple[torch.Tensor | float, torch.Tensor | float]:
    """Lowest/highest values the first layer can see: [0, 1] mapped through the model's Normalize.

    The ZBox bounds l_i, h_i of paper 002 eq. (5) live in the space the first layer sees,
    (x - mean) / std (shape (1, C, 1, 1)).
    """
    normalize = next((m for m in model.modules() if isinstance(m, Normalize)), None)
    if normalize is None:
        return 0.0, 1.0
    return (0 - normalize.mean) / normalize.std, (1 - normalize.mean) / normalize.std


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """A frozen eval-mode copy of ``model`` with every conv/linear -> batch-norm pair fused.

    zennit's ``SequentialMergeBatchNorm`` canonizer swaps ``.data`` in place and restores it on
    exit, which silently corrupts a second backward taken after the attribution; fusing into
    a copy with torch's own ``fuse_conv_bn_eval`` keeps the merged weights alive instead.
    A BatchNorm that does not directly follow a conv/linear in the same container raises.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    folded = frozen_copy(model)

    def fold(parent: nn.Module) -> None:
        children = list(parent.named_children())
        for (name, child), (next_name, following) in zip(children, children[1:]):
            if isinstance(following, nn.BatchNorm2d) and isinstance(child, nn.Conv2d):
                setattr(parent, name, fuse_conv_bn_eval(child, following))
                setattr(parent, next_name, nn.Identity())
            elif isinstance(following, nn.BatchNorm1d) and isinstance(child, nn.Linear):
                setattr(parent, name, fuse_linear_bn_eval(child, following))
                setattr(parent, next_name, nn.Identity())
        for child in parent.children():
            fold(child)

    fold(folded)
    left = [name for name, module in folded.named_modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise ValueError(f"batchnorm='merge' cannot fold {left} (no conv/linear right before them); use batchnorm='layer'")
    for parameter in folded.parameters():
        parameter.requires_grad_(False)
    return folded


def frozen_copy(model: nn.Module) -> nn.Module:
    """An eval-mode deep copy without parameter gradients (the caller's model keeps no hooks)."""
    copied = copy.deepcopy(model).eval()
    for parameter in copied.parameters():
        parameter.requires_grad_(False)
    return copied


def build_composite(
    model: nn.Module, rule: LRPRule, *, zplus_bias: str = "include", batchnorm: str = "merge",
    batchnorm_epsilon: float | None = None,
) -> LayerMapComposite:
    """The zennit composite of ``rule`` for ``model`` (already BN-folded when batchnorm='merge')."""
    layer_map = [(Normalize, Pass())]
    if batchnorm == "layer":
        # before layer_map_base, whose (BatchNorm, Pass()) would otherwise win
        eps = rule.batchnorm_epsilon if batchnorm_epsilon is None else batchnorm_epsilon
        layer_map.append((BatchNorm, batchnorm_layer_rule(eps)))
    layer_map += [*layer_map_base(rule.stabilizer), (LinearOrConv, rule.hook(zplus_bias))]
    if rule.input_rule == "zbox":
        low, high = input_bounds(model)
        zero = ["bias"] if zplus_bias == "exclude" else None
        first_map = [(LinearOrConv, ZBox(low, high, stabilizer=rule.stabilizer, zero_params=zero))]
        return SpecialFirstLayerMapComposite(layer_map=layer_map, first_map=first_map)
    return LayerMapComposite(layer_map=layer_map)


def initial_relevance(logits: torch.Tensor, classes: torch.Tensor, kind: str, create_graph: bool) -> torch.Tensor:
    """R^L for the explained ``classes``: one-hot, logit times one-hot, or softmax times one-hot."""
    delta = torch.nn.functional.one_hot(classes, logits.shape[1]).to(logits.dtype)
    if kind == "onehot":
        # zennit keeps the graph in a rule only if the incoming relevance requires grad; a
        # constant one-hot would cut the top layer's 1/z term out of the second derivative
        return delta.requires_grad_(create_graph)
    scale = logits if kind == "logit" else logits.softmax(dim=1)
    start = delta * scale
    return start if create_graph else start.detach()


def _check_option(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; use one of {', '.join(allowed)}")


class LRPAttribution:
    """Batched LRP maps of one model under one set of options; built once per model.

    It holds a frozen copy (BN-folded for ``batchnorm="merge"``), so later weight updates of the
    original are not seen and the caller's model never carries hooks.

    Two ways to call it:

    * ``attribution(images, classes, create_graph=...)`` registers the composite for that call
      only: the form for differentiable heatmaps (differentiate them after the call returns;
      while the composite is attached its hooks would rewrite that second backward too).
    * ``with attribution: ...`` keeps the composite registered across calls (no re-registration
      per batch), for plain heatmaps (create_graph=False).

    Both return ``(logits, relevance)`` with relevance shaped like ``images`` (unnormalised; see
    :func:`max_abs_normalize`). ``classes`` is a (B,) tensor or a function of the logits.
    """

    def __init__(
        self, model: nn.Module, rule: LRPRule | None = None, *, zplus_bias: str = "include", batchnorm: str = "merge",
        relevance_init: str = "onehot", batchnorm_epsilon: float | None = None,
    ) -> None:
        _check_option("zplus_bias", zplus_bias, ZPLUS_BIAS)
        _check_option("batchnorm", batchnorm, BATCHNORM)
        _check_option("relevance_init", relevance_init, RELEVANCE_INIT)
        self.rule = rule if rule is not None else zplus_zbox_rule()
        self.zplus_bias, self.batchnorm, self.relevance_init = zplus_bias, batchnorm, relevance_init
        self.model = fold_batch_norm(model) if batchnorm == "merge" else frozen_copy(model)
        self.composite_kwargs = {"zplus_bias": zplus_bias, "batchnorm": batchnorm, "batchnorm_epsilon": batchnorm_epsilon}
        self._attached: Gradient | None = None

    def composite(self) -> LayerMapComposite:
        return build_composite(self.model, self.rule, **self.composite_kwargs)

    def __enter__(self) -> LRPAttribution:
        self._attached = Gradient(model=self.model, composite=self.composite())
        self._attached.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._attached is not None:
            self._attached.__exit__(*exc_info)
            self._attached = None

    def _start(self, classes: ClassSelector, create_graph: bool) -> Callable[[torch.Tensor], torch.Tensor]:
        def start(logits: torch.Tensor) -> torch.Tensor:
            chosen = classes(logits) if callable(classes) else classes.to(logits.device)
            return initial_relevance(logits, chosen.view(-1), self.relevance_init, create_graph)

        return start

    def __call__(
        self, images: torch.Tensor, classes: ClassSelector, *, create_graph: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self._attached is not None:
            if create_graph:
                raise ValueError("create_graph=True needs the per-call form: call the attribution outside its `with` block")
            logits, heatmap = self._attached(images.detach(), self._start(classes, False))
            return logits.detach(), heatmap.detach()
        if create_graph and not images.requires_grad:
            images = images.detach().requires_grad_(True)
        elif not create_graph:
            images = images.detach()
        with Gradient(self.model, self.composite(), create_graph=create_graph) as attributor:
            logits, heatmap = attributor(images, self._start(classes, create_graph))
        if not create_graph:
            return logits.detach(), heatmap.detach()
        return logits, heatmap


def relevance(
    model: nn.Module, images: torch.Tensor, classes: ClassSelector, *, rule: LRPRule | None = None,
    zplus_bias: str = "include", batchnorm: str = "merge", relevance_init: str = "onehot", create_graph: bool = False,
) -> torch.Tensor:
    """One-shot form of :class:`LRPAttribution`: the (N, C, H, W) relevance of ``classes``."""
    attribution = LRPAttribution(model, rule, zplus_bias=zplus_bias, batchnorm=batchnorm, relevance_init=relevance_init)
    return attribution(images, classes, create_graph=create_graph)[1]


def max_abs_normalize(maps: torch.Tensor) -> torch.Tensor:
    """Divide each map by its own maximum absolute value (paper 001 Sect. 3.3, maximum norm); all-zero maps stay 0."""
    scale = maps.flatten(1).abs().amax(dim=1).clamp_min(torch.finfo(maps.dtype).tiny)
    return maps / scale.view(-1, *([1] * (maps.dim() - 1)))
