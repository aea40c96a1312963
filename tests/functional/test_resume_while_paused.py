"""`voxtune runs resume ID` while the queue is paused after a crash starts that run at once
(pueue's `start`) and says the queue stays paused for the others (issue 12). Real daemon,
real worker (the step job of tests/engine_helpers.py)."""

from __future__ import annotations

import pytest

from engine import queue
from engine.store import Store
from tests.engine_helpers import add_dataset, add_step_run, cleanup, use_step_job, wait_status
from tui.cli import main

pytestmark = pytest.mark.functional


def test_resume_starts_the_run_while_the_queue_stays_paused(ws, monkeypatch, capsys):
    use_step_job(monkeypatch, step_s=0.02)
    add_dataset(ws)
    first = add_step_run(ws, max_steps=5)
    second = add_step_run(ws, max_steps=5)
    Store(ws).set_status(first, "interrupted", "worker is gone (the engine crashed)")
    queue.pause(ws, "paused after a crash: 1 run(s) interrupted")
    try:
        assert main(["--home", str(ws.home), "runs", "resume", first]) == 0
        out = capsys.readouterr().out
        assert out.count("\n") == 1 and first in out and "queue stays paused" in out and "voxtune queue resume" in out
        assert wait_status(ws, first, ("finished", "failed"), 60)["status"] == "finished"
        later = Store(ws).get_run(second)
        assert later["status"] == "queued" and "queue paused" in later["status_reason"]
        assert queue.is_paused(ws)[0]
    finally:
        cleanup(ws)
