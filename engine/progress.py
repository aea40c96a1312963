"""Step, total, ETA, loss and WER of a run, from its metrics.jsonl -- cheap enough for a TUI tick.

Each file is read once: later calls read only the bytes appended since (by offset), so a
screen that polls every second costs a stat() and a few lines, even for long runs and
while the engine is down.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from engine.runfiles import RunFiles, read_jsonl_from

RATE_WINDOW = 20  # recent (time, step) points used for the ETA


@dataclass
class _State:
    offset: int = 0
    ident: tuple = ()
    step: int | None = None
    max_steps: int | None = None
    loss: float | None = None
    wer: float | None = None
    cer: float | None = None
    best_wer: float | None = None
    best_step: int | None = None
    last_eval: dict | None = None
    last_time: float | None = None
    points: list = field(default_factory=list)

    def feed(self, rec: dict) -> None:
        step = rec.get("step")
        if rec.get("max_steps"):
            self.max_steps = int(rec["max_steps"])
        t = rec.get("time")
        if step is not None:
            if self.step is not None and step < self.step:  # a resumed attempt restarted the clock
                self.points.clear()
            self.step = int(step)
            if t is not None:
                self.points.append((float(t), int(step)))
                del self.points[:-RATE_WINDOW]
        if t is not None:
            self.last_time = float(t)
        kind = rec.get("kind")
        if kind == "train" and rec.get("loss") is not None:
            self.loss = rec["loss"]
        elif kind == "eval":
            self.last_eval = rec
            if rec.get("wer") is not None:
                self.wer = rec["wer"]
                if self.best_wer is None or rec["wer"] < self.best_wer:
                    self.best_wer, self.best_step = rec["wer"], step
            self.cer = rec.get("cer", self.cer)


_cache: dict[Path, _State] = {}
_lock = threading.Lock()


def _eta(st: _State) -> float | None:
    if st.step is None or not st.max_steps or len(st.points) < 2:
        return None
    (t0, s0), (t1, s1) = st.points[0], st.points[-1]
    if s1 <= s0 or t1 <= t0:
        return None
    return max(0.0, (st.max_steps - st.step) * (t1 - t0) / (s1 - s0))


def read_progress(run_files: RunFiles) -> dict:
    """{step, max_steps, fraction, eta_s, loss, wer, cer, best_wer, best_step, last_eval, updated_at}."""
    path = run_files.metrics
    try:
        stt = os.stat(path)
        ident = (stt.st_ino, stt.st_dev)
        size = stt.st_size
    except FileNotFoundError:
        ident, size = (), 0
    with _lock:
        st = _cache.get(path)
        if st is None or st.ident != ident or size < st.offset:  # new or replaced file: start over
            st = _State(ident=ident)
            _cache[path] = st
        if size > st.offset:
            records, st.offset = read_jsonl_from(path, st.offset)
            for rec in records:
                st.feed(rec)
        frac = st.step / st.max_steps if st.step is not None and st.max_steps else None
        return {
            "step": st.step,
            "max_steps": st.max_steps,
            "fraction": min(1.0, frac) if frac is not None else None,
            "eta_s": _eta(st),
            "loss": st.loss,
            "wer": st.wer,
            "cer": st.cer,
            "best_wer": st.best_wer,
            "best_step": st.best_step,
            "last_eval": dict(st.last_eval) if st.last_eval else None,
            "updated_at": st.last_time,
        }
