"""One permissions policy (issue 13, item 10): everything voxtune writes in a workspace is its
user's only -- folders 0700, files 0600 (store, locks, manifests, logs, metrics, checkpoints),
whatever the user's umask; a lock file an older voxtune left 0644 is tightened."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from data_helpers import make_folder_dataset
from engine import daemon
from engine.store import Store
from engine.workspace import Workspace
from tests.engine_helpers import cleanup, use_step_job, wait_status

pytestmark = pytest.mark.functional


def loose(home: Path) -> list[str]:
    """Paths under `home` that group or others may read, write or enter."""
    out = []
    for root, dirs, files in os.walk(home):
        for name in dirs + files:
            p = Path(root) / name
            mode = p.lstat().st_mode
            if not stat.S_ISLNK(mode) and mode & 0o077:
                out.append(f"{oct(mode & 0o777)} {p.relative_to(home)}")
    return out


def test_workspace_is_0700_and_its_files_0600_under_a_lax_umask(tmp_path, monkeypatch):
    old = os.umask(0o022)
    try:
        home = tmp_path / "ws"
        src = make_folder_dataset(tmp_path / "clips", n=4, seconds=1.0)
        env = dict(os.environ)

        def cli(*args):
            cp = subprocess.run([sys.executable, "-m", "tui", "--home", str(home), *args], capture_output=True,
                                text=True, env=env, timeout=120)
            assert cp.returncode == 0, cp.stderr
            return cp

        cli("data", "import", str(src), "--name", "talks")
        use_step_job(monkeypatch, step_s=0.01)
        rid = cli("queue", "add", "--model", "whisper-small", "--dataset", "talks", "--method", "lora",
                  "--max-steps", "4", "--save-every", "2", "--no-start", "--json")
        ws = Workspace(home)
        run_id = Store(ws).list_runs()[0]["id"]
        (ws.engine_dir / "engine.lock").touch()
        os.chmod(ws.engine_dir / "engine.lock", 0o644)  # as an older voxtune left it
        try:
            daemon.start(ws)
            assert wait_status(ws, run_id, ("finished", "failed"), 60)["status"] == "finished"
        finally:
            cleanup(ws)
        assert rid.returncode == 0
        assert (ws.run_dir(run_id) / "checkpoints" / "checkpoint-2").exists()
        assert {"voxtune.json.lock", "engine.lock", ".worker.lock", "log.txt", "metrics.jsonl", "manifest.jsonl"} <= \
            {p.name for p in home.rglob("*")}
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        assert loose(home) == []
    finally:
        os.umask(old)
