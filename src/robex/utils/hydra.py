"""The stage edge: one error path, stop signals, quiet logs and help for every Hydra entry point.

Every stage's ``main`` is ``return run_stage(run, cfg)``. :func:`run_stage`

- turns user errors (:class:`~robex.utils.errors.RobexError`, file-system ``OSError``\\ s, config
  values that do not resolve) into ONE stderr line ``robex: error: <sentence>`` and exit status 1;
  any other exception is a programming error and keeps its traceback. ``ROBEX_DEBUG=1`` re-raises
  user errors too, with the traceback;
- turns SIGTERM/SIGINT into :class:`~robex.utils.errors.StageStopped` (a ``KeyboardInterrupt``), so
  ``with`` blocks unwind: the MLflow run ends KILLED, staged temp folders are removed; the process
  exits 128 + signal number. Loops that cannot be interrupted by an exception (a MILP solver in C)
  run inside :func:`defer_stop` and poll :func:`stop_requested` from their callback;
- filters known noise (Lightning's litlogger/litmodels tips, known deprecation warnings) and makes an
  unreachable MLflow server fail in seconds instead of minutes.

Errors Hydra raises before the task runs (unknown keys, wrong types from the ConfigStore schemas,
unknown group options, bad override syntax) get the same one-line form: importing this module
wraps Hydra's reporter (``hydra._internal.utils.run_and_report``; every stage module imports this
module for :data:`CONFIG_PATH` before ``@hydra.main`` runs).

Only the standard library, omegaconf and hydra are imported at module level: torch, Lightning and
MLflow load inside ``run``, so ``--help`` and a config typo answer in a few seconds.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from robex.schemas import register_schemas
from robex.utils import sharding  # noqa: F401 - registers the ${shard_suffix:...} resolver
from robex.utils.errors import USER_ERRORS, RobexError, StageStopped, is_user_error, user_message

__all__ = [
    "CONFIG_PATH", "USER_ERRORS", "defer_stop", "handle_stop_signals", "job_output_dir", "job_output_name", "run_stage", "stop_requested",
    "user_errors_exit",
]

CONFIG_PATH = str(Path(__file__).resolve().parents[3] / "conf")
DEBUG_ENV = "ROBEX_DEBUG"
log = logging.getLogger("robex")
register_schemas()  # ConfigStore schemas must exist before any @hydra.main composes (T1, issue 10)

# ---------------------------------------------------------------------------------------------
# stop signals


_STOP = threading.Event()
_STOP_SIGNAL: list[int] = []
_state = {"depth": 0, "deferred": 0, "previous": {}}


def stop_requested() -> bool:
    """True once SIGTERM/SIGINT arrived. Long loops and solver callbacks poll it (HiGHS: set
    ``user_interrupt``; Gurobi: ``model.terminate()``) and return early; the stage then raises."""
    return _STOP.is_set()


def stop_signal() -> int | None:
    """The first stop signal received (``signal.SIGTERM`` ...), or None."""
    return _STOP_SIGNAL[0] if _STOP.is_set() and _STOP_SIGNAL else None


def clear_stop() -> None:
    """Forget an earlier stop request (tests, or a notebook that runs several stages)."""
    _STOP.clear()
    _STOP_SIGNAL.clear()


def _on_signal(signum, frame) -> None:
    first = not _STOP.is_set()
    _STOP.set()
    _STOP_SIGNAL.append(signum)
    if _state["deferred"] or not first:
        # inside defer_stop (a solver call) or already unwinding: only flag it; a second signal
        # while unwinding must not interrupt the clean-up that ends the MLflow run
        return
    raise StageStopped(signum)


def _raise_if_stopped() -> None:
    if _STOP.is_set():
        raise StageStopped(_STOP_SIGNAL[0] if _STOP_SIGNAL else signal.SIGTERM)


@contextlib.contextmanager
def handle_stop_signals() -> Iterator[None]:
    """Within the block SIGTERM and SIGINT raise :class:`StageStopped` (once). Re-entrant; a no-op
    outside the main thread (Python delivers signals to the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _state["depth"] == 0:
        _state["previous"] = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if _state["depth"] == 0:
            for signum, previous in _state["previous"].items():
                signal.signal(signum, previous)


@contextlib.contextmanager
def defer_stop() -> Iterator[None]:
    """Run a call that must not be interrupted by an exception (a C solver with Python callbacks):
    a signal only sets :func:`stop_requested`, which its callback polls; on leaving the block the
    stop is raised as :class:`StageStopped`."""
    _state["deferred"] += 1
    try:
        yield
    finally:
        _state["deferred"] -= 1
    _raise_if_stopped()


def install_stop_handlers() -> None:
    """Make SIGTERM/SIGINT raise :class:`StageStopped` for the rest of the process (sweep parents)."""
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, _on_signal)


# ---------------------------------------------------------------------------------------------
# quiet, fast edges


# Lightning's and MLflow's lines that say nothing to a robex user (the litlogger/litmodels tips, the
# device census of every Trainer, checkpoint reloads robex does on purpose, first-use store set-up)
NOISE = (
    "💡 Tip:", "GPU available:", "TPU available:", "HPU available:", "Restoring states from the checkpoint path",
    "Loaded model weights from the checkpoint", "does not exist. Creating a new experiment",
    "Creating initial MLflow database tables", "Updating database tables",
)
NOISY_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero", "lightning.pytorch",
    "lightning_utilities.core.rank_zero", "mlflow.tracking.fluent", "mlflow.store.db.utils",
)


class _DropTips(logging.Filter):
    """Drops :data:`NOISE`; and since ``import lightning`` gives the ``lightning`` logger its own console
    handler while it also propagates to the root handler Hydra configured (every line twice), it
    removes that extra handler the first time a Lightning record passes (Lightning is imported inside
    ``run``, after this filter is installed)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("lightning"):
            lightning = logging.getLogger("lightning")
            if lightning.propagate and logging.getLogger().handlers:
                for handler in [h for h in lightning.handlers if type(h) is logging.StreamHandler]:
                    lightning.removeHandler(handler)
        message = record.getMessage()
        return not any(text in message for text in NOISE)


KNOWN_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\).*",  # torch 2.14 pytree vs Lightning 2.6 (harmless)
    r".*does not have many workers which may be a bottleneck.*",  # tiny CPU runs use num_workers=0 on purpose
    r".*The '(train|val|test)_dataloader' does not have many workers.*",
    r".*`training_step` returned `None`.*",
    r".*Checkpoint directory .* exists and is not empty.*",
)
# an unreachable MLflow server must fail in seconds (MLflow's defaults retry for minutes)
MLFLOW_FAST_FAIL = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0"}


def quiet_edge() -> None:
    """Filter known noise and set MLflow's HTTP timeouts (values set by the user win)."""
    for pattern in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in logger.filters):
            logger.addFilter(_DropTips())
    for key, value in MLFLOW_FAST_FAIL.items():
        os.environ.setdefault(key, value)


# ---------------------------------------------------------------------------------------------
# one error path


def _fold(text: str) -> str:
    return " ".join(str(text).split())


def _is_unknown_key(cause: BaseException | None) -> bool:
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    return isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and bool(re.search(r"Key '.*' (is )?not in", str(cause)))


def _unknown_key(message: str, cause: BaseException) -> str:
    key = getattr(cause, "full_key", None) or ""
    parent, _, leaf = str(key).rpartition(".")
    where = f"'{parent}' has no key '{leaf}'" if parent else f"the config has no key '{leaf}'"
    return f"unknown key '{key}': {where}; check the spelling (`--cfg job` prints every key)"


def _missing_option(message: str) -> str:
    found = re.search(r"Could not find '([^']+)'", message)
    options = re.search(r"Available options in '([^']+)':\s*(.*)", message, re.S)
    if not found or not options:
        return _fold(message)
    group = options.group(1)
    listed = options.group(2).split("Config search path:")[0].split()
    choices = [c for c in listed if not c.endswith("_schema")]  # the ConfigStore schemas are no options
    requested = found.group(1)
    return f"{group}={requested.rpartition('/')[2]} is not an option of group '{group}'; choose one of {', '.join(choices)}"


def _omegaconf_line(error: BaseException) -> str:
    key = getattr(error, "full_key", None)
    msg = getattr(error, "msg", None) or str(error).splitlines()[0]
    first = str(msg).splitlines()[0]
    if key:
        return f"{key} is invalid: {first}; fix it on the command line or in conf/"
    return f"{_fold(first)}; fix it on the command line or in conf/"


def config_error_line(error: BaseException) -> str | None:
    """One sentence for an error Hydra/OmegaConf raise while composing or resolving the config."""
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException
    from omegaconf.errors import (
        InterpolationResolutionError,
        MissingMandatoryValue,
        OmegaConfBaseException,
        ValidationError,
    )

    cause = error.__cause__
    if isinstance(error, MissingConfigException):
        return _missing_option(str(error))
    if isinstance(error, OverrideParseException):
        reason = str(error).splitlines()[0]
        return f"cannot parse the override {getattr(error, 'override', '')!r} ({reason}); write key=value and quote special characters (e.g. 'key=\"a,b\"')"
    if isinstance(error, HydraException):
        if _is_unknown_key(cause):
            return _unknown_key(str(error), cause)
        if isinstance(cause, OmegaConfBaseException):
            return _omegaconf_line(cause)
        if cause is not None and is_user_error(cause):
            return user_message(cause)
        return _fold(str(error))
    if isinstance(error, (ValidationError, InterpolationResolutionError, MissingMandatoryValue)):
        return _omegaconf_line(error)
    return None


def error_line(error: BaseException) -> str | None:
    """The one line for a user error (looking through wrappers such as Hydra's
    InstantiationException), or None for a programming error that must keep its traceback."""
    seen = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StageStopped):
            return f"{current}; the MLflow run was marked KILLED and no output was published"
        if is_user_error(current):
            return user_message(current)
        line = config_error_line(current)
        if line is not None:
            return line
        current = current.__cause__
    return None


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0") or os.environ.get("HYDRA_FULL_ERROR", "") == "1"


def _print_error(line: str) -> None:
    sys.stderr.write(f"robex: error: {line}\n")
    sys.stderr.flush()


def _exit_code(error: BaseException) -> int:
    stopped = error if isinstance(error, StageStopped) else None
    return stopped.exit_code if stopped else 1


def _in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN"
    except Exception:  # noqa: BLE001 - not under Hydra
        return False


def run_stage(run: Callable[[DictConfig], dict], cfg: DictConfig) -> dict:
    """Run a stage's ``run(cfg)`` behind the one error path (see the module docstring).

    In a multirun the error is raised (as a RobexError or StageStopped) instead of exiting, so Hydra
    marks the job FAILED and the sweep parent run ends FAILED/KILLED; the reporter prints one line.
    """
    quiet_edge()
    try:
        with handle_stop_signals():
            _raise_if_stopped()
            return run(cfg)
    except SystemExit:
        raise
    except BaseException as error:
        line = error_line(error)
        if line is None or _debug():
            raise
        if _in_multirun():
            if isinstance(error, StageStopped):
                raise
            raise RobexError(line) from error
        _print_error(line)
        log.debug("traceback of the error above", exc_info=True)
        sys.exit(_exit_code(error))


def stage_help(*, _root_) -> str:
    """``--help`` text of a stage (resolver ``${robex_help:}``, set as ``hydra.help.template``): the
    stage module's docstring, then only the config groups this stage composes, with their options
    (the current one starred), then Hydra's flags and the composed config."""
    import ast
    import importlib.util

    job = str(_root_.hydra.job.name)
    spec = importlib.util.find_spec(f"robex.stages.{job}")
    doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text())) if spec and spec.origin else None
    lines = [(doc or f"Stage `{job}`.").replace("$", "$$"), "", "== Configuration groups (group=option; * = current) =="]
    choices = {k: v for k, v in dict(_root_.hydra.runtime.choices).items() if not k.startswith("hydra")}
    for group, current in sorted(choices.items()):
        options = sorted(p.stem for p in (Path(CONFIG_PATH) / group).glob("*.yaml"))
        if group == "experiment":  # only the experiments written for this stage (named in their header)
            options = _stage_experiments(job, options)
        lines.append(f"{group}: " + ", ".join(f"{o}*" if o == current else o for o in options or [str(current)]))
    lines += ["", "== Flags ==", "$FLAGS_HELP", "",
              f"Bad input ends with one line `robex: error: ...`; ROBEX_DEBUG=1 shows the traceback. Tab completion: eval \"$$(robex-{job.replace('_', '-')} -sc install=bash)\"",
              "", "== Config (override any key: key=value) ==", "$CONFIG"]
    return "\n".join(lines)


if not OmegaConf.has_resolver("robex_help"):
    OmegaConf.register_new_resolver("robex_help", stage_help)

SWEPT_KEYS_ENV = "ROBEX_SWEPT_KEYS"  # set by robex.tracking.hydra_callback in the sweep's parent


def job_output_name(name: str, raw_name: str = "", *, referenced: set[str] | None = None, apart: tuple[str, ...] = ()) -> str:
    """``name`` in a single run; in a multirun ``name`` plus what this job varies, so sweep jobs never
    share an output folder: ``<name>-seed=1`` (``<name>-job3`` when the swept keys are unknown).

    A swept key that already tells the jobs apart is left out of the suffix: one that ``raw_name``
    (the unresolved value, e.g. ``${data.name}_${model.name}_${defense.name}``) interpolates, one of
    the ``referenced`` keys (see :func:`job_output_dir`), and those in ``apart`` (e.g. ``shard.index``
    for a stage that gives each shard its own sub-folder itself).
    """
    try:
        from hydra.core.hydra_config import HydraConfig

        if not (HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN"):
            return name
        hydra_cfg = HydraConfig.get()
    except Exception:  # noqa: BLE001 - not under Hydra
        return name
    known = SWEPT_KEYS_ENV in os.environ
    swept = set(filter(None, os.environ.get(SWEPT_KEYS_ENV, "").split(",")))
    refs = set(referenced or ())

    def in_name(key: str) -> bool:
        if key == "name" or key in apart or re.search(r"\$\{" + re.escape(key) + r"[.}]", raw_name):
            return True
        return any(ref == key or ref.startswith(f"{key}.") or key.startswith(f"{ref}.") for ref in refs)

    named = {key for key in swept if in_name(key)}
    varied = [o.lstrip("+~") for o in hydra_cfg.overrides.task if o.partition("=")[0].lstrip("+~") in swept - named]
    if varied:
        return f"{name}-" + re.sub(r"[^\w.,=+-]", "_", ",".join(varied))[:120]
    if known and swept and swept <= named:
        return name
    return f"{name}-job{hydra_cfg.job.num}"


# ${a.b} and relative ${.b} / ${..b}; resolver calls (${oc.env:X}, ${hydra:...}) name no config key
_KEY_REFERENCE = re.compile(r"\$\{(\.*)([A-Za-z_][\w.]*)\}")


def _raw_value(container: object, key: str) -> object:
    for part in key.split("."):
        if not isinstance(container, dict) or part not in container:
            return None
        container = container[part]
    return container


def referenced_keys(container: dict, key: str, _depth: int = 0) -> set[str]:
    """Every config key the unresolved value of ``key`` interpolates, followed transitively
    (``output_dir: .../${attack.label}`` with ``label: ${.name}_eps${.eps}`` -> attack.label,
    attack.name, attack.eps). ``container`` is ``OmegaConf.to_container(cfg, resolve=False)``."""
    raw = _raw_value(container, key)
    if not isinstance(raw, str) or _depth > 10:
        return set()
    scope = key.split(".")[:-1]
    found: set[str] = set()
    for dots, ref in _KEY_REFERENCE.findall(raw):
        if dots:  # relative: "." = this node's parent container, each further dot one level up
            ref = ".".join([*scope[: len(scope) - (len(dots) - 1)], ref])
        found |= {ref} | referenced_keys(container, ref, _depth + 1)
    return found


def job_output_dir(cfg: DictConfig, key: str = "output_dir", *, apart: tuple[str, ...] = ()) -> Path:
    """The output folder ``cfg.<key>``, with this job's swept values appended in a multirun, so every
    sweep job of every stage writes its own complete folder (``.../c2f_tables-seed=1``). Swept keys the
    folder's value already interpolates (``${target}``, ``${attack.label}`` -> ``attack.eps``) or named
    in ``apart`` add nothing; a single run gets ``cfg.<key>`` unchanged."""
    container = OmegaConf.to_container(cfg, resolve=False)
    value = OmegaConf.select(cfg, key, throw_on_missing=True)
    return Path(job_output_name(str(value), referenced=referenced_keys(container, key), apart=(key, *apart)))


def user_errors_exit(main: Callable[[DictConfig], object]) -> Callable[[DictConfig], object]:
    """Old decorator form of :func:`run_stage` (kept until every stage calls ``run_stage``)."""

    @functools.wraps(main)
    def wrapper(cfg: DictConfig):
        return run_stage(main, cfg)

    return wrapper


def _install_hydra_reporter() -> None:
    """Give errors raised outside the task (composition, sweep aborts) the same one-line form."""
    try:
        import hydra._internal.utils as hydra_utils
    except ImportError:  # pragma: no cover - Hydra moved its internals; keep Hydra's own report
        return
    original = getattr(hydra_utils.run_and_report, "__wrapped__", hydra_utils.run_and_report)

    def _reraise(error: BaseException):
        raise error

    @functools.wraps(original)
    def run_and_report(func):
        try:
            return func()
        except SystemExit:
            raise
        except BaseException as error:
            if _debug():
                raise  # ROBEX_DEBUG=1 / HYDRA_FULL_ERROR=1: the whole traceback
            line = error_line(error)
            if line is None:
                if isinstance(error, KeyboardInterrupt):
                    raise
                return original(functools.partial(_reraise, error))
            _print_error(line)
            sys.exit(_exit_code(error))

    hydra_utils.run_and_report = run_and_report


def _stage_experiments(job: str, options: list[str]) -> list[str]:
    """The ``experiment=`` files written for stage ``job`` (their header names ``robex.<job> ... experiment=<o>``)."""
    folder = Path(CONFIG_PATH) / "experiment"
    return [o for o in options if (folder / f"{o}.yaml").is_file()
            and re.search(rf"robex\.{job}\b.*experiment={re.escape(o)}\b", (folder / f"{o}.yaml").read_text())]


def _completion_keeps(candidate: str, groups: set[str], job: str) -> bool:
    """Tab completion offers what this stage can use: no ConfigStore ``*_schema`` nodes, no config
    groups of other stages (``attack=`` for robex-train), only this stage's experiments."""
    word = candidate.lstrip("+~")
    key, equals, option = word.partition("=")
    if option.endswith("_schema"):
        return False
    top = key.split("/")[0].split(".")[0]
    if (equals or word.endswith("/")) and "." not in key and (Path(CONFIG_PATH) / top).is_dir() and top not in groups:
        return False
    return not (key == "experiment" and option and not _stage_experiments(job, [option]))


def _install_completion_filter() -> None:
    """Filter Hydra's shell-completion answers (``robex-train -sc query=bash``) with :func:`_completion_keeps`."""
    try:
        from hydra.plugins.completion_plugin import CompletionPlugin
        from hydra.types import RunMode
    except ImportError:  # pragma: no cover - Hydra moved its internals; keep its own completion
        return
    original = getattr(CompletionPlugin._query, "__wrapped__", CompletionPlugin._query)

    @functools.wraps(original)
    def _query(self, config_name, line):
        found = original(self, config_name, line)
        try:
            defaults = self.config_loader.compute_defaults_list(config_name, [], RunMode.RUN).defaults
            groups = {d.config_path.split("/")[0] for d in defaults if d.config_path and "/" in d.config_path} | {"experiment", "hydra"}
        except Exception:  # noqa: BLE001 - the stage's config does not compose: filter schemas only
            groups = {p.name for p in Path(CONFIG_PATH).iterdir() if p.is_dir()}
        return [c for c in found if _completion_keeps(c, groups, str(config_name))]

    CompletionPlugin._query = _query


def _install_fast_help() -> None:
    """``--help`` without Hydra's group census when the template does not show it: Hydra's ``get_help``
    always formats ``$APP_CONFIG_GROUPS`` and ``$HYDRA_CONFIG_GROUPS``, which deep-copies the whole
    ConfigStore (every schema) once per group (~1.5 s CPU); robex's template (:func:`stage_help`)
    lists the stage's own groups instead."""
    try:
        from hydra._internal.hydra import Hydra
    except ImportError:  # pragma: no cover - Hydra moved its internals; keep its own help
        return
    original = getattr(Hydra.get_help, "__wrapped__", Hydra.get_help)

    @functools.wraps(original)
    def get_help(self, help_cfg, cfg, args_parser, resolve):
        template = str(help_cfg.template)
        if "CONFIG_GROUPS" in template:
            return original(self, help_cfg, cfg, args_parser, resolve)
        import string

        return string.Template(template).substitute(FLAGS_HELP=self.format_args_help(args_parser), CONFIG=OmegaConf.to_yaml(cfg, resolve=resolve))

    Hydra.get_help = get_help


_install_hydra_reporter()
_install_completion_filter()
_install_fast_help()
register_schemas()  # ConfigStore schemas must exist before any @hydra.main composes (T1, issue 10)
