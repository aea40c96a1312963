"""The one error type for anything a user can cause and fix.

Every user-facing failure in voxtune raises `VoxtuneError` (or a subclass named after the
module it comes from, so callers may still catch the narrow kind). One handler per surface
shows it: the CLI prints one line plus the hint and exits 2 (`tui.cli.main`), the TUI shows
a notification, the worker writes it as the run's reason. Anything else is a bug: the CLI
prints a one-line summary and the path of a log holding the traceback, and exits 1.

`field` names the option at fault as the RunConfig field (the CLI shows its flag, the form
marks its widget); `file` names the file or folder at fault.
"""

from __future__ import annotations

import errno
import os


class VoxtuneError(Exception):
    """A refusal the user can act on: a one-line `message`, optionally the `field` (RunConfig
    field name) or `file` (path) at fault and a `hint` saying what to do."""

    exit_code = 2

    def __init__(self, message: str, *, field: str | None = None, file: str | os.PathLike | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message)
        self.message = str(message)
        self.field = field
        self.file = os.fspath(file) if file is not None else None
        self.hint = hint

    def __str__(self) -> str:
        """Message and hint in one string (logs, run reasons); surfaces that show the hint on
        its own line use `one_line()` and `hint`."""
        return f"{self.message}; {self.hint}" if self.hint else self.message

    def one_line(self) -> str:
        """The message on one line (a multi-line cause is folded), without the hint."""
        return " ".join(part.strip() for part in self.message.splitlines() if part.strip())


# errno values a user's environment causes (a full disk, a read-only or foreign folder, a path
# that is a file): shown as one line naming the path, never as a traceback.
USER_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "not a folder",
    errno.EISDIR: "is a folder, not a file",
    errno.ENOENT: "no such file or folder",
    errno.EEXIST: "already exists",
    errno.ENAMETOOLONG: "file name too long",
    errno.ELOOP: "too many symbolic links",
}

HINTS = {
    errno.ENOSPC: "free some space (old runs: `voxtune runs rm ID`; checkpoints live in runs/ID/checkpoints)",
    errno.EDQUOT: "free some space or ask for a larger quota",
    errno.EROFS: "use a writable workspace: --home DIR or VOXTUNE_HOME",
    errno.EACCES: "check the folder's owner and permissions, or use another workspace (--home DIR)",
    errno.EPERM: "check the folder's owner and permissions, or use another workspace (--home DIR)",
    errno.ENOTDIR: "--home must name a folder (it is created if missing)",
}


def from_os_error(e: OSError, doing: str | None = None) -> VoxtuneError | None:
    """A VoxtuneError for an OSError the environment caused (full disk, read-only, permissions,
    a file where a folder belongs); None for anything else (a bug: keep the traceback)."""
    if e.errno not in USER_ERRNOS:
        return None
    path = e.filename if e.filename is not None else None
    what = USER_ERRNOS[e.errno]
    where = f" {path}" if path else ""
    prefix = f"{doing}: " if doing else ""
    return VoxtuneError(f"{prefix}cannot write{where}: {what}" if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
                        else f"{prefix}{path + ': ' if path else ''}{what}",
                        file=path, hint=HINTS.get(e.errno))
