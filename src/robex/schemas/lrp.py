"""Schemas of the `lrp_study` stage (conf/lrp_study.yaml) and its group `lrp` (conf/lrp/*.yaml).

Closed dataclasses: an unknown key or a wrong type fails while Hydra composes. Range checks run in
``__post_init__`` (``robex.schemas.check`` at the start of the stage) and name the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from robex.utils.errors import RobexError

STEPS = ("attack", "relevance", "statistics", "all")
RULE_KINDS = ("lrp0", "epsilon", "alpha_beta", "zplus")  # robex.lrp.attribution.RULE_KINDS (no torch import here)
BATCHNORM = ("layer", "merge")


@dataclass
class LBFGSConfig:
    """robex.attacks.lbfgs.LBFGS arguments (the stage passes the model)."""

    _target_: str = "robex.attacks.lbfgs.LBFGS"
    _partial_: bool = True
    tolerance: float = 1e-5
    initial_ce_weight: Optional[float] = None
    max_doublings: int = 30
    max_bisections: Optional[int] = None
    maxiter: int = 150
    warm_start: bool = False
    warm_start_maxiter: Optional[int] = None
    warm_start_phase: str = "all"
    history_size: int = 15
    factr: float = 1e7
    scale: float = 1e10
    distance: str = "mse"
    loss_on: str = "logits"
    show_progress: bool = False

    def __post_init__(self) -> None:
        if self.distance not in ("mse", "mean_abs"):
            raise RobexError(f"lrp.attack.distance={self.distance!r} is not supported; use mse or mean_abs (the paper's)")
        if self.warm_start_phase not in ("all", "bisection"):
            raise RobexError(f"lrp.attack.warm_start_phase={self.warm_start_phase!r} is not supported; use all or bisection")
        if self.loss_on not in ("logits", "probabilities"):
            raise RobexError(f"lrp.attack.loss_on={self.loss_on!r} is not supported; use logits or probabilities (the paper's code)")
        if self.tolerance <= 0 or self.maxiter < 1 or self.max_doublings < 1:
            raise RobexError(f"lrp.attack needs tolerance > 0, maxiter >= 1 and max_doublings >= 1 "
                             f"(got {self.tolerance}, {self.maxiter}, {self.max_doublings})")


@dataclass
class RuleConfig:
    """One robex.lrp.attribution.LRPRule (the name is its key in ``lrp.rules``)."""

    kind: str = MISSING
    epsilon: float = 0.0
    alpha: float = 1.0
    stabilizer: float = 1e-6
    input_rule: str = "same"

    def __post_init__(self) -> None:
        if self.kind not in RULE_KINDS:
            raise RobexError(f"lrp.rules.*.kind={self.kind!r} is not a rule kind; use one of {', '.join(RULE_KINDS)}")


@dataclass
class RankingConfig:
    small_fraction: float = 0.01
    large_fraction: float = 0.10
    rank_by: str = "value"
    abs_shift_quantiles: List[float] = field(default_factory=lambda: [0.5, 0.7, 0.9])

    def __post_init__(self) -> None:
        if self.rank_by not in ("value", "abs"):
            raise RobexError(f"lrp.ranking.rank_by={self.rank_by!r} is not supported; use value (Fig. 4) or abs")
        if not 0 < self.small_fraction <= self.large_fraction < 1:
            raise RobexError(f"lrp.ranking needs 0 < small_fraction <= large_fraction < 1 (got {self.small_fraction}, {self.large_fraction})")


@dataclass
class LRPSettings:
    """The group `lrp` (conf/lrp/paper.yaml, quick.yaml, medium.yaml)."""

    name: str = MISSING
    num_images: Optional[int] = None
    attack_batch_size: int = 256
    relevance_batch_size: int = 32
    attack: LBFGSConfig = field(default_factory=LBFGSConfig)
    rules: Dict[str, RuleConfig] = field(default_factory=dict)
    rule_names: List[str] = field(default_factory=list)
    batchnorm: List[str] = field(default_factory=lambda: ["layer", "merge"])
    zplus_bias: str = "include"
    quantiles: List[float] = field(default_factory=lambda: [0.001, 0.005, 0.01, 0.1, 0.5, 0.9, 0.99, 0.995, 0.999])
    irrelevant_threshold: float = 0.001
    ranking: RankingConfig = field(default_factory=RankingConfig)
    save_maps: bool = False
    heatmap_examples: int = 3

    def __post_init__(self) -> None:
        if self.num_images is not None and self.num_images < 1:
            raise RobexError(f"lrp.num_images={self.num_images} must be a positive integer or null (all correct images)")
        if self.attack_batch_size < 1 or self.relevance_batch_size < 1:
            raise RobexError(f"lrp.attack_batch_size={self.attack_batch_size} and lrp.relevance_batch_size={self.relevance_batch_size} must be >= 1")
        bad = [value for value in self.batchnorm if value not in BATCHNORM]
        if bad or not self.batchnorm:
            raise RobexError(f"lrp.batchnorm={list(self.batchnorm)} must list layer and/or merge (robex.lrp.attribution)")
        if self.zplus_bias not in ("include", "exclude"):
            raise RobexError(f"lrp.zplus_bias={self.zplus_bias!r} is not supported; use include or exclude")
        missing = [name for name in self.rule_names if name not in self.rules]
        if missing or not self.rule_names:
            listed = ", ".join(repr(name) for name in missing) or "nothing"
            raise RobexError(f"lrp.rule_names lists {listed}, which is not defined in lrp.rules; choose from {list(self.rules)}")


@dataclass
class LRPStudyConfig:
    seed: int = 0
    step: str = "all"
    model_path: str = MISSING
    prepared_dir: str = MISSING
    split: str = "test"
    out_dir: str = MISSING
    device: str = "cpu"
    resume: bool = True
    lrp: Any = MISSING
    paths: Any = MISSING
    tracking: Any = MISSING

    def __post_init__(self) -> None:
        if self.step not in STEPS:
            raise RobexError(f"step={self.step!r} is not one of {list(STEPS)}")


def register(cs) -> None:
    cs.store(group="lrp", name="lrp_schema", node=LRPSettings)
    cs.store(name="lrp_study_schema", node=LRPStudyConfig)
