"""Shared by the TUI shell's tests: real runs in a real workspace, and waiting on the UI.

Runs are made through engine.store (records) and engine.runfiles (metrics written as the
worker writes them), with fixed times so screens render the same on every machine.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from engine.runfiles import RunFiles, append_jsonl, atomic_write_json
from engine.store import Store
from engine.workspace import Workspace

T0 = 1764000000.0


def add_run(ws: Workspace, run_id: str, status: str = "queued", *, steps: int = 0, max_steps: int = 100,
            wer: float | None = None, best: float | None = None, step_s: float = 3.0, **fields) -> str:
    """A run record plus its folder; `steps` train records (and one eval when `wer` is given)."""
    store = Store(ws)
    model, method = fields.pop("model", "whisper-small"), fields.pop("method", "lora")
    rec = {"id": run_id, "model": model, "method": method, "dataset": fields.pop("dataset", "demo"),
           "status": status, "created_at": T0, "history": [{"status": status, "time": T0, "reason": None}]}
    if best is not None:
        rec["best"] = {"step": steps, "wer": best, "checkpoint": None}
    rec.update(fields)
    store.add_run(rec)
    files = RunFiles(ws.run_dir(run_id)).create()
    atomic_write_json(files.config, {"run_id": run_id, "model": model, "method": method, "dataset": rec["dataset"],
                                     "max_steps": max_steps, "batch_size": 2, "lr": 1e-3})
    for s in range(1, steps + 1):
        append_jsonl(files.metrics, {"kind": "train", "step": s, "max_steps": max_steps,
                                     "loss": round(2.0 - s * 0.01, 4), "time": T0 + s * step_s})
    if wer is not None and steps:
        append_jsonl(files.metrics, {"kind": "eval", "step": steps, "max_steps": max_steps, "wer": wer,
                                     "time": T0 + steps * step_s + 1})
    return run_id


def sample_workspace(ws: Workspace) -> Workspace:
    """One run of each kind the home screen distinguishes."""
    add_run(ws, "1125-0200-whisper-medium-qlora", "running", steps=40, wer=0.31, model="whisper-medium",
            method="qlora", started_at=T0)
    add_run(ws, "1125-0412-whisper-small-lora", "queued", status_reason="waiting: needs 9.8 GB, 7.1 GB free")
    add_run(ws, "1125-0413-whisper-small-full", "queued", method="full")
    add_run(ws, "1125-0300-whisper-small-full", "finished", steps=100, max_steps=100, wer=0.123, best=0.118,
            method="full", finished_at=T0 + 400)
    add_run(ws, "1125-0100-voxtral-mini-3b-qlora", "failed", steps=12, model="voxtral-mini-3b", method="qlora",
            status_reason="out of memory at step 12 (peak 11.6 GB)", finished_at=T0 + 100)
    return ws


async def wait_for(pilot, condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Let the app run until `condition()` holds; the UI's pollers work in threads."""
    from textual.css.query import NoMatches

    def holds() -> bool:
        try:
            return bool(condition())
        except NoMatches:  # the screen is still composing
            return False

    deadline = time.monotonic() + timeout
    while not holds():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await pilot.pause(0.05)
        await asyncio.sleep(0)
