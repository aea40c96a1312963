"""Helpers for the engine's tests: real daemons, real workers, real files.

`step_job` is a worker entry (engine.worker's VOXTUNE_WORKER_ENTRY hook) that behaves like
the training driver as the daemon sees it -- steps logged to metrics.jsonl, checkpoints
saved atomically and resumed from, cancel.request honoured, result.json written -- but
takes milliseconds instead of importing torch, so recovery tests can kill it many times.
Tests that need real training use TRAINING's tiny Whisper (tests/tiny_models.py).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable

import psutil

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from engine.runfiles import RunFiles, append_jsonl, atomic_write_json, read_json  # noqa: E402

STEP_ENTRY = "tests.engine_helpers:step_job"


def _last_checkpoint(files: RunFiles) -> int:
    steps = []
    for d in files.checkpoints.glob("checkpoint-*"):
        state = read_json(d / "state.json")
        if state is not None:
            steps.append(int(state["step"]))
    return max(steps, default=0)


def _save(files: RunFiles, step: int) -> None:
    ballast = int(os.environ.get("VOXTUNE_TEST_CKPT_BYTES") or 0)
    if ballast:  # like HF Trainer: weights straight into checkpoint-N/, the state file last
        final = files.checkpoints / f"checkpoint-{step}"
        final.mkdir(parents=True, exist_ok=True)
        with open(final / "model.safetensors", "wb") as f:
            for _ in range(0, ballast, 1 << 20):
                f.write(os.urandom(min(1 << 20, ballast)))
        atomic_write_json(final / "state.json", {"step": step})
        return
    tmp = files.checkpoints / f".tmp-checkpoint-{step}-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    atomic_write_json(tmp / "state.json", {"step": step})
    final = files.checkpoints / f"checkpoint-{step}"
    if final.exists():
        return
    os.replace(tmp, final)


def step_job(run_dir: str | Path) -> int:
    """Steps of VOXTUNE_TEST_STEP_S seconds; failure mode oom|crash|ignore-cancel from RUN_DIR/test_fail
    or VOXTUNE_TEST_FAIL."""
    files = RunFiles(Path(run_dir))
    cfg = read_json(files.config)
    step_s = float(os.environ.get("VOXTUNE_TEST_STEP_S", "0.05"))
    fail_file = files.root / "test_fail"  # per-run failure mode, written by a test after queueing
    fail = fail_file.read_text().strip() if fail_file.exists() else os.environ.get("VOXTUNE_TEST_FAIL", "")
    max_steps, save_every = int(cfg["max_steps"]), int(cfg["save_every"])
    start = _last_checkpoint(files) if cfg.get("resume_from_checkpoint") == "last" else 0
    append_jsonl(files.root / "attempts.jsonl", {"pid": os.getpid(), "start": start, "time": time.time()})
    t0 = time.time()
    for step in range(start + 1, max_steps + 1):
        if files.cancel_request.exists() and fail != "ignore-cancel":
            _save(files, step - 1)
            atomic_write_json(files.result, {"status": "cancelled", "reason": f"cancelled at step {step - 1}",
                                             "oom": False, "duration_s": time.time() - t0})
            return 0
        time.sleep(step_s)
        if fail == "oom" and step == 2:
            atomic_write_json(files.result, {"status": "failed", "reason": "CUDA out of memory", "oom": True,
                                             "oom_step": step, "peak_memory": {"device": "cuda:0", "allocated_gb": 11.2,
                                                                               "reserved_gb": 11.8, "rss_gb": 1.0}})
            return 1
        if fail == "crash" and step == 2:
            raise RuntimeError("boom: the recipe failed")
        if fail == "cpu-oom" and step == 2:  # the message torch's CPU allocator raises
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                               "you tried to allocate 8589934592 bytes. Error code 12 (Cannot allocate memory)")
        if fail == "enomem" and step == 2:
            raise OSError(12, "Cannot allocate memory")
        append_jsonl(files.metrics, {"kind": "train", "step": step, "max_steps": max_steps, "loss": 1.0 / step,
                                     "time": time.time()})
        if step % save_every == 0:
            _save(files, step)
    append_jsonl(files.metrics, {"kind": "eval", "step": max_steps, "max_steps": max_steps, "wer": 0.5,
                                 "cer": 0.2, "time": time.time()})
    atomic_write_json(files.result, {"status": "finished", "reason": None, "oom": False,
                                     # a simulated GPU peak, so the daemon's calibration path runs
                                     "peak_memory": {"device": "cuda", "allocated_gb": 0.1, "reserved_gb": 0.2, "rss_gb": 0.1},
                                     "metrics": {"wer": 0.5, "cer": 0.2}, "best": {"step": max_steps, "wer": 0.5},
                                     "duration_s": time.time() - t0})
    return 0


def use_step_job(monkeypatch, step_s: float = 0.05, fail: str = "") -> None:
    """Daemons started after this (and their workers) run `step_job`."""
    monkeypatch.setenv("VOXTUNE_WORKER_ENTRY", STEP_ENTRY)
    monkeypatch.setenv("VOXTUNE_TEST_STEP_S", str(step_s))
    monkeypatch.setenv("VOXTUNE_TEST_FAIL", fail)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))


def add_dataset(ws, name: str = "tiny") -> dict:
    """A dataset record with a manifest: what queue.add needs to accept a run."""
    from engine.store import Store

    manifest = Path(ws.dataset_dir(name)) / "manifest.jsonl"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"id": "c1", "audio": "/nonexistent.wav", "duration": 1.0, "text": "hi"}) + "\n")
    rec = {"name": name, "source": str(manifest.parent), "manifest": str(manifest), "manifest_hash": "h-" + name,
           "clips_total": 1, "clips_usable": 1, "hours": 0.0003, "problems": [],
           "splits": {"train": ["c1"], "validation": ["c1"], "test": []}, "pinned": ["c1"]}
    Store(ws).upsert_dataset(rec)
    return rec


def add_step_run(ws, max_steps: int = 20, save_every: int = 5, **options) -> str:
    from engine import queue

    options.setdefault("model", "whisper-small")
    options.setdefault("method", "lora")
    options.setdefault("dataset", "tiny")
    return queue.add(ws, max_steps=max_steps, save_every=save_every, eval_every=save_every, **options)


def wait_for(pred: Callable[[], object], timeout: float = 60.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def run_status(ws, run_id: str) -> str | None:
    from engine.store import Store

    run = Store(ws).get_run(run_id)
    return run["status"] if run else None


def wait_status(ws, run_id: str, statuses, timeout: float = 60.0) -> dict:
    from engine.store import Store

    statuses = (statuses,) if isinstance(statuses, str) else tuple(statuses)
    wait_for(lambda: run_status(ws, run_id) in statuses, timeout, what=f"{run_id} to become {'/'.join(statuses)}")
    return Store(ws).get_run(run_id)


def current_step(ws, run_id: str) -> int:
    from engine.runfiles import read_jsonl

    steps = [r["step"] for r in read_jsonl(RunFiles(ws.run_dir(run_id)).metrics) if r.get("kind") == "train"]
    return max(steps, default=0)


def daemon_pid(ws) -> int | None:
    from engine import daemon

    return daemon.status(ws)["pid"]


def kill9(pid: int | None) -> None:
    if not pid:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    try:
        psutil.Process(pid).wait(10)
    except (psutil.Error, psutil.TimeoutExpired):
        pass


def cleanup(ws) -> None:
    """Stop the daemon and any worker still running for this workspace (tests leave nothing behind)."""
    from engine import daemon
    from engine.store import Store
    from engine.worker import lock_holder

    try:
        daemon.stop(ws, timeout_s=20)
    except Exception:
        kill9(daemon_pid(ws))
    for run in Store(ws).list_runs():
        holder = lock_holder(ws.run_dir(run["id"]))
        for pid in {holder, run.get("pid")}:
            if pid and pid > 0:
                try:
                    proc = psutil.Process(pid)
                    if "engine.worker" in " ".join(proc.cmdline()):
                        kill9(pid)
                except psutil.Error:
                    pass
