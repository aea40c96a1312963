"""voxtune's state in one TinyDB file, safe across processes.

TinyDB's JSONStorage rewrites the file in place and knows nothing of other processes.
Here every write goes to a temp file that is fsynced and renamed over the old one, and
every read-modify-write runs under an exclusive fcntl lock on a sibling lock file, so a
reader never sees half a file and no acknowledged update is lost. Per-step data stays out
(runs/<id>/*.jsonl): this file holds records, not streams.
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
from engine.workspace import Workspace
from engine.errors import VoxtuneError

SCHEMA_VERSION = 2
STATUSES = ("queued", "running", "finished", "failed", "cancelled", "interrupted")
ACTIVE = ("running",)
FINAL = ("finished", "failed", "cancelled", "interrupted")


class StoreError(VoxtuneError):
    """The store cannot be read or written, or a run id is unknown."""


class AtomicJSONStorage(Storage):
    """TinyDB storage that replaces the file atomically on every write."""

    def __init__(self, path: str | os.PathLike, **_: Any) -> None:
        self.path = Path(path)

    def read(self) -> dict | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise StoreError(
                f"{self.path} is not valid JSON ({e}); restore it from {self.path}.bak-* "
                "or move it aside to start a fresh workspace state"
            ) from e

    def write(self, data: dict) -> None:
        atomic_write_text(self.path, json.dumps(data, separators=(",", ":"), default=str))

    def close(self) -> None:
        pass


def now() -> float:
    return time.time()


def _migrate_1_to_2(data: dict) -> dict:
    """v1 files had no measurements table and no per-status history on runs."""
    data.setdefault("measurements", {})
    for doc in data.get("runs", {}).values():
        doc.setdefault("history", [{"status": doc.get("status", "queued"), "time": doc.get("created_at", 0), "reason": None}])
    return data


MIGRATIONS: dict[int, Callable[[dict], dict]] = {1: _migrate_1_to_2}


class Store:
    """All TinyDB access goes through here. Cheap to construct; holds no open file."""

    def __init__(self, ws: Workspace | str | os.PathLike) -> None:
        path = ws.db_path if isinstance(ws, Workspace) else Path(ws)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._tlock = threading.RLock()
        self._depth = 0
        self._lock_fd: int | None = None
        self._migrate_if_needed()

    # -- locking ----------------------------------------------------------------------
    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive across processes and threads; re-entrant within one thread."""
        with self._tlock:
            if self._depth == 0:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._lock_fd = fd
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._lock_fd is not None:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                    os.close(self._lock_fd)
                    self._lock_fd = None

    def _db(self) -> TinyDB:
        return TinyDB(self.path, storage=AtomicJSONStorage)

    def _table(self, name: str):
        return self._db().table(name, cache_size=0)

    # -- schema -----------------------------------------------------------------------
    def _migrate_if_needed(self) -> None:
        with self.locked():
            storage = AtomicJSONStorage(self.path)
            data = storage.read()
            if data is None:
                storage.write({"_meta": {"1": {"key": "schema_version", "value": SCHEMA_VERSION}}})
                return
            meta = data.get("_meta", {})
            version = next((d["value"] for d in meta.values() if d.get("key") == "schema_version"), 1)
            if version == SCHEMA_VERSION:
                return
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} was written by a newer voxtune (schema {version} > {SCHEMA_VERSION}); upgrade voxtune"
                )
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
        docs = self._table("_meta").search(Query().key == key)
        return docs[0]["value"] if docs else default

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
            rec.setdefault("status", "queued")
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
        docs = self._table("runs").search(Query().id == run_id)
        return dict(docs[0]) if docs else None

    def require_run(self, run_id: str) -> dict:
        run = self.get_run(run_id)
        if run is None:
            ids = [r["id"] for r in self.list_runs()]
            near = [i for i in ids if run_id in i][:5]
            hint = f"; did you mean {', '.join(near)}?" if near else "; `voxtune runs ls` lists them"
            raise StoreError(f"no run {run_id!r}{hint}")
        return run

    def list_runs(self) -> list[dict]:
        return [dict(d) for d in self._table("runs").all()]

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
        if status == "running":
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
        docs = self._table("datasets").search(Query().name == name)
        return dict(docs[0]) if docs else None

    def list_datasets(self) -> list[dict]:
        return [dict(d) for d in self._table("datasets").all()]

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
        return [dict(d) for d in self._table("measurements").all()]
