"""Cooperative stop flag for the verifier's solver and search loops (SIGTERM from a sweep or a
scheduler): every long loop polls :func:`stop_requested` and ends with what it has.

Uses ``robex.utils.hydra.stop_requested`` when the project provides it; until then a local flag
set by :func:`install_stop_handler` (the stage installs it; the library never does on import).
"""

from __future__ import annotations

import signal

_stop = False


def _project_flag():
    try:
        from robex.utils.hydra import stop_requested as project_stop_requested
    except ImportError:
        return None
    return project_stop_requested


def stop_requested() -> bool:
    """True once a stop (SIGTERM) was requested."""
    project = _project_flag()
    return _stop or (project is not None and bool(project()))


def request_stop(*_args) -> None:
    global _stop
    _stop = True


def reset_stop() -> None:
    global _stop
    _stop = False


def install_stop_handler() -> None:
    """Set the local flag on SIGTERM (only where the project has no handler of its own)."""
    if _project_flag() is None:
        signal.signal(signal.SIGTERM, request_stop)


def raise_if_stopped() -> None:
    """Raise :class:`robex.utils.errors.StageStopped` once a stop was requested, so the stage ends
    KILLED with nothing written, instead of finishing on answers the stop cut short."""
    if stop_requested():
        import signal

        from robex.utils.errors import StageStopped

        raise StageStopped(signal.SIGTERM)
