"""Schemas of the `train` stage and its groups: data, model, defense, optimizer, scheduler, trainer,
plus the groups every stage shares (paths, tracking).

Closed dataclasses reject unknown keys and wrong types at composition. Free-form constructor
arguments (``model.net``, ``data.module``, ``data.augment``: whatever ``hydra.utils.instantiate``
passes to the class) are ``Dict[str, Any]`` with a required ``_target_``; their checks are the
constructors' own. Range checks (``__post_init__``) run in :func:`validate`, at the start of the stage;
they agree with the constructors in ``robex.training.defenses``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from omegaconf import MISSING, DictConfig

from robex.utils.errors import RobexError

TASKS = ("single_label", "multi_label", "c2f")


def _needs_target(kwargs: Any, key: str, example: str) -> None:
    if kwargs is not None and "_target_" not in kwargs:
        raise RobexError(f"{key} needs a _target_ (the class to instantiate), e.g. {key}._target_={example}")


# --- shared groups -------------------------------------------------------------------------------
@dataclass
class PathsConfig:
    root_dir: str = MISSING
    data_root: str = MISSING
    cache_dir: str = MISSING
    output_dir: str = MISSING
    prepared_dir: str = MISSING
    train_dir: str = MISSING


@dataclass
class TrackingConfig:
    uri: str = MISSING
    experiment: str = MISSING


# --- data / model --------------------------------------------------------------------------------
@dataclass
class DataConfig:
    name: str = MISSING
    task: str = MISSING  # one of TASKS (checked in __post_init__: an Enum would turn the value into an object)
    monitor: str = MISSING
    module: Dict[str, Any] = MISSING  # a LightningDataModule: _target_ + its constructor arguments
    augment: Any = None  # robex.training.augment.Augment arguments, or null (Any, not Optional[Dict]: OmegaConf cannot merge a dict into a typed None node)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise RobexError(f"data.task={self.task!r} is not a task; use one of {', '.join(TASKS)}")
        _needs_target(self.module, "data.module", "robex.data.datamodules.DoubleMnistDataModule")
        _needs_target(self.augment, "data.augment", "robex.training.augment.Augment")
        for key, least in (("batch_size", 1), ("eval_batch_size", 1), ("num_workers", 0)):  # the free-form module's common arguments
            value = self.module.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
                raise RobexError(f"data.module.{key}={value!r} must be an integer >= {least}")


@dataclass
class ModelConfig:
    name: str = MISSING
    net: Dict[str, Any] = MISSING  # _target_ + the network's constructor arguments (saved in model.pt)

    def __post_init__(self) -> None:
        _needs_target(self.net, "model.net", "robex.models.cifar_cnn.CifarCNN")


# --- defenses (robex.training.defenses) ----------------------------------------------------------
@dataclass
class RobustEvalConfig:
    eps: float = MISSING
    steps: int = 20

    def __post_init__(self) -> None:
        if not 0.0 <= self.eps <= 1.0 or self.steps < 1:
            raise RobexError(f"robust_eval.eps={self.eps} must lie in [0, 1] and robust_eval.steps={self.steps} be >= 1")


@dataclass
class NoDefenseObj:
    _target_: str = "robex.training.defenses.NoDefense"


@dataclass
class RandomRectangleObj:
    _target_: str = "robex.training.defenses.RandomRectangle"
    min_size: int = 4
    max_size: int = 16
    probability: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.min_size <= self.max_size:
            raise RobexError(f"defense.obj.min_size={self.min_size} and defense.obj.max_size={self.max_size} need 1 <= min_size <= max_size")
        if not 0.0 <= self.probability <= 1.0:
            raise RobexError(f"defense.obj.probability={self.probability} must lie in [0, 1]")


@dataclass
class PGDTrainingObj:
    _target_: str = "robex.training.defenses.PGDTraining"
    eps: float = 0.1
    steps: int = 10
    step_size: float = 0.025
    random_start: bool = True
    fraction: float = 1.0
    seed: int = 0
    warmup_epochs: int = 0  # clean epochs before PGD starts
    ramp_epochs: int = 0  # epochs over which eps grows linearly to its value

    def __post_init__(self) -> None:
        if self.warmup_epochs < 0 or self.ramp_epochs < 0:
            raise RobexError(f"defense.obj.warmup_epochs={self.warmup_epochs} and defense.obj.ramp_epochs={self.ramp_epochs} must be >= 0")
        if not 0.0 <= self.eps <= 1.0:
            raise RobexError(f"defense.obj.eps={self.eps} must lie in [0, 1] (inputs are in [0, 1]); e.g. 0.1 for DOUBLE-MNIST, 8/255 for CIFAR-10")
        if self.steps < 1 or self.step_size <= 0:
            raise RobexError(f"defense.obj.steps={self.steps} must be >= 1 and defense.obj.step_size={self.step_size} > 0")
        if not 0.0 < self.fraction <= 1.0:
            raise RobexError(f"defense.obj.fraction={self.fraction} must lie in (0, 1]")


@dataclass
class NoDefenseConfig:
    name: str = "none"
    obj: NoDefenseObj = field(default_factory=NoDefenseObj)
    robust_eval: Optional[RobustEvalConfig] = None  # PGD-attacked test accuracy, or null


@dataclass
class L0DefenseConfig:
    name: str = "l0"
    obj: RandomRectangleObj = field(default_factory=RandomRectangleObj)
    robust_eval: Optional[RobustEvalConfig] = None  # PGD-attacked test accuracy, or null


@dataclass
class PGDDefenseConfig:
    name: str = "pgd"
    obj: PGDTrainingObj = field(default_factory=PGDTrainingObj)
    robust_eval: Optional[RobustEvalConfig] = None  # PGD-attacked test accuracy, or null


# --- optimizer / scheduler (torch.optim, instantiated with _partial_) ----------------------------
@dataclass
class AdamConfig:
    _target_: str = "torch.optim.Adam"
    _partial_: bool = True
    lr: float = 1e-3
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.weight_decay < 0:
            raise RobexError(f"optimizer.lr={self.lr} must be > 0 and optimizer.weight_decay={self.weight_decay} >= 0")


@dataclass
class SGDConfig:
    _target_: str = "torch.optim.SGD"
    _partial_: bool = True
    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.weight_decay < 0 or self.momentum < 0:
            raise RobexError(f"optimizer.lr={self.lr} must be > 0, optimizer.momentum={self.momentum} and optimizer.weight_decay={self.weight_decay} >= 0")


@dataclass
class NoSchedulerConfig:
    """``scheduler=none``: an empty group (no keys may be added)."""


@dataclass
class CosineSchedulerConfig:
    _target_: str = "torch.optim.lr_scheduler.CosineAnnealingLR"
    _partial_: bool = True
    T_max: int = MISSING


# --- trainer (lightning.Trainer keyword arguments) -----------------------------------------------
@dataclass
class TrainerConfig:
    """The lightning.Trainer arguments robex configures; every default is Lightning's own, so a key the
    YAML does not set changes nothing. Add a field here to make another Trainer argument settable."""

    _target_: str = "lightning.Trainer"
    accelerator: str = "auto"
    strategy: str = "auto"
    devices: Any = "auto"  # int, list of ids, -1 or "auto"
    num_nodes: int = 1
    precision: Optional[str] = None
    sync_batchnorm: bool = False
    max_epochs: int = MISSING
    min_epochs: Optional[int] = None
    max_steps: int = -1
    max_time: Optional[str] = None
    fast_dev_run: Any = False  # bool or number of batches
    limit_train_batches: Any = None  # a float fraction or an int count of batches
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    val_check_interval: Any = None
    check_val_every_n_epoch: Optional[int] = 1
    num_sanity_val_steps: Optional[int] = None
    log_every_n_steps: Optional[int] = None
    accumulate_grad_batches: int = 1
    gradient_clip_val: Optional[float] = None
    deterministic: Any = None  # bool or "warn"
    benchmark: Optional[bool] = None
    enable_progress_bar: Optional[bool] = None
    enable_model_summary: Optional[bool] = None

    def __post_init__(self) -> None:
        if self.max_epochs < 0:
            raise RobexError(f"trainer.max_epochs={self.max_epochs} must be >= 0")


# --- primary config -----------------------------------------------------------------------------
@dataclass
class TrainConfig:
    seed: int = 0
    name: str = MISSING  # output folder outputs/train/<name>/ and MLflow run name
    resume: Optional[str] = None  # a Lightning .ckpt to resume from
    early_stopping_patience: Optional[int] = None
    robust_eval: Optional[Any] = None  # ${defense.robust_eval}: {eps, steps} or null
    # the groups (each option checks its own contents)
    paths: Any = MISSING
    tracking: Any = MISSING
    data: Any = MISSING
    model: Any = MISSING
    defense: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = None
    trainer: Any = MISSING


def register(cs) -> None:
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(group="paths", name="paths_schema", node=PathsConfig)
    cs.store(group="tracking", name="tracking_schema", node=TrackingConfig)
    cs.store(group="data", name="data_schema", node=DataConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="defense", name="none_schema", node=NoDefenseConfig)
    cs.store(group="defense", name="l0_schema", node=L0DefenseConfig)
    cs.store(group="defense", name="pgd_schema", node=PGDDefenseConfig)
    cs.store(group="optimizer", name="adam_schema", node=AdamConfig)
    cs.store(group="optimizer", name="sgd_schema", node=SGDConfig)
    cs.store(group="scheduler", name="none_schema", node=NoSchedulerConfig)
    cs.store(group="scheduler", name="cosine_schema", node=CosineSchedulerConfig)
    cs.store(group="trainer", name="trainer_schema", node=TrainerConfig)


def validate(cfg: DictConfig) -> None:
    """The range checks of the composed train config (types and keys were checked at composition):
    raises a one-sentence RobexError naming the key. Called at the start of the train stage."""
    from robex.schemas import check

    for key in ("data", "model", "defense", "optimizer", "trainer"):
        check(cfg[key], f"{key}.")
    if cfg.get("scheduler"):
        check(cfg.scheduler, "scheduler.")
    if cfg.get("robust_eval") is not None:
        RobustEvalConfig(**{k: v for k, v in cfg.robust_eval.items()})
