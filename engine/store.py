"""voxtune's state in one TinyDB file, safe across processes.

TinyDB's JSONStorage rewrites the file in place and knows nothing of other processes.
Here every write goes to a temp file that is fsynced and renamed over the old one, and
every read-modify-write runs under an exclusive fcntl lock on a sibling lock file, so a
reader never sees half a file and no acknowledged update is lost. Per-step data stays out
(runs/<id>/*.jsonl): this file holds records, not streams.

Reads take no lock (a rename is atomic) and are cached per process on the file's (inode,
size, mtime): a screen's poll that asks the store seven things parses the file at most once,
and only when it changed. So a read-only command works in a read-only workspace, and never
creates anything: the file and its lock appear with the first write.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from tinydb import Query, TinyDB
from tinydb.storages import Storage

from engine.runfiles import atomic_write_text
from engine.workspace import Workspace, open_private
from engine.errors import VoxtuneError
from engine.enums import FINAL, RunStatus

SCHEMA_VERSION = 2
STATUSES = RunStatus.values()
# Rotating backups: before a write, if the newest voxtune.json.bak-<YYYYmmdd-HHMMSS> is older than
# BACKUP_EVERY_S, the current (readable) file is hard-linked under that name; the newest BACKUP_KEEP stay.
# A write replaces the file by rename, so the linked inode is never changed again: a snapshot for free.
BACKUP_EVERY_S = float(os.environ.get("VOXTUNE_STORE_BACKUP_S", "600"))
BACKUP_KEEP = 10
_BACKUP_RE = re.compile(r"\.bak-(\d{8}-\d{6})$")


class StoreError(VoxtuneError):
    """The store cannot be read or written, or a run id is unknown."""


TABLES = ("runs", "datasets", "measurements", "_meta")


def backups(path: Path) -> list[Path]:
    """The rotating backups of the store at `path`, oldest first."""
    found = [p for p in Path(path).parent.glob(Path(path).name + ".bak-*") if _BACKUP_RE.search(p.name)]
    return sorted(found, key=lambda p: p.name)


def damage_hint(path: Path) -> str:
    """What to do about a damaged store: the newest backup by name, and `voxtune runs rebuild`."""
    baks = backups(path)
    restore = f"copy {baks[-1].name} over it" if baks else f"restore it from a backup ({path.name}.bak-*)"
    return f"{restore}, or run `voxtune runs rebuild` to index the runs found in runs/*/ again (it keeps this file aside)"


def _check_shape(data: Any, path: Path) -> dict:
    """The parsed file must be TinyDB's layout: {table: {doc_id: {...}}}. Anything else (a list,
    a table that is not an object) is damage to report, never to write over."""
    hint = damage_hint(path)
    if not isinstance(data, dict):
        raise StoreError(f"{path} is not a voxtune store (expected a JSON object, found {type(data).__name__})",
                         file=path, hint=hint)
    for table, docs in data.items():
        if not isinstance(docs, dict) or not all(isinstance(d, dict) for d in docs.values()):
            raise StoreError(f"{path}: table {table!r} is damaged (expected objects by id)", file=path, hint=hint)
    return data


class AtomicJSONStorage(Storage):
    """TinyDB storage that replaces the file atomically on every write."""

    def __init__(self, path: str | os.PathLike, **_: Any) -> None:
        self.path = Path(path)

    def read(self) -> dict | None:
        """The parsed file; None only when it does not exist. An empty, `null` or malformed file
        raises StoreError: it is damage, and starting a fresh store over it would hide every run."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            raise StoreError(f"{self.path} is a folder, not voxtune's store file", file=self.path,
                             hint="use another workspace (--home DIR)") from None
        hint = damage_hint(self.path)
        if not text.strip():
            raise StoreError(f"{self.path} is empty (it should hold voxtune's runs)", file=self.path, hint=hint)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise StoreError(f"{self.path} is not valid JSON ({e})", file=self.path, hint=hint) from e
        if data is None:
            raise StoreError(f"{self.path} holds null (it should hold voxtune's runs)", file=self.path, hint=hint)
        return _check_shape(data, self.path)

    def write(self, data: dict) -> None:
        atomic_write_text(self.path, json.dumps(data, separators=(",", ":"), default=str))

    def close(self) -> None:
        pass


# path -> ((inode, size, mtime_ns), parsed file): see the module docstring.
_CACHE: dict[str, tuple[tuple[int, int, int], dict]] = {}
_CACHE_LOCK = threading.Lock()


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def now() -> float:
    return time.time()


def _migrate_1_to_2(data: dict) -> dict:
    """v1 files had no measurements table and no per-status history on runs."""
    data.setdefault("measurements", {})
    for doc in data.get("runs", {}).values():
        doc.setdefault("history", [{"status": doc.get("status", RunStatus.QUEUED), "time": doc.get("created_at", 0), "reason": None}])
    return data


MIGRATIONS: dict[int, Callable[[dict], dict]] = {1: _migrate_1_to_2}


class Store:
    """All TinyDB access goes through here. Cheap to construct; holds no open file."""

    def __init__(self, ws: Workspace | str | os.PathLike) -> None:
        path = ws.db_path if isinstance(ws, Workspace) else Path(ws)
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._tlock = threading.RLock()
        self._depth = 0
        self._lock_fd: int | None = None
        self._migrate_if_needed()

    # -- reading (no lock, cached) --------------------------------------------------------
    def _data(self) -> dict:
        """The whole file, parsed at most once per change (stat first: content read after a
        stat is at least as new as the stat, so the cache is never stale)."""
        stamp = _stamp(self.path)
        if stamp is None:
            return {}
        key = str(self.path)
        hit = _CACHE.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        with _CACHE_LOCK:  # two threads asking at once (a screen's poll, a warm-up) parse once
            hit = _CACHE.get(key)
            if hit is not None and hit[0] == stamp:
                return hit[1]
            data = AtomicJSONStorage(self.path).read() or {}
            _CACHE[key] = (stamp, data)
        return data

    def stamp(self) -> tuple[int, int, int] | None:
        """(inode, size, mtime_ns) of the store file: changes with every write (None: no file).
        Callers that derive data from the runs cache it under this key."""
        return _stamp(self.path)

    def _docs(self, table: str) -> list[dict]:
        """Copies of a table's documents (top level copied; nested values are shared: don't
        mutate them)."""
        return [dict(d) for d in self._data().get(table, {}).values()]

    # -- locking ----------------------------------------------------------------------
    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive across processes and threads; re-entrant within one thread. For writes:
        it creates the workspace folder, the lock file and (first write) the store file."""
        with self._tlock:
            if self._depth == 0:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = open_private(self.lock_path)
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._lock_fd = fd
                try:
                    if not self.path.exists():
                        AtomicJSONStorage(self.path).write(
                            {"_meta": {"1": {"key": "schema_version", "value": SCHEMA_VERSION}}})
                    else:
                        self._backup_if_due()
                except BaseException:
                    self._unlock()
                    raise
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._unlock()

    def _backup_if_due(self, force: bool = False) -> Path | None:
        """Under the lock: hard-link the current file as voxtune.json.bak-<time> when the newest
        backup is older than BACKUP_EVERY_S (or `force`), and drop all but the newest BACKUP_KEEP.
        Only a readable file is backed up (a damaged one raises StoreError here, as the write
        that follows would). A backup that cannot be made never blocks the write."""
        self._data()  # StoreError if damaged: never rotate good backups out for a bad one
        baks = backups(self.path)
        t = now()
        if baks and not force:
            stamp = _BACKUP_RE.search(baks[-1].name).group(1)
            try:
                if t - time.mktime(time.strptime(stamp, "%Y%m%d-%H%M%S")) < BACKUP_EVERY_S:
                    return None
            except ValueError:
                pass
        dest = self.path.with_name(f"{self.path.name}.bak-{time.strftime('%Y%m%d-%H%M%S', time.localtime(t))}")
        try:
            if not dest.exists():
                try:
                    os.link(self.path, dest)
                except OSError:  # no hard links here (some network/FUSE file systems): copy
                    atomic_write_text(dest, self.path.read_text(encoding="utf-8"))
            for old in backups(self.path)[:-BACKUP_KEEP]:
                old.unlink(missing_ok=True)
        except OSError:
            return None
        return dest

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _db(self) -> TinyDB:
        return TinyDB(self.path, storage=AtomicJSONStorage)

    def _table(self, name: str):
        return self._db().table(name, cache_size=0)

    # -- schema -----------------------------------------------------------------------
    @staticmethod
    def _version(data: dict) -> int:
        meta = data.get("_meta", {})
        return next((d.get("value") for d in meta.values() if d.get("key") == "schema_version"), 1)

    def _migrate_if_needed(self) -> None:
        """Upgrade an older file in place (keeping a copy); refuse a newer one. A missing file
        stays missing until the first write; a current one is only read."""
        data = self._data()
        if not data:
            return
        version = self._version(data)
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written by a newer voxtune (schema {version} > {SCHEMA_VERSION})",
                             file=self.path, hint="upgrade voxtune (pip install -U voxtune) to use this workspace")
        with self.locked():
            storage = AtomicJSONStorage(self.path)
            data = storage.read() or {}
            version = self._version(data)
            if version >= SCHEMA_VERSION:  # another process migrated it meanwhile
                return
            shutil.copy2(self.path, self.path.with_name(f"{self.path.name}.bak-v{version}"))
            while version < SCHEMA_VERSION:
                data = MIGRATIONS[version](data)
                version += 1
            meta = {k: v for k, v in data.get("_meta", {}).items() if v.get("key") != "schema_version"}
            meta[str(max([int(k) for k in meta] + [0]) + 1)] = {"key": "schema_version", "value": SCHEMA_VERSION}
            data["_meta"] = meta
            storage.write(data)

    @property
    def schema_version(self) -> int:
        return self.get_meta("schema_version", 1)

    # -- meta (queue_paused and friends) ------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        for doc in self._data().get("_meta", {}).values():
            if doc.get("key") == key:
                return doc.get("value")
        return default

    def set_meta(self, key: str, value: Any) -> None:
        with self.locked():
            self._table("_meta").upsert({"key": key, "value": value}, Query().key == key)

    # -- runs -------------------------------------------------------------------------
    def new_run_id(self, model: str, method: str, when: float | None = None) -> str:
        """Short, sortable, unique: 1125-0412-whisper-small-lora (-2, -3 on collision)."""
        stamp = datetime.fromtimestamp(when or now()).strftime("%m%d-%H%M")
        slug = re.sub(r"[^a-z0-9.]+", "-", f"{model}-{method}".lower()).strip("-")
        base = f"{stamp}-{slug}"
        taken = {r["id"] for r in self.list_runs()}
        runs_dir = self.path.parent / "runs"
        trash = self.path.parent / ".voxtune" / "trash"  # removed runs' folders: ids are never reused
        n, candidate = 1, base
        while candidate in taken or (runs_dir / candidate).exists() or (trash / candidate).exists():
            n += 1
            candidate = f"{base}-{n}"
        return candidate

    def add_run(self, record: dict) -> str:
        """Insert a run; assigns `id`, `seq`, `created_at`, status history. Returns the id."""
        with self.locked():
            rec = dict(record)
            rec.setdefault("id", self.new_run_id(rec.get("model", "run"), rec.get("method", "")))
            if self.get_run(rec["id"]) is not None:
                raise StoreError(f"run {rec['id']} already exists")
            t = now()
            rec.setdefault("created_at", t)
            rec.setdefault("status", RunStatus.QUEUED)
            rec.setdefault("status_reason", None)
            rec.setdefault("priority", 0)
            rec["seq"] = self._next_seq()
            rec.setdefault("history", [{"status": rec["status"], "time": t, "reason": rec["status_reason"]}])
            self._table("runs").insert(rec)
            return rec["id"]

    def _next_seq(self) -> int:
        seq = self.get_meta("run_seq", 0) + 1
        self.set_meta("run_seq", seq)
        return seq

    def get_run(self, run_id: str) -> dict | None:
        for doc in self._data().get("runs", {}).values():
            if doc.get("id") == run_id:
                return dict(doc)
        return None

    def require_run(self, run_id: str) -> dict:
        run = self.get_run(run_id)
        if run is None:
            ids = [r["id"] for r in self.list_runs()]
            near = [i for i in ids if run_id in i][:5]
            hint = f"; did you mean {', '.join(near)}?" if near else "; `voxtune runs ls` lists them"
            raise StoreError(f"no run {run_id!r}{hint}")
        return run

    def resolve_run_id(self, ref: str) -> str:
        """The full id of the run `ref` names: the id itself or any unique prefix of one, as
        git takes commit prefixes. StoreError (one line) when none matches, or when several do
        (listing them)."""
        ids = [r["id"] for r in self.list_runs()]
        if ref in ids:
            return ref
        matches = sorted(i for i in ids if i.startswith(ref)) if ref else []
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            more = f" and {len(matches) - 8} more" if len(matches) > 8 else ""
            raise StoreError(f"run id {ref!r} is ambiguous: {', '.join(matches[:8])}{more}; give more of it")
        return self.require_run(ref)["id"]  # raises, with the closest ids

    def list_runs(self) -> list[dict]:
        return self._docs("runs")

    def update_run(self, run_id: str, _change: Callable[[dict], None] | None = None, **fields: Any) -> dict:
        """Set fields (and/or apply `_change` to the record) in one read and one write."""
        with self.locked():
            out: dict = {}

            def apply(doc: dict) -> None:
                if _change is not None:
                    _change(doc)
                doc.update(fields)
                out.update(doc)

            if not self._table("runs").update(apply, Query().id == run_id):
                self.require_run(run_id)  # raises with close matches
            return out

    def set_status(self, run_id: str, status: str, reason: str | None = None, **fields: Any) -> dict:
        """Change status, recording the time and a one-line reason in the run's history."""
        if status not in STATUSES:
            raise StoreError(f"unknown status {status!r}")
        t = now()
        extra: dict[str, Any] = {"status": status, "status_reason": reason}
        if status == RunStatus.RUNNING:
            extra["started_at"] = t
        if status in FINAL:
            extra["finished_at"] = t

        def record(doc: dict) -> None:
            doc["history"] = list(doc.get("history", [])) + [{"status": status, "time": t, "reason": reason}]

        return self.update_run(run_id, record, **extra, **fields)

    def remove_run(self, run_id: str) -> None:
        with self.locked():
            self._table("runs").remove(Query().id == run_id)

    # -- datasets ---------------------------------------------------------------------
    def upsert_dataset(self, record: dict) -> None:
        with self.locked():
            self._table("datasets").upsert(record, Query().name == record["name"])

    def get_dataset(self, name: str) -> dict | None:
        for doc in self._data().get("datasets", {}).values():
            if doc.get("name") == name:
                return dict(doc)
        return None

    def list_datasets(self) -> list[dict]:
        return self._docs("datasets")

    def remove_dataset(self, name: str) -> None:
        with self.locked():
            self._table("datasets").remove(Query().name == name)

    # -- memory measurements (calibration points for the estimator) -------------------
    def add_measurement(self, record: dict) -> None:
        with self.locked():
            rec = dict(record)
            rec.setdefault("time", now())
            self._table("measurements").insert(rec)

    def list_measurements(self) -> list[dict]:
        return self._docs("measurements")
