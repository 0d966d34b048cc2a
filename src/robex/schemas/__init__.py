"""Hydra ConfigStore schemas: an unknown key or a wrong type fails while Hydra composes the config.

Each module ``robex.schemas.<name>`` (train, prepare, report, attack, lrp, explain, verify) defines
dataclasses (imports: dataclasses, typing, omegaconf only; no torch) and a ``register(cs)`` that
stores them in Hydra's ConfigStore. :func:`register_schemas` imports every such module and calls its
``register``; ``robex.utils.hydra`` calls it on import, i.e. before any ``@hydra.main`` composes (and
``tests/conftest.py`` before ``hydra.compose``).

YAML hook-up ("schema in the defaults list", Hydra 1.1+ pattern):

* a group option, e.g. ``conf/defense/pgd.yaml``, after
  ``cs.store(group="defense", name="pgd_schema", node=PGDDefenseConfig)``::

      defaults:
        - pgd_schema        # resolved in the option's own group: defense/pgd_schema
        - _self_
      name: pgd
      ...

* a primary config, e.g. ``conf/report.yaml``, after ``cs.store(name="report_schema", node=ReportConfig)``::

      defaults:
        - report_schema
        - _self_
        - paths: default
        ...

  The primary schema lists the stage's group keys too (``paths: Any = MISSING`` ...), so that a key
  that is neither a field nor a group is rejected; the groups check their own contents.

The stored name is always ``<option>_schema`` (group options) or ``<stage>_schema`` (primary configs), so
it never collides with a YAML option. Range checks that need values (``eps >= 0``) live in the
dataclasses' ``__post_init__``, which OmegaConf runs in ``OmegaConf.to_object``: a stage calls
:func:`check` on the node (or the library constructor raises RobexError) before doing work.
"""

from __future__ import annotations

import importlib
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

SCHEMA_MODULES = ("train", "prepare", "report", "attack", "lrp", "explain", "verify")
_registered = False


def register_schemas() -> None:
    """Store every robex schema in Hydra's ConfigStore (idempotent; modules not written yet are skipped)."""
    global _registered
    if _registered:
        return
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for name in SCHEMA_MODULES:
        try:
            module = importlib.import_module(f"robex.schemas.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"robex.schemas.{name}":
                raise  # a schema module that imports something missing is a bug, not an absent module
            continue
        module.register(cs)
    _registered = True


def check(node: Any, key: str = "") -> Any:
    """Run the ``__post_init__`` range checks of a composed structured node (``OmegaConf.to_object``);
    returns the dataclass instance. ``key`` prefixes the one-sentence error (e.g. ``"defense."``)."""
    from robex.utils.errors import RobexError

    try:
        return OmegaConf.to_object(node)
    except OmegaConfBaseException as error:
        full_key = getattr(error, "full_key", None) or key
        raise RobexError(f"{full_key}: {str(error).splitlines()[0]}; fix it in conf/ or on the command line") from None
