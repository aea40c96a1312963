"""A hostile `engine/` folder in the caller's folder, the workspace and a run folder is never
imported by the detached engine or its workers (issue 13, item 2): voxtune's own code runs."""

from __future__ import annotations

import pytest

from engine import daemon
from tests.engine_helpers import add_dataset, add_step_run, cleanup, use_step_job, wait_status
from tests.hostile import plant

pytestmark = pytest.mark.functional


def test_engine_and_worker_ignore_hostile_engine_folders(ws, tmp_path, monkeypatch):
    marker = tmp_path / "HIJACKED"
    use_step_job(monkeypatch, step_s=0.01)
    add_dataset(ws)
    rid = add_step_run(ws, max_steps=4, save_every=2)
    for folder in (tmp_path / "cwd", ws.home, ws.run_dir(rid)):
        plant(folder, marker)
    monkeypatch.chdir(tmp_path / "cwd")
    try:
        daemon.start(ws)
        run = wait_status(ws, rid, ("finished", "failed"), 60)
        assert run["status"] == "finished", run["status_reason"]
    finally:
        cleanup(ws)
    assert not marker.exists(), marker.read_text()
