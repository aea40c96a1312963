"""`voxtune runs rebuild`: a new run index from the run folders, when the store is lost.

The store (voxtune.json) is an index: every run's configuration and ending also live in its
own folder (runs/<id>/config.json, result.json, metrics.jsonl, checkpoints/). When the store
is damaged (empty, `null`, torn by a full disk) or deleted, this reads those files back into a
fresh store, so no run is forgotten. It never overwrites anything without keeping it: a damaged
store is renamed to voxtune.json.corrupt-<time>, a readable one (only with --force) stays as a
voxtune.json.bak-<time> backup. Datasets come from the newest readable backup, or else from
data/<name>/manifest.jsonl with splits drawn again (seed 0; the report says so).

Status from the files: result.json's status when there is one; a live worker holding the
run's lock -> running (the engine re-adopts it); steps or checkpoints but no result ->
interrupted (resumable); nothing at all -> queued. The queue is paused when any run comes
back queued, so nothing starts before the user has looked.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from engine.enums import RunStatus
from engine.errors import VoxtuneError
from engine.runfiles import RunFiles, atomic_write_text, read_json, read_jsonl
from engine.store import SCHEMA_VERSION, AtomicJSONStorage, StoreError, backups
from engine.workspace import Workspace

ENDED = (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.CANCELLED)


class RebuildError(VoxtuneError):
    """The index cannot be rebuilt now (a readable store without --force, a running engine)."""


@contextmanager
def _store_lock(db: Path) -> Iterator[None]:
    """The store's own writer lock (engine.store.Store.locked uses the same file)."""
    db.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(db.with_name(db.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _readable(path: Path) -> dict | None:
    """The parsed store at `path` if it is a readable, current-or-older voxtune store, else None."""
    try:
        data = AtomicJSONStorage(path).read()
    except (StoreError, OSError, UnicodeDecodeError):
        return None
    return data


def _run_record(files: RunFiles, seq_hint: float) -> tuple[dict | None, str | None]:
    """(record, None) for a run folder, or (None, why it was skipped)."""
    from engine.worker import lock_holder

    try:
        cfg = read_json(files.config, None)
    except (ValueError, OSError) as e:
        return None, f"config.json unreadable ({e})"
    if not isinstance(cfg, dict):
        return None, "no config.json"
    try:
        result = read_json(files.result, None)
    except (ValueError, OSError):
        result = None
    result = result if isinstance(result, dict) else {}
    metrics = read_jsonl(files.metrics)
    steps = [m["step"] for m in metrics if m.get("kind") == "train" and isinstance(m.get("step"), int)]
    evals = [m for m in metrics if m.get("kind") == "eval"]
    has_ckpt = any(files.checkpoints.glob("checkpoint-*"))
    try:
        created = min([files.config.stat().st_mtime] + [m["time"] for m in metrics[:1] if isinstance(m.get("time"), (int, float))])
    except OSError:
        created = seq_hint
    holder = lock_holder(files.root)
    fields: dict = {}
    if result.get("status") in ENDED:
        status, reason = result["status"], result.get("reason")
    elif holder:
        status, reason = RunStatus.RUNNING, "rebuilt from its folder; the engine follows the live worker"
        fields.update(pid=holder if holder > 0 else None, started_at=time.time())
    elif steps or has_ckpt or evals or files.log.exists():
        at = f" at step {max(steps)}" if steps else ""
        status = RunStatus.INTERRUPTED
        reason = f"interrupted{at} (rebuilt from its folder, no result.json); `voxtune runs resume {files.root.name}` continues it"
    else:
        status, reason = RunStatus.QUEUED, "rebuilt from its folder (never started)"
    t = time.time()
    record = {
        "id": files.root.name, "priority": cfg.get("priority") or 0, "model": cfg.get("model"),
        "method": cfg.get("method"), "dataset": cfg.get("dataset"), "eval_only": bool(cfg.get("eval_only")),
        "split": cfg.get("split"), "status": status, "status_reason": reason,
        "estimate_gb": cfg.get("estimate_gb"), "gpus": cfg.get("gpus", 1), "estimate_devices": cfg.get("estimate_devices"),
        "cancel_requested": False, "resume": False, "pid": None, "pid_create_time": None, "created_at": created,
        "history": [{"status": status, "time": t, "reason": "rebuilt by `voxtune runs rebuild`"}],
        "peak_memory": result.get("peak_memory"), "metrics": result.get("metrics") or (evals[-1] if evals else None),
        "best": result.get("best"), "oom": bool(result.get("oom")), "exit_code": result.get("exit_code"),
        "signal": result.get("signal"), "rebuilt": True,
    }
    if status in ENDED:
        record["finished_at"] = files.result.stat().st_mtime
    record.update(fields)
    return record, None


def _datasets_from_manifests(ws: Workspace, have: set[str]) -> tuple[list[dict], list[str]]:
    """Dataset records for data/<name>/manifest.jsonl not in `have`; splits drawn again (seed 0)."""
    from engine import datasets

    out, notes = [], []
    for manifest in sorted(ws.data_dir.glob("*/manifest.jsonl")):
        name = manifest.parent.name
        if name in have:
            continue
        try:
            text = manifest.read_text(encoding="utf-8")
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except (OSError, ValueError) as e:
            notes.append(f"dataset {name}: manifest unreadable ({e}); import it again")
            continue
        ids = [r["id"] for r in rows if isinstance(r, dict) and "id" in r]
        splits = datasets.make_splits(ids, datasets.DEFAULT_SEED, datasets.DEFAULT_SPLIT)
        out.append({
            "name": name, "source": None, "layout": "manifest", "manifest": str(manifest),
            "manifest_hash": hashlib.sha256(text.encode("utf-8")).hexdigest(), "clips_total": len(ids),
            "clips_usable": len(ids), "hours": round(sum(float(r.get("duration") or 0) for r in rows) / 3600, 4),
            "problems": [], "notes": [], "splits": splits, "split_seed": datasets.DEFAULT_SEED,
            "split_spec": datasets.DEFAULT_SPLIT, "pinned": datasets.default_pinned(splits),
            "imported_at": manifest.stat().st_mtime, "updated_at": time.time(),
        })
        notes.append(f"dataset {name}: splits drawn again (seed {datasets.DEFAULT_SEED}); "
                     "`voxtune data split` sets them if they differed")
    return out, notes


def rebuild(ws: Workspace, force: bool = False) -> dict:
    """Write a fresh store from runs/*/ (and datasets from a backup or data/*/). Returns a report:
    {runs: {status: count}, restored: [ids], skipped: [{folder, reason}], datasets: [names],
    notes: [str], kept: path of the previous store kept aside or None, paused: bool}.
    Raises RebuildError when the engine runs, or the store is readable and `force` is False."""
    from engine import daemon

    ws = ws.ensure()
    if daemon.engine_pid(ws) is not None:
        raise RebuildError("the engine is running", hint="stop it first: `voxtune engine stop`")
    db = ws.db_path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with _store_lock(db):
        kept = None
        current = _readable(db) if db.exists() else None
        if db.exists():
            if current is not None and not force:
                n = len(current.get("runs", {}))
                raise RebuildError(f"{db} is readable ({n} runs); rebuilding would replace it", file=db,
                                   hint="`voxtune runs rebuild --force` rebuilds anyway (this file is kept as a backup)")
            kept = db.with_name(f"{db.name}.bak-{stamp}" if current is not None else f"{db.name}.corrupt-{stamp}")
            os.replace(db, kept)
        source = current
        if source is None:  # the newest readable backup keeps datasets, measurements and settings
            for bak in reversed(backups(db)):
                source = _readable(bak)
                if source is not None:
                    break
        source = source or {}
        restored, skipped = [], []
        runs: dict[str, dict] = {}
        folders = sorted(p for p in ws.runs_dir.iterdir() if p.is_dir()) if ws.runs_dir.exists() else []
        for i, folder in enumerate(folders):
            rec, why = _run_record(RunFiles(folder), float(i))
            if rec is None:
                skipped.append({"folder": str(folder), "reason": why})
                continue
            restored.append(rec)
        restored.sort(key=lambda r: (r["created_at"], r["id"]))
        for seq, rec in enumerate(restored, 1):
            rec["seq"] = seq
            runs[str(seq)] = rec
        ds_docs = {k: v for k, v in (source.get("datasets") or {}).items() if isinstance(v, dict) and v.get("name")}
        extra, notes = _datasets_from_manifests(ws, {d["name"] for d in ds_docs.values()})
        for rec in extra:
            ds_docs[str(max([int(k) for k in ds_docs if k.isdigit()] + [0]) + 1)] = rec
        queued = [r["id"] for r in restored if r["status"] == RunStatus.QUEUED]
        meta = [{"key": "schema_version", "value": SCHEMA_VERSION}, {"key": "run_seq", "value": len(restored)}]
        for doc in (source.get("_meta") or {}).values():
            if doc.get("key") not in ("schema_version", "run_seq", "queue_paused", "queue_paused_reason"):
                meta.append(doc)
        paused = bool(queued)
        meta += [{"key": "queue_paused", "value": paused},
                 {"key": "queue_paused_reason",
                  "value": f"run index rebuilt from runs/*/ with {len(queued)} queued run(s); check `voxtune runs ls`, "
                           "then `voxtune queue resume`" if paused else None}]
        data = {"_meta": {str(i): doc for i, doc in enumerate(meta, 1)}, "runs": runs, "datasets": ds_docs,
                "measurements": dict(source.get("measurements") or {})}
        atomic_write_text(db, json.dumps(data, separators=(",", ":"), default=str))
        os.chmod(db, 0o600)
    counts: dict[str, int] = {}
    for r in restored:
        counts[str(r["status"])] = counts.get(str(r["status"]), 0) + 1
    return {"runs": counts, "restored": [r["id"] for r in restored], "skipped": skipped,
            "datasets": sorted(d["name"] for d in ds_docs.values()), "notes": notes,
            "kept": str(kept) if kept else None, "paused": paused}
