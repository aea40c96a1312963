"""Crash recovery with real processes: kill -9 the daemon and its worker mid-run (a tiny
Whisper really training), restart, resume; kill -9 a worker alone and the queue moves on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.engine_helpers import (add_dataset, add_step_run, cleanup, current_step, daemon_pid, kill9,  # noqa: E402
                                  use_step_job, wait_for, wait_status)

from engine import daemon, queue  # noqa: E402
from engine.runfiles import RunFiles, read_json, read_jsonl  # noqa: E402
from engine.store import Store  # noqa: E402
from engine.worker import lock_holder  # noqa: E402

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    from tests.tiny_models import make_tiny_whisper

    return make_tiny_whisper(tmp_path_factory.mktemp("models") / "tiny-whisper")


def test_kill_daemon_and_worker_mid_run_then_resume(ws, tiny_whisper, monkeypatch):
    from tests.tiny_models import make_tiny_dataset

    monkeypatch.delenv("VOXTUNE_WORKER_ENTRY", raising=False)
    make_tiny_dataset(ws, "tiny", n=4)
    rid = queue.add(ws, model=str(tiny_whisper), dataset="tiny", method="full", max_steps=6, save_every=2,
                    eval_every=6, batch_size=2, grad_accum=1, lr=1e-3, warmup_steps=0, max_new_tokens=8, seed=0)
    files = RunFiles(ws.run_dir(rid))
    try:
        daemon.start(ws)
        # Step 3's record comes after checkpoint-2 is complete and a whole step before checkpoint-4
        # starts: the kill lands mid-step, not mid-save (a kill mid-save is the driver's to survive).
        wait_for(lambda: current_step(ws, rid) >= 3, 240, interval=0.02, what="step 3")
        worker = Store(ws).get_run(rid)["pid"]
        kill9(daemon_pid(ws))
        kill9(worker)

        daemon.start(ws)
        run = wait_status(ws, rid, "interrupted", 30)
        assert "worker is gone" in run["status_reason"] and "runs resume" in run["status_reason"]
        # the daemon marks each run interrupted, then pauses the queue once for all of them
        wait_for(lambda: daemon.status(ws)["queue_paused"], 10, what="queue paused")
        assert rid in daemon.status(ws)["queue_paused_reason"]

        assert queue.resume(ws, rid) is True
        queue.unpause(ws)
        run = wait_status(ws, rid, ("finished", "failed", "interrupted"), 240)
        assert run["status"] == "finished", run["status_reason"]
        result = read_json(files.result)
        assert result["step"] == 6  # the same step count, continued from the last checkpoint
        log = files.log.read_text()
        assert "resuming from" in log and "checkpoint-" in log
        train_steps = [r["step"] for r in files.iter_metrics("train")]
        back = next(i for i in range(1, len(train_steps)) if train_steps[i] <= train_steps[i - 1])
        assert 3 <= train_steps[back] <= 5 and train_steps[-1] == 6  # restarted after a checkpoint, not at 0
        assert run["metrics"]["wer"] is not None and files.samples.exists()
    finally:
        cleanup(ws)


def test_worker_killed_alone_fails_with_the_signal_and_the_queue_moves_on(ws, monkeypatch):
    use_step_job(monkeypatch, step_s=0.1)
    add_dataset(ws)
    first = add_step_run(ws, max_steps=300)
    second = add_step_run(ws, max_steps=5)
    try:
        daemon.start(ws)
        wait_for(lambda: current_step(ws, first) >= 7, 30, what="the first run to pass checkpoint-5")
        kill9(Store(ws).get_run(first)["pid"])
        run = wait_status(ws, first, ("failed", "finished"), 30)
        assert run["status"] == "failed" and run["status_reason"].startswith("killed by SIGKILL")
        assert run["signal"] == "SIGKILL"
        # the daemon records the ending in the store first, then in the run's result.json
        result = RunFiles(ws.run_dir(first)).result
        wait_for(lambda: (read_json(result) or {}).get("signal") == "SIGKILL", 30, what="result.json's signal")
        assert wait_status(ws, second, ("finished", "failed"), 30)["status"] == "finished"
        assert daemon.status(ws)["queue_paused"] is False
        # a failed run resumes from its last checkpoint too
        assert queue.resume(ws, first) is True
        wait_status(ws, first, "running", 30)
        queue.cancel(ws, first)
        assert wait_status(ws, first, ("cancelled", "failed"), 30)["status"] == "cancelled"
        attempts = read_jsonl(ws.run_dir(first) / "attempts.jsonl")
        assert attempts[0]["start"] == 0 and attempts[1]["start"] >= 5
        assert lock_holder(ws.run_dir(first)) is None
    finally:
        cleanup(ws)
