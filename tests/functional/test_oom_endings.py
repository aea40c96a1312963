"""Out-of-memory endings through the real engine (issue 13, item 6): the CPU allocator's message
and ENOMEM are `oom` with a smaller-batch suggestion; a SIGKILL is the OOM killer's only when the
kernel's oom_kill count rose while the worker ran, otherwise plainly "killed by SIGKILL"."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from engine import daemon, faults
from engine.store import Store
from tests.engine_helpers import (add_dataset, add_step_run, cleanup, current_step, kill9, use_step_job, wait_for,
                                  wait_status)

pytestmark = pytest.mark.functional


def test_cpu_allocator_and_enomem_are_oom_with_a_smaller_batch(ws, monkeypatch):
    use_step_job(monkeypatch, step_s=0.01)
    add_dataset(ws)
    ids = {}
    for mode in ("cpu-oom", "enomem"):
        ids[mode] = add_step_run(ws, max_steps=5, batch_size=4)
        (ws.run_dir(ids[mode]) / "test_fail").write_text(mode)
    try:
        daemon.start(ws)
        for mode, rid in ids.items():
            run = wait_status(ws, rid, ("failed", "finished"), 60)
            assert run["status"] == "failed" and run["oom"] is True, (mode, run["status_reason"])
            assert run["status_reason"].startswith("out of memory"), run["status_reason"]
            assert f"voxtune runs clone {rid} --batch 2" in run["status_reason"]
    finally:
        cleanup(ws)


def test_a_worker_killed_by_hand_is_not_called_an_oom(ws, monkeypatch):
    use_step_job(monkeypatch, step_s=0.1)
    add_dataset(ws)
    rid = add_step_run(ws, max_steps=300)
    try:
        daemon.start(ws)
        wait_for(lambda: current_step(ws, rid) >= 2, 30, what="step 2")
        before = faults.oom_kill_count()
        kill9(Store(ws).get_run(rid)["pid"])
        run = wait_status(ws, rid, ("failed", "finished"), 30)
        if faults.oom_kill_count() != before:
            pytest.skip("the kernel OOM-killed something meanwhile")
        assert run["status_reason"] == "killed by SIGKILL" and run["oom"] is False
    finally:
        cleanup(ws)


def test_a_sigkill_after_an_oom_kill_event_is_oom(ws):
    """The engine read the counters at spawn (here: one kill fewer than now, as if the kernel
    had killed since); the worker is really SIGKILLed."""
    add_dataset(ws)
    rid = add_step_run(ws, max_steps=10, batch_size=4)
    now = faults.oom_kill_count()
    if now is None:
        pytest.skip("no oom_kill counter readable here")
    d = daemon.Daemon(ws)
    Store(ws).set_status(rid, "running", device="cpu")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    d.children[rid] = child
    d.oom_base[rid] = now - 1
    child.send_signal(signal.SIGKILL)
    child.wait()
    d.reap()
    run = Store(ws).get_run(rid)
    assert run["status"] == "failed" and run["oom"] is True and run["signal"] == "SIGKILL"
    assert run["status_reason"].startswith("out of memory") and "out-of-memory killer sent SIGKILL" in run["status_reason"]
    assert "voxtune runs clone" in run["status_reason"]
