"""Where voxtune keeps its state: one folder holding the TinyDB file, data/ and runs/.

One per user, wherever the command is started (a user reconnecting over SSH from another
folder finds the same runs): `--home DIR`, else `$VOXTUNE_HOME`, else
`$XDG_DATA_HOME/voxtune` (`~/.local/share/voxtune` when XDG_DATA_HOME is unset, empty or
relative, as the XDG Base Directory spec says). Commands that write create it
(`open_workspace`); read-only ones never do (`existing_workspace`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine.errors import VoxtuneError, from_os_error

DB_NAME = "voxtune.json"
# Permissions policy (issue 13): what voxtune writes is its user's only -- folders 0700, files 0600
# (transcripts, predictions, logs, checkpoints, locks). voxtune's processes run with UMASK, and
# lock files and run folders get their modes explicitly. A home folder that already exists keeps
# its own mode (it may be the user's project folder); the folders voxtune creates in it are 0700.
UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600


def private_umask() -> int:
    """Apply voxtune's umask to this process (and the children it starts); returns the old one."""
    return os.umask(UMASK)


def open_private(path: str | os.PathLike, flags: int = os.O_RDWR | os.O_CREAT) -> int:
    """os.open with mode 0600, also tightening a file an older voxtune created 0644 (if ours)."""
    fd = os.open(path, flags, FILE_MODE)
    try:
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, FILE_MODE)
    except OSError:
        pass
    return fd


@dataclass(frozen=True)
class Workspace:
    home: Path

    @property
    def db_path(self) -> Path:
        return self.home / DB_NAME

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def engine_dir(self) -> Path:
        """Daemon pid file, daemon log and lock files."""
        return self.home / ".voxtune"

    @property
    def cache_dir(self) -> Path:
        """Derived, re-creatable data (parameter counts, prepared segments)."""
        return self.engine_dir / "cache"

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def dataset_dir(self, name: str) -> Path:
        return self.data_dir / name

    def ensure(self) -> "Workspace":
        """Create the workspace's folders (for commands that write). VoxtuneError when the
        home is a file or cannot be created (read-only, permissions)."""
        check_home(self.home)
        try:
            for d in (self.home, self.data_dir, self.runs_dir, self.engine_dir, self.cache_dir):
                d.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        except OSError as e:
            raise (from_os_error(e, "workspace") or e) from None
        return self


def check_home(home: Path) -> None:
    """A workspace must be a folder (or not exist yet); its store must be a file."""
    if home.exists() and not home.is_dir():
        raise VoxtuneError(f"workspace {home} is a file, not a folder", file=home,
                           hint="--home (or VOXTUNE_HOME) must name a folder; it is created if missing")
    db = home / DB_NAME
    if db.exists() and not db.is_file():
        raise VoxtuneError(f"{db} is not a file", file=db, hint="use another workspace (--home DIR)")


def default_home() -> Path:
    """`$XDG_DATA_HOME/voxtune`, else `~/.local/share/voxtune` (XDG Base Directory spec: an
    unset, empty or relative XDG_DATA_HOME is ignored)."""
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "voxtune"


def home_source(arg: str | os.PathLike | None = None) -> str:
    """Which setting chose the workspace: "--home", "VOXTUNE_HOME" or "default"."""
    if arg:
        return "--home"
    return "VOXTUNE_HOME" if os.environ.get("VOXTUNE_HOME") else "default"


def resolve_home(arg: str | os.PathLike | None = None) -> Path:
    """--home beats VOXTUNE_HOME beats `default_home()` (never the current directory)."""
    raw = arg or os.environ.get("VOXTUNE_HOME") or default_home()
    return Path(raw).expanduser().resolve()


def open_workspace(arg: str | os.PathLike | None = None) -> Workspace:
    """The workspace for a command that writes: created when missing."""
    return Workspace(resolve_home(arg)).ensure()


CREATE_HINT = "`voxtune data import` or `voxtune queue add` creates it"


def existing_workspace(arg: str | os.PathLike | None = None) -> Workspace | None:
    """The workspace for a read-only command, never created: None when there is none yet at
    the default place (or in an existing folder without a store). A folder named by --home or
    VOXTUNE_HOME that does not exist is a typo: VoxtuneError (exit 2)."""
    home = resolve_home(arg)
    check_home(home)
    if not home.exists():
        source = home_source(arg)
        if source != "default":
            raise VoxtuneError(f"no workspace at {home}: the folder does not exist", field="home",
                               file=home, hint=f"check {source}; {CREATE_HINT}")
        return None
    ws = Workspace(home)
    # a store that was lost while run folders remain is still a workspace: `runs ls` then names
    # the unindexed runs and `voxtune runs rebuild`
    return ws if ws.db_path.is_file() or ws.runs_dir.is_dir() else None
