"""Where voxtune keeps its state: one folder holding the TinyDB file, data/ and runs/."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine.errors import VoxtuneError, from_os_error

DB_NAME = "voxtune.json"


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
                d.mkdir(parents=True, exist_ok=True)
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


def resolve_home(arg: str | os.PathLike | None = None) -> Path:
    """--home beats VOXTUNE_HOME beats the current directory."""
    raw = arg or os.environ.get("VOXTUNE_HOME") or os.getcwd()
    return Path(raw).expanduser().resolve()


def open_workspace(arg: str | os.PathLike | None = None) -> Workspace:
    return Workspace(resolve_home(arg)).ensure()
