"""Bad input, every stage: exit status 1, exactly one stderr line ``robex: error: <sentence>`` naming
the offending key, value or path (no traceback), and no MLflow run left RUNNING.

Each case runs the stage's real ``main`` in-process with ``sys.argv`` patched (Hydra parses the
command line, composes, runs the task; the process would exit with the same status), so the
compose-only cases cost milliseconds and the file shares one MLflow store. Cases that fail today in
another owner's stage are ``xfail(strict=True)`` with the owner in the reason: when the owner fixes
the message the case passes and the marker must go.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import sys
from pathlib import Path

import pytest
import torch

from conftest import runs_by_status

STAGES = ("prepare", "train", "attack", "lrp_study", "explain", "verify", "report")


def owner(who: str, why: str):
    return pytest.mark.xfail(strict=True, reason=f"{who}: {why}")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the probe is closed


# (stage, command-line arguments, text the one error line must contain); {tmp}, {data}, {files} are
# filled in per case: a fresh folder, the tiny prepared data, files made by _bad_files
CASES = [
    # --- prepare ---------------------------------------------------------------------------------
    ("prepare", ["foo=1"], "unknown key 'foo'"),
    ("prepare", ["double_mnist.num_trian=5"], "unknown key 'double_mnist.num_trian'"),
    ("prepare", ["datasets=[mnist3]"], "datasets=['mnist3'] names unknown datasets ['mnist3']"),
    ("prepare", ["double_mnist.num_train=0"], "double_mnist.num_train/num_val/num_test=0/"),
    ("prepare", ["double_mnist.num_test=-5"], "double_mnist.num_train/num_val/num_test=60000/5000/-5"),
    ("prepare", ["double_mnist.num_train=abc"], "double_mnist.num_train is invalid: Value 'abc'"),
    ("prepare", ["cifar10.source=web"], "cifar10.source='web' is unknown"),
    ("prepare", ["cifar10.num_train=0"], "cifar10.num_train=0 must be >= 1"),
    ("prepare", ["paths.data_root={tmp}/nowhere"], "data root '{tmp}/nowhere' does not exist"),
    ("prepare", ["seed=abc"], "seed is invalid: Value 'abc'"),
    ("prepare", ["datasets=[double_mnist]", "double_mnist.num_train=4", "double_mnist.num_val=2", "double_mnist.num_test=2",
                 "double_mnist.max_offset_x=0"], "double_mnist.max_offset_x=0"),
    ("prepare", ["datasets=[double_mnist]", "double_mnist.num_train=4", "double_mnist.num_val=2", "double_mnist.num_test=2",
                 "double_mnist.out_dir=/sys/robex/double_mnist"], "no permission to use '/sys/robex"),
    # --- train -----------------------------------------------------------------------------------
    ("train", ["trainer.max_epoch=2"], "unknown key 'trainer.max_epoch': 'trainer' has no key 'max_epoch'"),
    ("train", ["foo=1"], "unknown key 'foo'"),
    ("train", ["defense.eps=0.1"], "unknown key 'defense.eps'"),  # the README's old key: the real one is defense.obj.eps
    ("train", ["defense=fgsm"], "defense=fgsm is not an option of group 'defense'; choose one of l0, none, pgd"),
    ("train", ["model=resnet99"], "model=resnet99 is not an option of group 'model'"),
    ("train", ["defense=pgd", "defense.obj.eps=-0.5"], "defense.obj.eps=-0.5 must lie in [0, 1]"),
    ("train", ["defense=pgd", "defense.obj.eps=abc"], "defense.obj.eps is invalid: Value 'abc'"),
    ("train", ["defense=pgd", "defense.obj.fraction=0"], "defense.obj.fraction=0.0 must lie in (0, 1]"),
    ("train", ["defense=pgd", "defense.obj.steps=0"], "defense.obj.steps=0 must be >= 1"),
    ("train", ["defense=l0", "defense.obj.min_size=0"], "defense.obj.min_size=0"),
    ("train", ["defense=l0", "defense.obj.probability=1.5"], "defense.obj.probability=1.5 must lie in [0, 1]"),
    ("train", ["trainer.max_epochs=-3"], "trainer.max_epochs=-3 must be >= 0"),
    ("train", ["trainer.max_epochs=1.5"], "trainer.max_epochs is invalid: Value '1.5'"),
    ("train", ["data.module.batch_size=0"], "data.module.batch_size=0"),
    ("train", ["data.module.batch_size=-4"], "data.module.batch_size=-4"),
    ("train", ["data.module.eval_batch_size=0"], "data.module.eval_batch_size=0"),
    ("train", ["data.module.batch_size=abc"], "data.module.batch_size"),
    ("train", ["optimizer.lr=0"], "optimizer.lr=0.0 must be > 0"),
    ("train", ["optimizer=sgd", "optimizer.momentum=-0.9"], "optimizer.momentum=-0.9"),
    ("train", ["early_stopping_patience=-1"], "early_stopping_patience=-1 must be >= 1"),
    ("train", ["seed=abc"], "seed is invalid: Value 'abc'"),
    ("train", ["seed=["], "cannot parse the override 'seed=['"),
    ("train", ["trainer.accelerator=tpu"], "trainer.accelerator"),
    ("train", ["resume=/nonexistent/last.ckpt"], "resume=/nonexistent/last.ckpt: '/nonexistent/last.ckpt' does not exist"),
    ("train", ["resume=last", "name=never_trained"], "resume=last: no run with this name saved '{tmp}/outputs/train/never_trained/checkpoints/last.ckpt' yet"),
    ("train", ["resume={files}/corrupt.ckpt"], "resume checkpoint '{files}/corrupt.ckpt' is corrupt (UnpicklingError)"),
    ("train", ["resume={files}/other_arch.ckpt"], "resume checkpoint '{files}/other_arch.ckpt' holds another network"),
    ("train", ["model=cifar_cnn"], "model=cifar_cnn does not accept data=double_mnist images of shape (1, 64, 64)"),
    ("train", ["data=cifar10", "model=double_mnist_cnn", "data.module.val_size=10"], "model=double_mnist_cnn does not accept data=cifar10 images of shape (3, 32, 32)"),
    ("train", ["paths.prepared_dir={tmp}/empty"], "'{tmp}/empty/double_mnist/train.pt' does not exist; run `python -m robex.prepare` first"),
    ("train", ["paths.prepared_dir={files}/corrupt_data"], "'{files}/corrupt_data/double_mnist/train.pt' is corrupt"),
    ("train", ["paths.train_dir=/sys/robex"], "no permission to use '/sys/robex"),
    ("train", ["+env.MLFLOW_TRACKING_URI=foo://bar"], "tracking URI 'foo://bar' has an unsupported scheme 'foo'"),
    ("train", ["+env.MLFLOW_TRACKING_URI=sqlite:////proc/x.db"], "tracking URI 'sqlite:////proc/x.db': cannot create or write the database '/proc/x.db'"),
    ("train", ["+env.MLFLOW_TRACKING_URI=http://127.0.0.1:{port}"], "MLflow tracking server 'http://127.0.0.1:{port}' is not usable (connection refused: nothing listens there)"),
    ("train", ["data=cifar10", "model=cifar_cnn", "data.module.val_size=100000"], "data.module.val_size=100000"),
    # --- attack (L1) -----------------------------------------------------------------------------
    ("attack", ["foo=1"], "unknown key 'foo'"),
    ("attack", ["attack=fgsm3"], "attack=fgsm3 is not an option of group 'attack'"),
    ("attack", ["num_images=0"], "num_images=0 must be >= 1"),
    ("attack", ["batch_size=0"], "batch_size=0 must be an integer >= 1"),
    ("attack", ["target=nowhere"], "target"),
    ("attack", ["paths.train_dir={tmp}/none"], "'{tmp}/none/c2f_cifar/model.pt' does not exist"),
    ("attack", ["paths.train_dir={files}", "target=c2f_cifar"], "{files}/c2f_cifar/model.pt"),  # a multi-label model is no C2F model
    ("attack", ["device=tpu"], "device='tpu'"),
    # --- lrp_study (L2) --------------------------------------------------------------------------
    ("lrp_study", ["foo=1"], "unknown key 'foo'"),
    ("lrp_study", ["lrp=nothing"], "lrp=nothing is not an option of group 'lrp'"),
    ("lrp_study", ["step=everything"], "step"),
    ("lrp_study", ["model_path={tmp}/none.pt"], "'{tmp}/none.pt' does not exist"),
    ("lrp_study", ["model_path={files}/corrupt.ckpt"], "'{files}/corrupt.ckpt' is corrupt"),
    ("lrp_study", ["model_path={files}/double_mnist_none/model.pt", "prepared_dir={data}/cifar10", "lrp=quick"], "{files}/double_mnist_none/model.pt' does not accept CIFAR-10 inputs"),
    ("lrp_study", ["device=tpu"], "device='tpu'"),
    # --- explain (E) -----------------------------------------------------------------------------
    ("explain", ["foo=1"], "unknown key 'foo'"),
    ("explain", ["explain=nothing"], "explain=nothing is not an option of group 'explain'"),
    ("explain", ["batch_size=0"], "batch_size=0 must be an integer >= 1"),
    ("explain", ["device=tpu"], "device='tpu' is not supported"),
    ("explain", ["paths.train_dir={tmp}/none", "explain=quick"], "{tmp}/none"),
    # --- verify (V) ------------------------------------------------------------------------------
    ("verify", ["foo=1"], "unknown key 'foo'"),
    ("verify", ["verify/search=nothing"], "verify/search=nothing is not an option of group 'verify/search'"),
    ("verify", ["num_images=0"], "num_images=0 must be >= 1"),
    ("verify", ["target_slot=2"], "target_slot=2 must be 0"),
    ("verify", ["shard.index=3", "shard.count=2"], "shard.index=3 and shard.count=2"),
    ("verify", ["verify.oracle.milp_time_limit=0"], "verify.oracle.milp_time_limit=0"),
    ("verify", ["verify.oracle.final_time_limit=-1"], "verify.oracle.final_time_limit=-1"),
    ("verify", ["verify.oracle.lp_budget_seconds=-1"], "verify.oracle.lp_budget_seconds=-1"),
    ("verify", ["verify.budget.max_queries=-1"], "verify.budget.max_queries=-1 must be >= 1"),
    ("verify", ["verify.budget.polish_attack_scale=0"], "verify.budget.polish_attack_scale=0 must be >= 1"),
    ("verify", ["verify.budget.max_seconds=0"], "verify.budget.max_seconds=0.0 must be > 0"),
    ("verify", ["model_dir={tmp}/none"], "'{tmp}/none/double_mnist_none/model.pt'"),
    ("verify", ["model_dir={files}/wrong_kind", "defenses=[none]", "data_path={data}/double_mnist/test.pt"], "{files}/wrong_kind/double_mnist_none/model.pt' does not accept DOUBLE-MNIST inputs"),
    ("verify", ["data_path={files}/corrupt.ckpt", "model_dir={files}", "defenses=[none]"], "'{files}/corrupt.ckpt' is corrupt"),
    # --- report (T1) -----------------------------------------------------------------------------
    ("report", ["foo=1"], "unknown key 'foo'"),
    ("report", ["max_table_rows=abc"], "max_table_rows is invalid: Value 'abc'"),
    ("report", ["max_table_rows=0"], "max_table_rows"),
    ("report", ["strict=true", "paths.output_dir={tmp}/none", "paths.train_dir={tmp}/none"], "{tmp}/none"),
    ("report", ["paper_reference={tmp}/none.yaml"], "'{tmp}/none.yaml'"),
    ("report", ["output_dir=/sys/robex/report", "paths.output_dir={tmp}/none", "paths.train_dir={tmp}/none"], "no permission to use '/sys/robex"),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One MLflow store for the file (creating a sqlite store costs seconds); a case passes only if
    no run of any case is RUNNING afterwards."""
    import mlflow

    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    uri = f"sqlite:///{path}"
    mlflow.MlflowClient(tracking_uri=uri).search_experiments()  # creates the tables once
    return uri


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Bad files: a corrupt checkpoint, a checkpoint of another network, corrupt prepared data, a
    multi-label DOUBLE-MNIST model where other stages expect other kinds."""
    from robex.models.double_mnist_cnn import DoubleMnistCNN
    from robex.models.io import save_model

    root = tmp_path_factory.mktemp("bad_files")
    (root / "corrupt.ckpt").write_bytes(b"garbage, not a checkpoint")
    torch.save({"state_dict": {"model.net.0.weight": torch.zeros(4, 3, 5, 5)}, "epoch": 0}, root / "other_arch.ckpt")
    (root / "corrupt_data" / "double_mnist").mkdir(parents=True)
    for split in ("train", "val", "test"):
        (root / "corrupt_data" / "double_mnist" / f"{split}.pt").write_bytes(b"\x00" * 64)
    from robex.models.cifar_cnn import CifarCNN

    model = DoubleMnistCNN()
    config = {"_target_": "robex.models.double_mnist_cnn.DoubleMnistCNN"}
    for folder in ("double_mnist_none", "c2f_cifar"):
        save_model(model, root / folder / "model.pt", config)
    # a CIFAR-10 network where verify expects a DOUBLE-MNIST one
    save_model(CifarCNN(), root / "wrong_kind" / "double_mnist_none" / "model.pt", {"_target_": "robex.models.cifar_cnn.CifarCNN"})
    return root


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    from robex.data.double_mnist import generate_double_mnist
    from robex.utils.io import atomic_save

    root = tmp_path_factory.mktemp("prepared")
    generator = torch.Generator().manual_seed(0)
    images = torch.zeros(60, 28, 28, dtype=torch.uint8)
    images[:, 7:21, 7:21] = torch.randint(1, 256, (60, 14, 14), generator=generator, dtype=torch.uint8)
    labels = torch.arange(60) % 10
    for index, (split, count) in enumerate({"train": 16, "val": 8, "test": 8}.items()):
        generate_double_mnist(images, labels, count, seed=index).save(root / "double_mnist" / f"{split}.pt")
    for split, count in {"train": 40, "test": 10}.items():
        atomic_save({"images": torch.randint(0, 256, (count, 3, 32, 32), generator=generator, dtype=torch.uint8),
                     "labels": torch.arange(count) % 10, "classes": []}, root / "cifar10" / f"{split}.pt")
    return root


def run_main(stage: str, args: list[str], cwd: Path, monkeypatch) -> int:
    """``python -m robex.<stage> <args>`` in this process: returns the exit status."""
    from hydra.core.global_hydra import GlobalHydra

    from robex.utils.hydra import clear_stop

    module = importlib.import_module(f"robex.stages.{stage}")
    GlobalHydra.instance().clear()
    clear_stop()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [f"robex-{stage}", *args, f"hydra.run.dir={cwd}/hydra", "hydra.output_subdir=null"])
    try:
        module.main()
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    return 0


@pytest.mark.parametrize(("stage", "args", "expected"), CASES, ids=[
    f"{c.values[0] if hasattr(c, 'values') else c[0]}:{' '.join(c.values[1] if hasattr(c, 'values') else c[1])}"[:90] for c in CASES])
def test_bad_input_gives_one_sentence_exit_1_and_no_running_run(stage, args, expected, tmp_path, store, files, prepared, monkeypatch, capfd):
    import mlflow

    port = _closed_port()
    fill = {"tmp": str(tmp_path), "files": str(files), "data": str(prepared), "port": str(port)}
    case = list(args)
    args = [a.format(**fill) for a in args]
    env = {a.split("=", 1)[0].removeprefix("+env."): a.split("=", 1)[1] for a in args if a.startswith("+env.")}
    args = [a for a in args if not a.startswith("+env.")]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env.get("MLFLOW_TRACKING_URI", store))
    monkeypatch.setenv("ROBEX_ROOT", str(tmp_path))
    monkeypatch.delenv("ROBEX_DEBUG", raising=False)
    defaults = [] if any(a.startswith(("paths.prepared_dir=", "paths.data_root=")) for a in args) else [f"paths.prepared_dir={prepared}"]
    code = run_main(stage, [*defaults, *args], tmp_path, monkeypatch)
    stderr = capfd.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("robex: error:")]
    if os.environ.get("ROBEX_BAD_INPUTS_LOG"):  # the cases and their messages for docs/ux.md (scripts/bad_inputs_table.py)
        with open(os.environ["ROBEX_BAD_INPUTS_LOG"], "a") as log:
            log.write(json.dumps({"stage": stage, "case": case, "args": args, "fill": fill, "expected": expected, "code": code,
                                  "errors": errors, "traceback": "Traceback" in stderr}) + "\n")
    assert code == 1, stderr[-3000:]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert expected.format(**fill) in errors[0], errors[0]
    assert mlflow.active_run() is None
    assert "RUNNING" not in runs_by_status(store)


def test_there_are_enough_cases_for_every_stage():
    stages = [c.values[0] if hasattr(c, "values") else c[0] for c in CASES]
    assert len(stages) >= 60 and set(stages) == set(STAGES)


def test_robex_debug_reraises_with_the_traceback(tmp_path, monkeypatch, capfd):
    from robex.utils.errors import RobexError

    monkeypatch.setenv("ROBEX_DEBUG", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/m.db")
    with pytest.raises(RobexError, match="trainer.max_epochs=-3"):
        run_main("train", ["trainer.max_epochs=-3"], tmp_path, monkeypatch)
    assert "robex: error:" not in capfd.readouterr().err


def test_a_programming_error_keeps_its_traceback(tmp_path, monkeypatch, capfd):
    """A KeyError/TypeError/ValueError from robex's own code is a bug: never one tidy line."""
    from omegaconf import OmegaConf

    from robex.utils.hydra import run_stage

    def buggy(cfg):
        return {}["missing"]

    with pytest.raises(KeyError):
        run_stage(buggy, OmegaConf.create({}))
    with pytest.raises(ValueError):
        run_stage(lambda cfg: int("x"), OmegaConf.create({}))
    assert "robex: error:" not in capfd.readouterr().err


def test_file_system_errors_name_the_path_and_the_fix():
    import errno
    import os

    from robex.utils.errors import is_user_error, user_message

    cases = {
        PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/data/out"): "no permission to use '/data/out'; choose a folder you can write to",
        FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "/x/y.pt"): "'/x/y.pt' does not exist; fix the path",
        IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), "/tmp"): "'/tmp' is a folder where a file is expected",
        NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), "/a/file/b"): "a part of '/a/file/b' is a file",
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/full/m.pt"): "no space left to write '/full/m.pt'",
        OSError(errno.EROFS, os.strerror(errno.EROFS), "/ro/x"): "'/ro/x' is on a read-only file system",
    }
    for error, text in cases.items():
        assert is_user_error(error) and text in user_message(error) and user_message(error) != "2"
    assert not is_user_error(ConnectionResetError(errno.ECONNRESET, "reset"))  # not a path: a bug or a network problem
    assert user_message(FileNotFoundError("model file 'x' does not exist; train it first")) == "model file 'x' does not exist; train it first"
