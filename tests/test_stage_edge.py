"""The stage edge keeps logs quiet (robex.utils.hydra.quiet_edge): Lightning's tips and device census,
MLflow's store set-up chatter and the known deprecation warnings are dropped, and each Lightning line
prints once (``import lightning`` adds its own console handler AND propagates to Hydra's root handler).
A real run's output before and after: docs/ux.md."""

from __future__ import annotations

import io
import logging
import warnings

import pytest

from robex.utils.hydra import quiet_edge


@pytest.fixture
def streams():
    """(root stream, Lightning's own console stream), the way Hydra + ``import lightning`` set them up."""
    root, lightning = logging.getLogger(), logging.getLogger("lightning")
    saved = (root.handlers[:], root.level, lightning.handlers[:], lightning.level, lightning.propagate)
    root_stream, console_stream = io.StringIO(), io.StringIO()
    root.handlers = [logging.StreamHandler(root_stream)]
    root.setLevel(logging.INFO)
    lightning.handlers = [logging.StreamHandler(console_stream)]  # what lightning/__init__.py adds
    lightning.setLevel(logging.INFO)
    lightning.propagate = True
    yield root_stream, console_stream
    root.handlers, _, lightning.handlers, _, lightning.propagate = saved
    root.setLevel(saved[1])
    lightning.setLevel(saved[3])


def test_lightning_lines_print_once_and_its_noise_not_at_all(streams):
    root_stream, console_stream = streams
    quiet_edge()
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    rank_zero.info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
    rank_zero.info("GPU available: False, used: False")
    rank_zero.info("Restoring states from the checkpoint path at /x/best.ckpt")
    rank_zero.info("`Trainer.fit` stopped: `max_epochs=1` reached.")
    assert root_stream.getvalue().splitlines() == ["`Trainer.fit` stopped: `max_epochs=1` reached."]
    assert console_stream.getvalue() == ""  # not a second copy


def test_mlflow_store_set_up_chatter_is_dropped_and_real_messages_kept():
    quiet_edge()
    stream = io.StringIO()
    for name in ("mlflow.store.db.utils", "mlflow.tracking.fluent"):
        logger = logging.getLogger(name)
        logger.addHandler(handler := logging.StreamHandler(stream))
        logger.setLevel(logging.INFO)
        try:
            logger.info("Creating initial MLflow database tables...")
            logger.info("Experiment with name 'robex-train' does not exist. Creating a new experiment.")
            logger.warning("a real problem")
        finally:
            logger.removeHandler(handler)
    assert stream.getvalue().splitlines() == ["a real problem", "a real problem"]


def test_known_deprecation_warnings_are_filtered_others_shown():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_edge()
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and treespec.is_leaf()`",
                      FutureWarning, stacklevel=1)
        warnings.warn("The 'train_dataloader' does not have many workers which may be a bottleneck.", UserWarning, stacklevel=1)
        warnings.warn("something robex did not expect", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something robex did not expect"]


def test_completion_offers_only_what_the_stage_can_use():
    from robex.utils.hydra import _completion_keeps

    train_groups = {"data", "model", "defense", "optimizer", "scheduler", "trainer", "paths", "tracking", "hydra", "experiment"}
    offered = ["defense=pgd", "defense=pgd_schema", "attack=", "verify/", "seed=", "data.module.", "experiment=quick",
               "experiment=quick_prepare", "+trainer.max_epochs=", "hydra."]
    kept = [c for c in offered if _completion_keeps(c, train_groups, "train")]
    assert kept == ["defense=pgd", "seed=", "data.module.", "experiment=quick", "+trainer.max_epochs=", "hydra."]


@pytest.mark.slow  # ten completion queries, each a Python start: ~10-25 s on 2 shared cores
def test_tab_completion_of_the_console_scripts():
    """scripts/check_completion.sh installs Hydra's bash completion for every robex-* command as the
    README says and checks what <TAB> offers (no *_schema options, no other stage's groups)."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    if shutil.which("bash") is None or not (Path(sys.executable).parent / "robex-train").exists():
        pytest.skip("needs bash and the robex-* console scripts (pip install -e .)")
    script = Path(__file__).resolve().parents[1] / "scripts" / "check_completion.sh"
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(Path.home())}
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("\nok ") + done.stdout.startswith("ok ") == 10, done.stdout


def test_help_describes_the_stage_without_hydras_group_census(monkeypatch, capsys, tmp_path):
    """--help renders robex's template only: Hydra's format_config_groups (a deep copy of the whole
    ConfigStore per group, ~1.5 s CPU) must not run, and the text lists only train's groups."""
    import sys

    from hydra._internal.hydra import Hydra
    from hydra.core.global_hydra import GlobalHydra

    from robex.stages import train

    def census(*args, **kwargs):
        raise AssertionError("Hydra's config-group census ran for --help")

    monkeypatch.setattr(Hydra, "format_config_groups", census)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["robex-train", "--help"])
    GlobalHydra.instance().clear()
    with pytest.raises(SystemExit) as exit_info:
        train.main()
    GlobalHydra.instance().clear()
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("Stage `train`:") and "\ndefense: l0, none*, pgd\n" in text
    assert "\nattack:" not in text and "_schema" not in text.split("== Flags ==")[0]
