"""robex's error types and the one-sentence messages the user sees for bad input.

User errors are :class:`RobexError` (raised by robex with a message naming the value, key or path
and the fix) and file-system errors (``OSError`` with a path: missing file, unwritable folder, full
disk), which :func:`user_message` turns into one such sentence. Everything else (``KeyError``,
``TypeError``, ``ValueError`` from robex's own code...) is a programming error and keeps its
traceback. Only the standard library is imported here, so the stage edge stays fast.
"""

from __future__ import annotations

import errno
import signal


class RobexError(Exception):
    """Bad configuration or input; the message names the value or path and the fix."""


class StageStopped(KeyboardInterrupt):
    """SIGTERM/SIGINT turned into an exception, so context managers unwind: the MLflow run ends
    KILLED and staged temp folders are removed. A ``KeyboardInterrupt`` so ``except Exception``
    blocks in libraries do not swallow it."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        self.signum = int(signum)
        super().__init__(f"stopped by {signal.Signals(self.signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


USER_ERRORS: tuple[type[BaseException], ...] = (
    RobexError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, OSError,
)
# errno values that say "this path / this disk", not "this program": only these OSErrors are user errors
_FILE_SYSTEM_ERRNOS = {
    errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.ENOSPC, errno.EROFS,
    errno.EEXIST, errno.ENOTEMPTY, errno.ENAMETOOLONG, errno.EDQUOT, errno.EXDEV, errno.ELOOP,
}


def _path_fix(error: OSError) -> str | None:
    path = error.filename
    if path is None:
        return None
    where = f"{str(path)!r}" + (f" -> {str(error.filename2)!r}" if error.filename2 is not None else "")
    if isinstance(error, FileNotFoundError):
        return f"{where} does not exist; fix the path on the command line or in conf/, or run the stage that writes it first"
    if isinstance(error, PermissionError):
        return f"no permission to use {where}; choose a folder you can write to (e.g. paths.root_dir=<dir>) or fix its permissions"
    if isinstance(error, IsADirectoryError):
        return f"{where} is a folder where a file is expected; pass the path of a file"
    if isinstance(error, NotADirectoryError):
        return f"a part of {where} is a file where a folder is expected; fix the path or remove that file"
    if error.errno == errno.ENOSPC or error.errno == errno.EDQUOT:
        return f"no space left to write {where}; free disk space or write elsewhere (paths.root_dir=<dir>)"
    if error.errno == errno.EROFS:
        return f"{where} is on a read-only file system; write elsewhere (paths.root_dir=<dir>)"
    reason = error.strerror or type(error).__name__
    return f"{reason.lower()} at {where}; check that path"


def is_user_error(error: BaseException) -> bool:
    """RobexError, or an OSError about a path; not a socket error or an OSError robex raised bare."""
    if isinstance(error, (RobexError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return True
    from hydra.errors import HydraException  # MissingConfigException is an IOError too

    if isinstance(error, HydraException):
        return False
    return isinstance(error, OSError) and (error.filename is not None or error.errno in _FILE_SYSTEM_ERRNOS)


def user_message(error: BaseException) -> str:
    """The one line shown after ``robex: error:`` (newlines folded, never a bare errno)."""
    if isinstance(error, OSError) and error.errno is not None:
        # raised by the OS: strerror and errno only; say which path and what to do
        text = _path_fix(error) or f"{error.strerror or error} (errno {error.errno}); check the paths in the config"
    else:
        text = str(error.args[0]) if error.args else type(error).__name__
    return " ".join(text.split())
