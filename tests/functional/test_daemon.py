"""The daemon as a real detached process: outlives its parent and its terminal, one per
workspace, records every way a worker can end (finished, crash, OOM, signal, cancel)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.engine_helpers import (REPO, add_dataset, add_step_run, cleanup, use_step_job, wait_for,  # noqa: E402
                                  wait_status)

from engine import daemon, queue  # noqa: E402
from engine.runfiles import RunFiles, read_json, read_jsonl  # noqa: E402
from engine.store import Store  # noqa: E402

pytestmark = pytest.mark.functional
VOXTUNE = Path(sys.executable).parent / "voxtune"  # the installed console script


@pytest.fixture
def dws(ws, monkeypatch):
    use_step_job(monkeypatch, step_s=0.05)
    add_dataset(ws)
    yield ws
    cleanup(ws)


def test_daemon_outlives_the_process_that_started_it(dws):
    rid = add_step_run(dws, max_steps=10)
    code = f"from engine import daemon; from engine.workspace import open_workspace; print(daemon.start(open_workspace({str(dws.home)!r})))"
    parent = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert parent.returncode == 0, parent.stderr
    pid = int(parent.stdout.strip())
    assert psutil.pid_exists(pid) and os.getsid(pid) == pid  # its own session: no terminal's SIGHUP reaches it
    run = wait_status(dws, rid, "finished", 60)
    assert run["exit_code"] == 0 and run["metrics"]["wer"] == 0.5
    assert daemon.status(dws)["pid"] == pid


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed")
def test_daemon_and_run_survive_a_killed_tmux_pane(dws, tmp_path, monkeypatch):
    monkeypatch.setenv("VOXTUNE_TEST_STEP_S", "0.2")
    rid = add_step_run(dws, max_steps=15)
    sock = f"voxtune-test-{os.getpid()}"
    cmd = f"cd {REPO} && {VOXTUNE} --home {dws.home} engine start > {tmp_path}/pane.txt 2>&1; sleep 600"
    env = dict(os.environ)
    subprocess.run(["tmux", "-L", sock, "new-session", "-d", "-s", "t", cmd], check=True, env=env, timeout=30)
    try:
        wait_for(lambda: Store(dws).get_run(rid)["status"] == "running", 60,
                 what=f"the run to start ({tmp_path / 'pane.txt'})")
        pid = daemon.status(dws)["pid"]
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], timeout=30)  # SIGHUP to everything in the pane
    time.sleep(1.0)
    assert daemon.status(dws)["pid"] == pid
    run = wait_status(dws, rid, ("finished", "failed", "interrupted"), 60)
    assert run["status"] == "finished", run["status_reason"]


def test_one_daemon_per_workspace_and_status_json(dws, capsys):
    from tui.cli import main

    pids = {daemon.start(dws), daemon.start(dws)}
    second = subprocess.run([sys.executable, "-m", "engine.daemon", "--home", str(dws.home)], capture_output=True,
                            text=True, timeout=60, cwd=REPO)
    assert len(pids) == 1 and second.returncode == 0 and "another engine" in second.stdout
    assert main(["--home", str(dws.home), "engine", "status", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["running"] is True and st["pid"] in pids and st["queue_paused"] is False and st["active_runs"] == []
    assert main(["--home", str(dws.home), "engine", "stop"]) == 0
    assert daemon.status(dws)["running"] is False and not (dws.engine_dir / "engine.pid").exists()


def test_workers_outlive_a_stopped_engine_and_are_readopted(dws, monkeypatch):
    monkeypatch.setenv("VOXTUNE_TEST_STEP_S", "0.1")
    rid = add_step_run(dws, max_steps=30)
    daemon.start(dws)
    wait_for(lambda: (RunFiles(dws.run_dir(rid)).metrics).exists(), 30, what="first step")
    run = Store(dws).get_run(rid)
    assert daemon.stop(dws) is True
    assert psutil.pid_exists(run["pid"]) and Store(dws).get_run(rid)["status"] == "running"
    daemon.start(dws)
    done = wait_status(dws, rid, ("finished", "failed", "interrupted"), 60)
    assert done["status"] == "finished" and len(read_jsonl(dws.run_dir(rid) / "attempts.jsonl")) == 1
    assert "re-adopted" in daemon.log_path(dws).read_text()


def test_every_ending_is_recorded(dws):
    """Crash, OOM, forced and graceful cancel, success -- one daemon, runs in queue order."""
    crash = add_step_run(dws, max_steps=5)
    (dws.run_dir(crash) / "test_fail").write_text("crash")
    oom = add_step_run(dws, max_steps=5, batch_size=4)
    (dws.run_dir(oom) / "test_fail").write_text("oom")
    ok = add_step_run(dws, max_steps=40)
    daemon.start(dws)

    run = wait_status(dws, crash, ("failed", "finished"), 60)
    assert run["status"] == "failed" and "RuntimeError: boom" in run["status_reason"] and run["exit_code"] == 1
    result = read_json(RunFiles(dws.run_dir(crash)).result)
    assert any("boom" in line for line in result["error_tail"]) and result["exit_code"] == 1

    run = wait_status(dws, oom, ("failed", "finished"), 60)
    assert run["status"] == "failed" and run["oom"] is True
    assert run["status_reason"].startswith("out of memory at step 2 (peak 11.8 GiB)")
    assert f"voxtune runs clone {oom} --batch 2 --grad-accum" in run["status_reason"]
    assert run["peak_memory"]["reserved_gb"] == 11.8

    run = wait_status(dws, ok, ("failed", "finished"), 60)
    assert run["status"] == "finished" and run["best"]["wer"] == 0.5
    tele = read_jsonl(RunFiles(dws.run_dir(ok)).telemetry)
    assert tele and all(t["rss_gb"] > 0 and "cpu_percent" in t and "gpu" in t for t in tele)
    assert any(m["run_id"] == ok for m in Store(dws).list_measurements())


def test_cancel_is_graceful_then_forced(ws, monkeypatch):
    use_step_job(monkeypatch, step_s=0.1)
    monkeypatch.setenv("VOXTUNE_CANCEL_TIMEOUT", "1")
    monkeypatch.setenv("VOXTUNE_KILL_GRACE", "1")
    add_dataset(ws)
    try:
        polite = add_step_run(ws, max_steps=200, save_every=100)
        stubborn = add_step_run(ws, max_steps=200)
        (ws.run_dir(stubborn) / "test_fail").write_text("ignore-cancel")
        daemon.start(ws)
        wait_status(ws, polite, "running", 30)
        wait_for(lambda: RunFiles(ws.run_dir(polite)).metrics.exists(), 30, what="first step")
        assert queue.cancel(ws, polite) == "running"
        run = wait_status(ws, polite, ("cancelled", "failed", "finished"), 30)
        assert run["status"] == "cancelled" and run["status_reason"].startswith("cancelled at step")
        assert any(RunFiles(ws.run_dir(polite)).checkpoints.glob("checkpoint-*"))

        wait_status(ws, stubborn, "running", 30)
        queue.cancel(ws, stubborn)
        run = wait_status(ws, stubborn, ("cancelled", "failed", "finished"), 30)
        assert run["status"] == "cancelled" and "ignored the cancel request" in run["status_reason"]
    finally:
        cleanup(ws)


def test_cli_add_starts_the_engine_and_logs_follow_the_run(dws, capsys):
    from tui.cli import main

    home = str(dws.home)
    assert main(["--home", home, "queue", "add", "--model", "whisper-small", "--dataset", "tiny", "--method", "lora",
                 "--max-steps", "20", "--json"]) == 0
    rid = json.loads(capsys.readouterr().out)["id"]
    assert daemon.status(dws)["running"] is True  # started on demand
    assert main(["--home", home, "runs", "logs", rid, "-f"]) == 0  # returns when the run ends
    out = capsys.readouterr().out
    assert f"starting {rid}" in out and "finished with exit code 0" in out
    assert main(["--home", home, "runs", "show", rid]) == 0
    shown = capsys.readouterr().out
    assert f"{rid}: finished" in shown and "progress: step 20/20" in shown and "wer 0.500" in shown
    assert main(["--home", home, "queue", "pause"]) == 0
    assert main(["--home", home, "queue", "ls"]) == 0
    assert "queue paused" in capsys.readouterr().out


def test_a_run_is_never_trained_by_two_workers(dws, monkeypatch):
    from engine.worker import BUSY_EXIT, lock_holder

    monkeypatch.setenv("VOXTUNE_TEST_STEP_S", "0.2")
    rid = add_step_run(dws, max_steps=50)
    run_dir = str(dws.run_dir(rid))
    first = subprocess.Popen([sys.executable, "-m", "engine.worker", run_dir], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: lock_holder(dws.run_dir(rid)) == first.pid, 30, what="the first worker's lock")
        second = subprocess.run([sys.executable, "-m", "engine.worker", run_dir], cwd=REPO, capture_output=True,
                                text=True, timeout=60)
        assert second.returncode == BUSY_EXIT and "another worker is already running" in second.stderr
    finally:
        first.kill()
        first.wait()
    assert lock_holder(dws.run_dir(rid)) is None  # the kernel drops a dead worker's lock
