"""The code deps of every dvc.yaml stage, computed: its static import closure.

For each stage (``foreach`` stages item by item, as DVC expands them):

1. the entry module from ``cmd`` (``python -m robex.<x>``; a package means its ``__main__.py``);
2. every ``import``/``from`` statement of every reached robex module, anywhere in the file (inside
   functions too: the stages import heavy libraries lazily), with each parent package ``__init__.py``
   (Python runs them on import); ``importlib.import_module(f"robex.pkg.{name}")`` with a constant
   package prefix counts as importing every module of that package (``robex.schemas``);
3. the ``_target_`` strings of the config the stage composes (Hydra's defaults list for its ``cmd``
   overrides), and for a ``model.pt`` dep made by another stage the ``_target_``\\ s of that stage's
   ``model`` group (``robex.models.io.load_model`` instantiates the saved config);
4. the conf/ files the stage composes (they are deps too, unless declared as params).

Exempt (documented in docs/ARCHITECTURE.md): the MLflow-only tracking modules in :data:`EXEMPT`. They
log runs and never change a file DVC tracks, so editing them must not re-run the pipeline; the closure
does not follow their imports either. ``robex.tracking.queries`` is NOT exempt: the report reads MLflow.
Likewise ``conf/hydra/`` (Hydra's run folders, launchers, the MLflow sweep callback) is not a dep.

    python scripts/dvc_deps.py            # print each stage's closure
    python scripts/dvc_deps.py --check    # exit 1 listing every file not covered by a dep
    python scripts/dvc_deps.py --write    # rewrite the code (src/) deps of each stage in dvc.yaml
    python scripts/dvc_deps.py --check --dvcfile reference/dvc.yaml   # another pipeline file (wdir: ..)

``--write`` keeps every dep outside src/robex/*.py (data, outputs, conf, package data such as
paper_reference.yaml), params, outs and comments; it replaces the stage's src/ code deps by the
closure, collapsing a package to its directory when every module of it is in the closure. A
``foreach`` stage gets the union over its items (one ``do:`` template), and conf files it lacks are
added only when they are the same for every item (item-specific ones need a ``${item...}`` entry).
"""

from __future__ import annotations

import argparse
import ast
import shlex
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
CONF = ROOT / "conf"
PACKAGE = "robex"
EXEMPT = frozenset({"src/robex/tracking/__init__.py", "src/robex/tracking/mlflow_utils.py", "src/robex/tracking/hydra_callback.py"})
EXEMPT_CONF = "conf/hydra/"  # Hydra's own run/sweep folders, launchers and callbacks: never change a DVC output


# --- python import closure ---------------------------------------------------------------------
def module_file(name: str) -> Path | None:
    """The file of module ``name`` (a package's __init__.py), or None if it is not a robex module."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    base = SRC.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _package_modules(package: str) -> list[str]:
    folder = SRC.joinpath(*package.split("."))
    return [_module_name(path) for path in sorted(folder.glob("*.py"))] if folder.is_dir() else []


def imported_names(path: Path) -> set[str]:
    """Every robex module ``path`` may import (anywhere in the file), parents included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module" and node.args:
            argument = node.args[0]
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                names.add(argument.value)
            elif isinstance(argument, ast.JoinedStr) and argument.values and isinstance(argument.values[0], ast.Constant):
                prefix = str(argument.values[0].value)
                if prefix.endswith("."):  # f"robex.schemas.{name}": any module of the package
                    names.update(_package_modules(prefix[:-1]))
    return {parent for name in names for parent in _with_parents(name) if module_file(parent) is not None}


def import_closure(modules: Iterable[str]) -> set[str]:
    """Repo-relative paths of the files reached from ``modules`` (exempt files are left out and not followed)."""
    todo = [parent for name in modules for parent in _with_parents(name) if module_file(parent) is not None]
    seen: set[str] = set()
    files: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        relative = str(path.relative_to(ROOT))
        if relative in EXEMPT:
            continue
        files.add(relative)
        todo.extend(imported_names(path) - seen)
    return files


def target_modules(node) -> set[str]:
    """Modules named by the ``_target_`` strings in a (plain) config tree: the longest importable prefix."""
    found: set[str] = set()
    if isinstance(node, dict):
        target = node.get("_target_")
        if isinstance(target, str):
            parts = target.split(".")
            for end in range(len(parts), 0, -1):
                if module_file(".".join(parts[:end])) is not None:
                    found.add(".".join(parts[:end]))
                    break
        for value in node.values():
            found |= target_modules(value)
    elif isinstance(node, list):
        for value in node:
            found |= target_modules(value)
    return found


# --- the stages --------------------------------------------------------------------------------
@dataclass
class StageDeps:
    name: str  # as DVC addresses it: train_cifar@cifar_cnn
    group: str  # the dvc.yaml key: train_cifar
    code: set[str] = field(default_factory=set)
    conf: set[str] = field(default_factory=set)
    model_targets: set[str] = field(default_factory=set)  # what loading this stage's model.pt imports
    declared: list[str] = field(default_factory=list)  # its deps and params files, as DVC expands them
    outs: list[str] = field(default_factory=list)


def parse_cmd(cmd: str) -> tuple[str, str, list[str]]:
    """``python -m robex.x a=b`` -> (module, config name, Hydra overrides)."""
    words = shlex.split(cmd)
    if "-m" not in words:
        raise SystemExit(f"dvc_deps: cannot find `python -m <module>` in cmd {cmd!r}")
    module = words[words.index("-m") + 1]
    overrides = [word for word in words[words.index("-m") + 2:] if "=" in word and not word.startswith("-")]
    return module, module.rpartition(".")[2], overrides


def composed(config_name: str, overrides: list[str]) -> tuple[dict, set[str]]:
    """The config a stage composes (unresolved, as plain containers) and the conf/ files behind it;
    nothing for a module that is no Hydra app (no conf/<config_name>.yaml, e.g. ``robex.models.io``)."""
    if not (CONF / f"{config_name}.yaml").is_file():
        return {}, set()
    from hydra import compose, initialize_config_dir
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    sys.path.insert(0, str(SRC))
    from robex.schemas import register_schemas

    register_schemas()
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF)))
    defaults = loader.compute_defaults_list(config_name, overrides, RunMode.RUN)
    files = {str((CONF / f"{d.config_path}.yaml").relative_to(ROOT)) for d in defaults.defaults
             if d.config_path and (CONF / f"{d.config_path}.yaml").is_file()}
    files = {path for path in files if not path.startswith(EXEMPT_CONF)}
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3", job_name=config_name):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    return OmegaConf.to_container(cfg, resolve=False), files


def entry_module(module: str) -> str:
    path = module_file(module)
    return f"{module}.__main__" if path is not None and path.name == "__init__.py" and (path.parent / "__main__.py").is_file() else module


def stage_deps(root: Path = ROOT, dvcfile: str = "dvc.yaml") -> list[StageDeps]:
    """The stages of ``root/dvcfile`` only: ``Repo.index`` holds every dvc.yaml of the repository
    (e.g. reference/dvc.yaml), whose stage names may repeat the root file's."""
    from dvc.repo import Repo

    wanted = (Path(root) / dvcfile).resolve()
    stages: list[StageDeps] = []
    for stage in Repo(str(root)).index.stages:
        if not stage.cmd or Path(stage.dvcfile.path).resolve() != wanted:
            continue
        module, config_name, overrides = parse_cmd(stage.cmd)
        cfg, conf_files = composed(config_name, overrides)
        targets = target_modules(cfg)
        result = StageDeps(name=stage.name, group=stage.name.partition("@")[0], conf=conf_files,
                           model_targets=target_modules(cfg.get("model", {})))
        result.code = import_closure([entry_module(module), *targets])
        result.declared = [str(dep.def_path) for dep in stage.deps] + [str(p.def_path) for p in stage.params]
        result.outs = [str(out.def_path) for out in stage.outs]
        stages.append(result)
    producers = {out: stage for stage in stages for out in stage.outs}
    for stage in stages:  # a model.pt dep: loading it instantiates the producing stage's model classes
        for dep in stage.declared:
            producer = producers.get(dep)
            if dep.endswith("model.pt") and producer is not None:
                stage.code |= import_closure(producer.model_targets)
    return stages


def covered(path: str, declared: Iterable[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in declared)


def missing(stage: StageDeps) -> list[str]:
    return sorted(path for path in stage.code | stage.conf if not covered(path, stage.declared))


def compact(files: set[str]) -> list[str]:
    """Sorted deps: a package directory instead of its files when every module of it is in ``files``
    (recursively: a directory is used only if all its .py files and sub-packages are)."""

    def complete(folder: Path) -> bool:
        modules = [str(p.relative_to(ROOT)) for p in folder.rglob("*.py") if "__pycache__" not in p.parts]
        return bool(modules) and all(m in files for m in modules)

    result: set[str] = set()
    for path in files:
        folder = (ROOT / path).parent
        best = path
        while folder != SRC and folder.is_relative_to(SRC / PACKAGE) and complete(folder) and folder != SRC / PACKAGE:
            best = str(folder.relative_to(ROOT))
            folder = folder.parent
        result.add(best)
    return sorted(result)


def is_code_dep(dep: str) -> bool:
    """A dep --write manages: robex python files and package folders (not package data such as YAML)."""
    return dep.startswith(f"src/{PACKAGE}") and (dep.endswith(".py") or (ROOT / dep).is_dir())


# --- rewriting dvc.yaml ------------------------------------------------------------------------
def write(stages: list[StageDeps], path: Path = ROOT / "dvc.yaml") -> list[str]:
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedSeq

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    document = yaml.load(path.read_text())
    changed: list[str] = []
    by_group: dict[str, list[StageDeps]] = {}
    for stage in stages:
        by_group.setdefault(stage.group, []).append(stage)
    for group, items in by_group.items():
        block = document["stages"][group]
        body = block["do"] if "foreach" in block else block
        deps = body.get("deps")
        if deps is None:
            deps = body["deps"] = CommentedSeq()
        code = compact(set().union(*(s.code for s in items)))
        conf_common = set.intersection(*(s.conf for s in items))
        templated = [d for d in deps if isinstance(d, str)]
        add_conf = sorted(c for c in conf_common if not covered(c, templated)
                          and not any(covered(c, s.declared) for s in items))
        old = [d for d in deps if isinstance(d, str) and is_code_dep(d)]
        if old == code and not add_conf:
            continue
        position = next((i for i, d in enumerate(deps) if isinstance(d, str) and is_code_dep(d)), len(deps))
        # keep comments attached to removed items by deleting from the end
        for index in reversed([i for i, d in enumerate(deps) if isinstance(d, str) and is_code_dep(d)]):
            del deps[index]
        for offset, dep in enumerate(code):
            deps.insert(position + offset, dep)
        for dep in add_conf:
            deps.append(dep)
        changed.append(group)
    if changed:
        with path.open("w") as handle:
            yaml.dump(document, handle)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 listing files a stage imports/composes but does not depend on")
    mode.add_argument("--write", action="store_true", help="rewrite the src/ code deps of every stage in dvc.yaml")
    parser.add_argument("--dvcfile", default="dvc.yaml", help="the pipeline file, relative to the repository (e.g. reference/dvc.yaml)")
    args = parser.parse_args(argv)
    stages = stage_deps(dvcfile=args.dvcfile)
    if args.write:
        changed = write(stages, ROOT / args.dvcfile)
        print(f"dvc_deps: rewrote the code deps of {', '.join(changed) if changed else 'no stage'} in {args.dvcfile}")
        stages = stage_deps(dvcfile=args.dvcfile)
    problems = {stage.name: missing(stage) for stage in stages}
    problems = {name: files for name, files in problems.items() if files}
    if args.check or args.write:
        for name, files in problems.items():
            print(f"{name}: not covered by a dep: {', '.join(files)}")
        if problems:
            print(f"dvc_deps: {len(problems)} stage(s) miss deps; run `python scripts/dvc_deps.py --write`", file=sys.stderr)
        return 1 if problems else 0
    for stage in stages:
        print(f"{stage.name}:")
        for dep in compact(stage.code) + sorted(stage.conf):
            print(f"  - {dep}{'' if covered(dep, stage.declared) else '   # MISSING'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
