"""The files a run owns under runs/<id>/, and safe ways to write and tail them.

Per-step data lives here, never in TinyDB: append-only JSON Lines that any reader can
follow by byte offset, even while the engine is down (the pueue/toolong approach).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, fsync, rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default


def append_jsonl(path: Path, record: dict) -> None:
    """One line per record, written with a single write() so concurrent tailers see whole lines."""
    line = json.dumps(record, default=str, ensure_ascii=False) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()


def read_jsonl(path: Path) -> list[dict]:
    records, _ = read_jsonl_from(path, 0)
    return records


def read_jsonl_from(path: Path, offset: int = 0, max_bytes: int | None = None) -> tuple[list[dict], int]:
    """Complete records after byte `offset`, and the offset to continue from.

    A trailing partial line (a writer mid-append, or a crash) is left for the next call;
    a corrupt complete line is skipped rather than breaking every reader.
    """
    chunk, new_offset = read_lines_from(path, offset, max_bytes)
    out = []
    for line in chunk:
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out, new_offset


def read_lines_from(path: Path, offset: int = 0, max_bytes: int | None = None) -> tuple[list[str], int]:
    """Whole text lines after byte `offset` (at most ~max_bytes), and where to continue."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read() if max_bytes is None else f.read(max_bytes)
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    data = data[: end + 1]
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines, offset + len(data)


def tail_lines(path: Path, n: int = 200, block: int = 64 * 1024) -> tuple[list[str], int]:
    """The last `n` lines without reading the whole file; returns them and the file size."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return [], 0
    with open(path, "rb") as f:
        pos, data = size, b""
        while pos > 0 and data.count(b"\n") <= n:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines[-n:], size


@dataclass(frozen=True)
class RunFiles:
    """Names of everything inside runs/<id>/ (see docs/ARCHITECTURE.md for the schemas)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def log(self) -> Path:
        return self.root / "log.txt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def samples(self) -> Path:
        return self.root / "samples.jsonl"

    @property
    def clips(self) -> Path:
        """Every clip's prediction and WER at every evaluation (engine.clips)."""
        return self.root / "clips.jsonl"

    @property
    def telemetry(self) -> Path:
        return self.root / "telemetry.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def result(self) -> Path:
        return self.root / "result.json"

    @property
    def cancel_request(self) -> Path:
        """Created by the daemon to ask the worker to checkpoint and stop."""
        return self.root / "cancel.request"

    def create(self) -> "RunFiles":
        self.root.mkdir(mode=0o700, parents=True, exist_ok=False)  # never reused; the user's only
        self.checkpoints.mkdir(mode=0o700)
        return self

    def iter_metrics(self, kind: str | None = None) -> Iterator[dict]:
        for rec in read_jsonl(self.metrics):
            if kind is None or rec.get("kind") == kind:
                yield rec
