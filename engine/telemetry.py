"""About once a second while a run is active: GPU memory and load, the worker's own GPU
memory where the driver exposes it, and the worker's CPU and RAM -- one JSON line each in
runs/<id>/telemetry.jsonl. The daemon keeps the peaks for the run record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from engine.runfiles import RunFiles, append_jsonl

GB = 1024**3


def _attr(obj: Any, *names: str) -> Any:
    for n in names:
        if isinstance(obj, dict) and n in obj:
            return obj[n]
        if hasattr(obj, n):
            return getattr(obj, n)
    return None


def gpu_summary(gpu: Any) -> dict | None:
    """A Gpu from engine.gpus.detect() as the telemetry schema's `gpu` object."""
    if gpu is None:
        return None
    used = _attr(gpu, "used_gb")
    total = _attr(gpu, "total_gb", "memory_gb")
    free = _attr(gpu, "free_gb")
    if used is None and total is not None and free is not None:
        used = total - free
    return {
        "name": _attr(gpu, "name"),
        "used_gb": round(used, 3) if used is not None else None,
        "total_gb": round(total, 3) if total is not None else None,
        "util_percent": _attr(gpu, "util_percent", "utilization"),
    }


def detect_gpus() -> list:
    """engine.gpus.detect(), or [] if it is unavailable or fails (telemetry must never stop a run)."""
    try:
        from engine import gpus

        return list(gpus.detect())
    except Exception:
        return []


def process_gpu_gb(pids: list[int]) -> float | None:
    try:
        from engine import gpus
    except Exception:
        return None
    total, seen = 0.0, False
    for pid in pids:
        try:
            v = gpus.process_gpu_memory_gb(pid)
        except Exception:
            v = None
        if v is not None:
            total += v
            seen = True
    return round(total, 3) if seen else None


@dataclass
class Sampler:
    """Samples one worker (and its children, e.g. data loader processes)."""

    files: RunFiles
    pid: int
    gpu_index: int | None = None
    peak_rss_gb: float = 0.0
    peak_proc_gpu_gb: float | None = None
    peak_gpu_used_gb: float | None = None
    _procs: dict = field(default_factory=dict)

    def _tree(self) -> list[psutil.Process]:
        try:
            root = self._procs.get(self.pid) or psutil.Process(self.pid)
            if not root.is_running() or root.status() == psutil.STATUS_ZOMBIE:
                return []
            # keep the Process objects (cpu_percent measures between calls), drop exited children
            procs = [root] + [self._procs.get(c.pid, c) for c in root.children(recursive=True)]
            self._procs = {p.pid: p for p in procs}
            return procs
        except psutil.Error:
            return []

    def sample(self, gpus: list | None = None) -> dict | None:
        procs = self._tree()
        if not procs:
            return None
        cpu = rss = 0.0
        for p in procs:
            try:
                cpu += p.cpu_percent(None)  # first call per process returns 0.0, then since last call
                rss += p.memory_info().rss
            except psutil.Error:
                continue
        vm = psutil.virtual_memory()
        if gpus is None:
            gpus = detect_gpus()
        gpu = None
        if gpus:
            mine = [g for g in gpus if _attr(g, "index") == self.gpu_index]
            gpu = gpu_summary(mine[0] if mine else gpus[0])
        proc_gpu = process_gpu_gb([p.pid for p in procs]) if gpus else None
        rec = {
            "time": time.time(),
            "gpu": gpu,
            "proc_gpu_gb": proc_gpu,
            "cpu_percent": round(cpu, 1),
            "rss_gb": round(rss / GB, 3),
            "ram_used_gb": round((vm.total - vm.available) / GB, 3),
            "ram_total_gb": round(vm.total / GB, 3),
        }
        self.peak_rss_gb = max(self.peak_rss_gb, rec["rss_gb"])
        if proc_gpu is not None:
            self.peak_proc_gpu_gb = max(self.peak_proc_gpu_gb or 0.0, proc_gpu)
        if gpu and gpu.get("used_gb") is not None:
            self.peak_gpu_used_gb = max(self.peak_gpu_used_gb or 0.0, gpu["used_gb"])
        append_jsonl(self.files.telemetry, rec)
        return rec

    def peaks(self) -> dict:
        return {"rss_gb": round(self.peak_rss_gb, 3), "proc_gpu_gb": self.peak_proc_gpu_gb,
                "gpu_used_gb": self.peak_gpu_used_gb}
