"""Every config composes as the stages compose it, and the train groups instantiate at tiny size.

Parametrized from the file system (conf/*.yaml, conf/<group>/*.yaml, conf/experiment/*.yaml), so a
new file is covered without editing this test. Experiment files name their stage in the header
comment (``python -m robex.<stage> ... experiment=<name>``); one without such a line fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict
from torch import nn

from conftest import compose_config

CONF = Path(__file__).resolve().parents[1] / "conf"
PRIMARY = sorted(path.stem for path in CONF.glob("*.yaml"))
TRAIN_GROUPS = ("data", "model", "defense", "optimizer", "scheduler", "trainer", "paths", "tracking")
GROUP_OPTIONS = [(group, path.stem) for group in TRAIN_GROUPS for path in sorted((CONF / group).glob("*.yaml"))]
EXPERIMENTS = sorted(path.stem for path in (CONF / "experiment").glob("*.yaml"))
# sizes that keep instantiation cheap; the networks are built on the meta device (no memory) anyway
TINY_MODEL = {"resnet18_cifar": ["model.net.base_width=8"]}
INPUT_SHAPE = {"double_mnist": (1, 64, 64), "cifar10": (3, 32, 32), "c2f_cifar10": (3, 32, 32), "imagenet_c2f": (3, 224, 224)}


def resolved(cfg) -> dict:
    """Resolve every value as the stage would see it (the `${hydra:...}` resolver needs HydraConfig)."""
    import robex.utils.sharding  # noqa: F401 - registers ${shard_suffix:...}

    HydraConfig.instance().set_config(cfg)
    return {key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
            for key in cfg if key != "hydra"}


def experiment_stage(name: str) -> str | None:
    header = [line for line in (CONF / "experiment" / f"{name}.yaml").read_text().splitlines() if line.startswith("#")]
    for line in header:
        match = re.search(rf"python -m robex\.(\w+)\b.*experiment={re.escape(name)}\b", line)
        if match:
            return match.group(1)
    return None


def test_the_file_system_lists_what_we_expect():
    assert {"prepare", "train", "attack", "lrp_study", "explain", "verify", "report"} <= set(PRIMARY)
    assert ("defense", "pgd") in GROUP_OPTIONS and ("model", "cifar_cnn") in GROUP_OPTIONS and "quick" in EXPERIMENTS


@pytest.mark.parametrize("config_name", PRIMARY)
def test_primary_config_composes_and_resolves(config_name, tmp_path):
    cfg = compose_config(config_name, root=tmp_path, return_hydra_config=True)
    values = resolved(cfg)
    assert values["paths"]["output_dir"] == f"{tmp_path}/outputs"
    assert values["tracking"]["experiment"] == f"robex-{config_name}"  # the job name comes from the stage


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_train_group_option_composes_and_validates(group, option, tmp_path):
    from robex.schemas.train import validate

    cfg = compose_config("train", [f"{group}={option}"], root=tmp_path, return_hydra_config=True)
    resolved(cfg)
    validate(cfg)  # the range checks accept every shipped option


def test_a_null_augment_takes_a_dict_from_the_command_line(tmp_path):
    """data=double_mnist has `augment: null`. Overriding it with a dict (`data.augment={...}`) used to end in an
    OmegaConf traceback (a dict cannot be merged into a node typed Optional[Dict] that holds None). Now it
    composes and instantiates the augmentation, and a dict without _target_ is one sentence naming the key."""
    from robex.schemas.train import validate
    from robex.utils.errors import RobexError

    cfg = compose_config("train", ["data=double_mnist", "data.augment={_target_: robex.training.augment.Augment, padding: 4, flip: false}"],
                         root=tmp_path, return_hydra_config=True)
    validate(cfg)
    augment = instantiate(cfg.data.augment)
    assert type(augment).__name__ == "Augment"
    images = torch.rand(4, 1, 64, 64)
    assert augment(images).shape == images.shape
    bad = compose_config("train", ["data=double_mnist", "data.augment={padding: 4}"], root=tmp_path, return_hydra_config=True)
    with pytest.raises(RobexError, match=r"data\.augment needs a _target_.*robex\.training\.augment\.Augment"):
        validate(bad)


@pytest.mark.parametrize("option", [o for g, o in GROUP_OPTIONS if g == "model"])
def test_every_model_instantiates_to_a_module(option, tmp_path):
    cfg = compose_config("train", [f"model={option}", *TINY_MODEL.get(option, [])], root=tmp_path)
    if "weights" in cfg.model.net:
        cfg.model.net.weights = None  # no downloads: random initialisation
    data = {"double_mnist": "double_mnist", "c2f": "c2f_cifar10", "imagenet": "imagenet_c2f"}
    data_name = next((value for prefix, value in data.items() if option.startswith(prefix)), "cifar10")
    if option == "c2f_vgg16":
        data_name = "imagenet_c2f"
    with torch.device("meta"):  # the full-size ImageNet networks cost no memory or init time here
        model = instantiate(cfg.model.net, _convert_="all")
        assert isinstance(model, nn.Module)
        batch = torch.empty(2, *INPUT_SHAPE[data_name])
        output = model(batch)
    logits = output if isinstance(output, torch.Tensor) else next(iter(output.values())) if isinstance(output, dict) else output[0]
    assert logits.shape[0] == 2


@pytest.mark.parametrize("option", [o for g, o in GROUP_OPTIONS if g == "defense"])
def test_every_defense_instantiates_and_transforms_a_batch(option, tmp_path):
    from robex.training.defenses import Defense

    cfg = compose_config("train", [f"defense={option}"], root=tmp_path)
    defense = instantiate(cfg.defense.obj)
    assert isinstance(defense, Defense) and defense.name == cfg.defense.name
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    images, labels = torch.rand(4, 3, 8, 8), torch.arange(4)
    out = defense(model, images, labels, lambda logits, y: nn.functional.cross_entropy(logits, y, reduction="none"))
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    if option != "none":
        assert not torch.equal(out, images)  # a defense that returns the batch unchanged defends nothing


@pytest.mark.parametrize("option", [o for g, o in GROUP_OPTIONS if g == "optimizer"])
def test_optimizers_and_schedulers_instantiate(option, tmp_path):
    cfg = compose_config("train", [f"optimizer={option}", "scheduler=cosine"], root=tmp_path, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    optimizer = instantiate(cfg.optimizer)(nn.Linear(2, 2).parameters())
    scheduler = instantiate(cfg.scheduler)(optimizer)
    assert isinstance(optimizer, torch.optim.Optimizer) and scheduler.T_max == cfg.trainer.max_epochs


def test_cpu_trainer_instantiates(tmp_path):
    import lightning

    cfg = compose_config("train", ["trainer=cpu"], root=tmp_path)
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False, default_root_dir=str(tmp_path))
    assert isinstance(trainer, lightning.Trainer) and trainer.max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_with_its_stage(name, tmp_path):
    stage = experiment_stage(name)
    assert stage in PRIMARY, f"conf/experiment/{name}.yaml: its header must show `python -m robex.<stage> ... experiment={name}`"
    cfg = compose_config(stage, [f"experiment={name}"], root=tmp_path, return_hydra_config=True)
    resolved(cfg)
    if stage == "train":
        from robex.schemas.train import validate

        validate(cfg)


@pytest.mark.parametrize(
    ("config_name", "override", "message"),
    [
        ("train", "trainer.max_epoch=3", "max_epoch"),  # a typo of a trainer key
        ("train", "defense=pgd defense.obj.epss=0.1", "epss"),
        ("train", "data.module.batch_size=abc", None),  # free-form kwargs: checked by validate()
        ("train", "defense=l0 defense.obj.probability=high", "probability"),
        ("report", "max_table_rows=many", "max_table_rows"),
        ("report", "sections.train.modelz=[a]", "modelz"),
    ],
)
def test_unknown_keys_and_wrong_types_fail_at_composition(config_name, override, message, tmp_path):
    from robex.schemas.train import validate
    from robex.utils.errors import RobexError

    if message is None:
        cfg = compose_config(config_name, override.split(), root=tmp_path)
        with pytest.raises(RobexError, match="data.module.batch_size='abc'"):
            validate(cfg)
        return
    with pytest.raises(Exception, match=message):
        compose_config(config_name, override.split(), root=tmp_path)


def test_yaml_typo_in_a_group_file_fails(tmp_path):
    """An unknown key inside a group option's YAML (not only on the command line) is rejected too."""
    import shutil

    from hydra import compose, initialize_config_dir

    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "optimizer" / "adam.yaml").write_text((conf / "optimizer" / "adam.yaml").read_text() + "learning_rate: 0.1\n")
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        with pytest.raises(Exception, match="learning_rate"):
            compose("train", overrides=["optimizer=adam"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("defense=pgd defense.obj.fraction=0", "defense.obj.fraction=0.0 must lie in \\(0, 1\\]"),
        ("defense=l0 defense.obj.probability=1.5", "defense.obj.probability=1.5 must lie in \\[0, 1\\]"),
        ("defense=l0 defense.obj.min_size=9 defense.obj.max_size=3", "min_size <= max_size"),
        ("defense=pgd defense.obj.eps=-0.5", "defense.obj.eps=-0.5 must lie in \\[0, 1\\]"),
        ("trainer.max_epochs=-3", "trainer.max_epochs=-3 must be >= 0"),
        ("data.task=regression", "data.task='regression' is not a task"),
        ("optimizer.lr=0", "optimizer.lr=0.0 must be > 0"),
    ],
)
def test_range_checks_agree_with_the_defense_constructors(override, message, tmp_path):
    """The schema rejects what robex.training.defenses rejects (and names the key); a value the
    constructors accept is accepted (see test_every_train_group_option_composes_and_validates)."""
    from robex.schemas.train import validate
    from robex.utils.errors import RobexError

    cfg = compose_config("train", override.split(), root=tmp_path)
    with pytest.raises(RobexError, match=message):
        validate(cfg)
    if override.startswith("defense="):
        with pytest.raises(Exception, match=override.split()[1].split("=")[0].rpartition(".")[2]):  # the constructor agrees
            instantiate(cfg.defense.obj)


def test_report_sections_can_be_dropped_and_are_checked(tmp_path):
    """`~sections.<key>` leaves a section out (docs/report.md); a section key the report does not know fails."""
    from robex.schemas import check
    from robex.utils.errors import RobexError

    cfg = compose_config("report", ["~sections.lrp_study"], root=tmp_path, return_hydra_config=True)
    assert list(cfg.sections) == ["train", "attack", "explain", "verify"]
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):  # the task function gets the config without its hydra node
        del cfg["hydra"]
    check(cfg)
    cfg = compose_config("report", ["max_table_rows=0"], root=tmp_path, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):  # the task function gets the config without its hydra node
        del cfg["hydra"]
    with pytest.raises(RobexError, match="max_table_rows=0 must be >= 1"):
        check(cfg)


@pytest.mark.parametrize("launcher", sorted(path.stem for path in (CONF / "hydra" / "launcher").glob("*.yaml")))
def test_every_launcher_composes(launcher, tmp_path):
    cfg = compose_config("train", [f"hydra/launcher={launcher}"], root=tmp_path, return_hydra_config=True)
    assert cfg.hydra.launcher._target_.startswith("hydra_plugins.")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("datasets=[double_mnist,mnist]", "names unknown datasets \\['mnist'\\]"),
        ("cifar10.source=web", "cifar10.source='web' is unknown"),
        ("double_mnist.num_val=0", "must all be >= 1"),
    ],
)
def test_prepare_range_checks(override, message, tmp_path):
    from robex.schemas import check
    from robex.utils.errors import RobexError

    cfg = compose_config("prepare", [override], root=tmp_path, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    with pytest.raises(RobexError, match=message):
        check(cfg)


def _stage_group_options() -> list[tuple[str, str, str]]:
    """(stage, group, option) for every option file of every config group a primary config selects."""
    found = []
    for stage in PRIMARY:
        try:
            choices = compose_config(stage, return_hydra_config=True).hydra.runtime.choices
        except Exception:  # noqa: BLE001 - a broken primary config fails test_primary_config_composes_and_resolves
            continue
        for group in sorted(choices):
            if group.startswith("hydra") or group == "experiment" or not (CONF / group).is_dir():
                continue
            found += [(stage, group, path.stem) for path in sorted((CONF / group).glob("*.yaml"))]
    return found


STAGE_GROUP_OPTIONS = _stage_group_options()


@pytest.mark.parametrize(("stage", "group", "option"), STAGE_GROUP_OPTIONS, ids=[f"{s}-{g}={o}" for s, g, o in STAGE_GROUP_OPTIONS])
def test_every_group_option_of_every_stage_composes_and_resolves(stage, group, option, tmp_path):
    """Not only train: attack specs, lrp, explain, verify/{oracle,search,budget} options with their stage."""
    cfg = compose_config(stage, [f"{group}={option}"], root=tmp_path, return_hydra_config=True)
    resolved(cfg)


def test_benchmark_training_recipes_compose_and_validate(tmp_path):
    """benchmarks/train_quality.py's override sets stay valid as the schemas change."""
    import importlib.util

    from robex.schemas.train import validate

    spec = importlib.util.spec_from_file_location("train_quality", CONF.parent / "benchmarks" / "train_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, overrides in module.RUNS.items():
        validate(compose_config("train", [*overrides, *module.FULL, f"name={name}"], root=tmp_path))
