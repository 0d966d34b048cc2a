"""Schema of the `verify` stage (conf/verify.yaml and the conf/verify/{oracle,search,budget} groups, Mour 2023 Sect. 2-3).

The group files are DVC params files: plain leaf YAML, no interpolation. The field lists mirror
``robex.verify.oracle.OracleSettings`` and ``robex.verify.search.SearchSettings`` (budget + search
keys), which the stage builds from them; an unknown key fails at composition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import MISSING

from robex.utils.errors import RobexError

BACKENDS = ("auto", "highs", "gurobi", "bab")
LICENSE_FREE = ("bab", "highs")
STRATEGIES = ("cegis", "binary")
CUTTING_WEIGHTS = ("fixed", "sensitivity")


@dataclass
class OracleConfig:
    use_cache: bool = True
    use_attack: bool = True
    use_bounds: bool = True
    attack_steps: int = 20
    attack_restarts: int = 4
    attack_step_fraction: float = 0.25
    escalation_steps: int = 100
    escalation_restarts: int = 32
    lp_budget_seconds: float = 0.0
    milp_time_limit: float = 10.0
    final_time_limit: float = 60.0
    warm_start: bool = True
    fuse_relu_maxpool: bool = True
    backend: str = "auto"
    license_free: str = "highs"
    threads: int = 1
    top_k: int = 2

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise RobexError(f"verify.oracle.backend={self.backend!r} is unknown; use one of {', '.join(BACKENDS)}")
        if self.license_free not in LICENSE_FREE:
            raise RobexError(f"verify.oracle.license_free={self.license_free!r} is unknown; use one of {', '.join(LICENSE_FREE)}")
        if self.lp_budget_seconds < 0:
            raise RobexError(f"verify.oracle.lp_budget_seconds={self.lp_budget_seconds} must be >= 0 seconds (0 turns LP tightening off)")
        for key in ("milp_time_limit", "final_time_limit"):
            if getattr(self, key) <= 0:
                raise RobexError(f"verify.oracle.{key}={getattr(self, key)} must be > 0 seconds, e.g. 10")
        for key, low in (("attack_steps", 0), ("attack_restarts", 1), ("escalation_steps", 0), ("escalation_restarts", 1), ("threads", 1)):
            if getattr(self, key) < low:
                raise RobexError(f"verify.oracle.{key}={getattr(self, key)} must be >= {low}")


@dataclass
class SearchConfig:
    strategy: str = "cegis"
    cutting_weights: List[str] = field(default_factory=lambda: ["fixed", "sensitivity"])
    step_size: float = 0.05
    step_growth: float = 1.5
    lambda_: float = 1.0
    lambda_decay: float = 0.8
    max_shrinks: int = 3

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise RobexError(f"verify.search.strategy={self.strategy!r} is unknown; use one of {', '.join(STRATEGIES)}")
        bad = [c for c in self.cutting_weights if c not in CUTTING_WEIGHTS]
        if bad or not self.cutting_weights:
            raise RobexError(f"verify.search.cutting_weights={list(self.cutting_weights)} must be a non-empty list of {', '.join(CUTTING_WEIGHTS)}")
        if self.step_size <= 0:
            raise RobexError(f"verify.search.step_size={self.step_size} must be > 0")


@dataclass
class BudgetConfig:
    """One budget shared by every strategy, so a sweep over verify/search compares like with like."""

    max_queries: int = 60
    max_seconds: float = 60.0
    tolerance: float = 0.005
    polish: bool = True
    polish_max_queries: int = 60
    polish_max_seconds: float = 60.0
    polish_attack_scale: int = 4

    def __post_init__(self) -> None:
        rules = (("max_queries", self.max_queries >= 1, ">= 1"), ("max_seconds", self.max_seconds > 0, "> 0"),
                 ("tolerance", 0 < self.tolerance < 1, "in (0, 1)"), ("polish_max_queries", self.polish_max_queries >= 0, ">= 0"),
                 ("polish_max_seconds", self.polish_max_seconds >= 0, ">= 0"), ("polish_attack_scale", self.polish_attack_scale >= 1, ">= 1"))
        for name, holds, rule in rules:
            if not holds:
                raise RobexError(f"verify.budget.{name}={getattr(self, name)} must be {rule}")


@dataclass
class VerifyGroups:
    oracle: OracleConfig = field(default_factory=OracleConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)


@dataclass
class LayersConfig:
    merge_from: Optional[int] = 8
    weights: str = "uniform"

    def __post_init__(self) -> None:
        if self.merge_from is not None and self.merge_from < 1:
            raise RobexError(f"layers.merge_from={self.merge_from} must be >= 1 or null (keep every layer)")
        if self.weights not in ("uniform", "pixels"):
            raise RobexError(f"layers.weights={self.weights!r} must be uniform or pixels")


@dataclass
class ShardConfig:
    index: int = 0
    count: int = 1


@dataclass
class VerifyConfig:
    seed: int = 0
    threads: int = 1
    device: str = "cpu"
    defenses: List[str] = field(default_factory=lambda: ["none", "l0", "pgd"])
    model_dir: str = MISSING
    data_path: str = MISSING
    num_images: int = 2
    target_slot: int = 0
    layers: LayersConfig = field(default_factory=LayersConfig)
    reverify: bool = True
    shard: ShardConfig = field(default_factory=ShardConfig)
    output_dir: str = MISSING
    verify: VerifyGroups = field(default_factory=VerifyGroups)
    paths: Any = MISSING
    tracking: Any = MISSING

    def __post_init__(self) -> None:
        if self.num_images < 1:
            raise RobexError(f"num_images={self.num_images} must be >= 1")
        if self.target_slot not in (0, 1):
            raise RobexError(f"target_slot={self.target_slot} must be 0 (left digit is the target) or 1 (right digit)")


def register(cs) -> None:
    cs.store(name="verify_schema", node=VerifyConfig)
    cs.store(group="verify/oracle", name="oracle_schema", node=OracleConfig)
    cs.store(group="verify/search", name="search_schema", node=SearchConfig)
    cs.store(group="verify/budget", name="budget_schema", node=BudgetConfig)
