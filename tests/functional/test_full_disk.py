"""A full disk (issue 13, item 1) on a real, small file system (tmpfs, as root): the run that
hits it ends `failed` naming the checkpoint, the queue pauses with that reason, the engine keeps
its bookkeeping in the store, and CLI writes say so in one line with exit 2, leaving no orphan."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import daemon, queue
from engine.runfiles import RunFiles
from engine.store import Store
from engine.workspace import Workspace
from tests.engine_helpers import add_dataset, add_step_run, cleanup, use_step_job, wait_for, wait_status
from tests.tiny_models import synth_clip
from tui.cli import main

pytestmark = pytest.mark.functional
VOXTUNE = [sys.executable, "-m", "tui"]


@pytest.fixture
def small_fs(tmp_path):
    """A 20 MiB tmpfs; skipped where it cannot be mounted (not root)."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(mnt: Path, leave: int = 0) -> Path:
    """Fill the file system, then give back `leave` bytes. Returns the ballast file."""
    ballast = mnt / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    if leave:
        os.truncate(ballast, max(0, ballast.stat().st_size - leave))
    return ballast


def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*VOXTUNE, "--home", str(home), *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ))


def one_line(cp: subprocess.CompletedProcess, *needles: str) -> None:
    assert cp.returncode == 2, (cp.returncode, cp.stderr)
    lines = [ln for ln in cp.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in cp.stderr and lines[0].startswith("voxtune: "), cp.stderr
    assert len(lines) <= 2 and all(ln.startswith("  hint: ") for ln in lines[1:]), cp.stderr
    for n in needles:
        assert n in cp.stderr, (n, cp.stderr)


def test_cli_writes_on_a_full_disk_are_one_line_and_leave_nothing(small_fs, tmp_path):
    import soundfile as sf

    home = small_fs / "ws"
    add = ["queue", "add", "--model", "whisper-small", "--dataset", "demo", "--method", "lora", "--no-start"]
    assert run_cli(home, *add).returncode == 0
    src = tmp_path / "clips"
    src.mkdir()
    for i in range(3):
        sf.write(src / f"c{i}.wav", synth_clip(i), 16000)
        (src / f"c{i}.txt").write_text(f"clip number {i}")
    folders = sorted(p.name for p in (home / "runs").iterdir())
    store_before = (home / "voxtune.json").read_bytes()
    fill(small_fs)
    one_line(run_cli(home, *add), "no space left on device")
    one_line(run_cli(home, "queue", "pause"), "no space left on device")
    one_line(run_cli(home, "data", "import", str(src), "--name", "mine"), "no space left on device")
    assert sorted(p.name for p in (home / "runs").iterdir()) == folders  # no orphan run folder
    assert not (home / "data" / "mine").exists() or not any((home / "data" / "mine").iterdir())
    assert (home / "voxtune.json").read_bytes() == store_before
    ls = run_cli(home, "runs", "ls")
    assert ls.returncode == 0 and folders[0] in ls.stdout


def test_a_full_disk_while_saving_fails_the_run_and_pauses_the_queue(small_fs, monkeypatch, capsys):
    ws = Workspace(small_fs / "ws").ensure()
    use_step_job(monkeypatch, step_s=0.02)
    monkeypatch.setenv("VOXTUNE_TEST_CKPT_BYTES", str(3 << 20))
    add_dataset(ws)
    first = add_step_run(ws, max_steps=40, save_every=5)
    second = add_step_run(ws, max_steps=10, save_every=5)
    ballast = fill(small_fs, leave=8 << 20)  # room for checkpoint-5 and -10 (3 MiB each), not -15
    try:
        daemon.start(ws)
        run = wait_status(ws, first, ("failed", "finished"), 60)
        assert run["status"] == "failed"
        assert run["status_reason"].startswith("no space left on device while saving checkpoint-15"), run["status_reason"]
        assert not (RunFiles(ws.run_dir(first)).checkpoints / "checkpoint-15").exists()  # the half-written one went
        paused, why = queue.is_paused(ws)
        assert paused and "no space left on device while saving checkpoint-15" in why and first in why
        assert Store(ws).get_run(second)["status"] == "queued"
        capsys.readouterr()
        assert main(["--home", str(ws.home), "engine", "stop"]) == 0  # in-process: the engine is this test's child
        out = capsys.readouterr().out
        assert "engine stopped" in out and "keep training" not in out, out
        ballast.unlink()  # space again: resume continues from checkpoint-10
        monkeypatch.setenv("VOXTUNE_TEST_CKPT_BYTES", str(1 << 20))  # (smaller checkpoints: 20 MiB is not much)
        assert queue.resume(ws, first) is True
        queue.unpause(ws)
        daemon.start(ws)
        again = wait_status(ws, first, ("failed", "finished"), 60)
        assert again["status"] == "finished", again["status_reason"]
        assert wait_status(ws, second, ("failed", "finished"), 60)["status"] == "finished"
    finally:
        cleanup(ws)


def test_the_engine_records_an_ending_once_space_is_back(small_fs, monkeypatch):
    """Not even the store can be written: the ending is not lost, it is recorded at a later poll."""
    ws = Workspace(small_fs / "ws").ensure()
    add_dataset(ws)
    rid = add_step_run(ws)
    d = daemon.Daemon(ws)
    Store(ws).set_status(rid, "running")
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
    child.wait()
    d.children[rid] = child
    ballast = fill(small_fs)
    d.reap()
    assert rid in d.children and Store(ws).get_run(rid)["status"] == "running"  # still tracked
    ballast.unlink()
    d.reap()
    assert rid not in d.children
    assert Store(ws).get_run(rid)["status"] == "failed"
    wait_for(lambda: (ws.run_dir(rid) / "result.json").exists(), 5)
