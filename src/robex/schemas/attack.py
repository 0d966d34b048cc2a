"""Schemas of the `attack` stage (conf/attack.yaml) and its `attack` group (conf/attack/*.yaml).

One schema per kind of option file: ``lrp_schema`` (lrpc, lrpf), ``pgd_schema`` (pgdc, pgdf),
``deepfool_schema`` (dfc, dff) and ``c2f_tables_schema`` (the Tables I/II suite). Unknown keys and
wrong types fail at composition; value checks raise RobexError naming the key (``check``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from robex.utils.errors import RobexError

RELEVANCE_INITS = ("onehot", "logit", "softmax")
ZPLUS_BIAS = ("include", "exclude")
RULE_SETS = ("paper", "epsilon", "alpha_beta")
STEPS = ("gradient", "sign")
GUARDS = ("none", "backtrack")


def _one_of(key: str, value: Optional[str], allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise RobexError(f"attack.{key}={value!r} is not supported; use one of {', '.join(allowed)}")


@dataclass
class LRPOptionsConfig:
    """Algorithm 1's options plus how its LRP is computed (robex.attacks.lrp_attack.LRPOptions);
    every field optional so a suite's ``lrp_configs`` entries can override a subset."""

    steps: Optional[int] = None  # K
    step: Optional[str] = None  # gradient (line 7: eta -= lr dL/deta) | sign (PGD's step)
    lr: Optional[float] = None  # gradient step size
    guard: Optional[str] = None  # none (Alg. 1 as written) | backtrack (halve steps that change C's label; LRPF)
    step_size: Optional[float] = None  # sign step on the 0..255 scale; null = eps / 10
    relevance_init: Optional[str] = None  # onehot (eq. 3) | logit | softmax
    zplus_bias: Optional[str] = None  # include (zennit ZPlus) | exclude (eq. 4 as written)
    rules: Optional[str] = None  # paper (z+ / z-beta) | epsilon | alpha_beta
    epsilon: Optional[float] = None
    alpha: Optional[float] = None
    stabilizer: Optional[float] = None

    def __post_init__(self) -> None:
        _one_of("step", self.step, STEPS)
        _one_of("guard", self.guard, GUARDS)
        _one_of("relevance_init", self.relevance_init, RELEVANCE_INITS)
        _one_of("zplus_bias", self.zplus_bias, ZPLUS_BIAS)
        _one_of("rules", self.rules, RULE_SETS)
        for key in ("steps", "lr", "step_size", "epsilon", "stabilizer"):
            value = getattr(self, key)
            if value is not None and value < 0:
                raise RobexError(f"attack.{key}={value} must be >= 0")


@dataclass
class LRPConfigurationConfig(LRPOptionsConfig):
    """One entry of a suite's ``lrp_configs``: LRP options plus the levels it runs at."""

    levels: Optional[List[str]] = None  # run this configuration at these levels (coarse, fine); null = both

    def __post_init__(self) -> None:
        super().__post_init__()
        for level in self.levels or ():
            _one_of("levels", level, ("coarse", "fine"))


@dataclass
class LRPAttackConfig(LRPOptionsConfig):
    name: str = MISSING  # lrpc | lrpf
    label: str = MISSING
    eps: Any = 10  # L-inf clip of eta on the 0..255 scale (Any: 10 stays "10" in the output label)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_eps(self.eps)


def _check_eps(eps: Any) -> None:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0:
        raise RobexError(f"attack.eps={eps!r} must be a number >= 0 (0..255 scale)")


@dataclass
class PGDOptionsConfig:
    eps: Any = 8  # Any: 8 stays "8" in the output label
    step_size: float = 1.0
    steps: int = 20
    random_start: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        _check_eps(self.eps)


@dataclass
class PGDAttackConfig(PGDOptionsConfig):
    name: str = MISSING  # pgdc | pgdf
    label: str = MISSING


@dataclass
class DeepFoolOptionsConfig:
    steps: int = 50
    overshoot: float = 0.02
    candidates: int = 10


@dataclass
class DeepFoolAttackConfig(DeepFoolOptionsConfig):
    name: str = MISSING  # dfc | dff
    label: str = MISSING


@dataclass
class C2FTablesConfig:
    name: str = MISSING
    label: str = MISSING
    coarse: List[str] = field(default_factory=list)  # Table I columns
    fine: List[str] = field(default_factory=list)  # Table II columns
    lrp_eps: List[float] = field(default_factory=list)
    lrp: LRPOptionsConfig = field(default_factory=LRPOptionsConfig)
    lrp_configs: Dict[str, LRPConfigurationConfig] = field(default_factory=dict)  # e.g. working, paper_literal
    pgd: PGDOptionsConfig = field(default_factory=PGDOptionsConfig)
    deepfool: DeepFoolOptionsConfig = field(default_factory=DeepFoolOptionsConfig)


@dataclass
class AttackStageConfig:
    seed: int = 0
    device: str = "auto"
    batch_size: int = 32
    num_images: Optional[int] = None
    figure_examples: int = 2
    target: str = MISSING
    targets: Dict[str, Any] = MISSING  # name -> {model_path, images: {_target_: loader, ...}}
    output_dir: str = MISSING
    attack: Any = MISSING
    paths: Any = MISSING
    tracking: Any = MISSING

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise RobexError(f"batch_size={self.batch_size} must be an integer >= 1, e.g. 32")
        if self.num_images is not None and self.num_images < 1:
            raise RobexError(f"num_images={self.num_images} must be >= 1, or null for every correctly classified image")
        if self.figure_examples < 0:
            raise RobexError(f"figure_examples={self.figure_examples} must be >= 0 (0 draws no example panels)")


def register(cs) -> None:
    cs.store(name="attack_schema", node=AttackStageConfig)
    cs.store(group="attack", name="lrp_schema", node=LRPAttackConfig)
    cs.store(group="attack", name="pgd_schema", node=PGDAttackConfig)
    cs.store(group="attack", name="deepfool_schema", node=DeepFoolAttackConfig)
    cs.store(group="attack", name="c2f_tables_schema", node=C2FTablesConfig)
