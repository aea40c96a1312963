"""One run's process: `python -m engine.worker RUN_DIR`.

A separate process per run so an exception, an OOM or a segfault in training cannot take
the daemon down. The worker holds an exclusive lock on RUN_DIR/.worker.lock for its whole
life (with its pid inside), so a restarted daemon can tell a live worker from a dead one
even if it died before recording the pid, and two workers can never train the same run.
"""

from __future__ import annotations

import fcntl
import importlib
import os
import sys
import time
import traceback
from pathlib import Path

from engine.enums import RunStatus
from engine.faults import DISK_FULL_EXIT, OOM_MARKERS, disk_full_error, disk_full_reason, drop_partial, is_oom
from engine.runfiles import RunFiles, atomic_write_json
from engine.workspace import open_private, private_umask

LOCK_NAME = ".worker.lock"
# Tests and diagnostics point this at another `module:function(run_dir) -> int`.
ENTRY_ENV = "VOXTUNE_WORKER_ENTRY"
BUSY_EXIT = 75  # EX_TEMPFAIL: another live worker holds this run's lock


def acquire_lock(run_dir: Path) -> int | None:
    fd = open_private(run_dir / LOCK_NAME)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd  # kept open (and locked) until the process ends


def lock_holder(run_dir: Path) -> int | None:
    """The pid of a live worker holding the run's lock, or None if no worker holds it."""
    path = Path(run_dir) / LOCK_NAME
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = Path(path).read_text().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _entry():
    spec = os.environ.get(ENTRY_ENV)
    if spec:
        module, _, func = spec.partition(":")
        return getattr(importlib.import_module(module), func or "run")
    from engine import training

    return training.run


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m engine.worker RUN_DIR", file=sys.stderr)
        return 2
    private_umask()  # checkpoints, samples, metrics: the user's only (engine.workspace)
    run_dir = Path(argv[0]).resolve()
    files = RunFiles(run_dir)
    if acquire_lock(run_dir) is None:
        print(f"another worker is already running {run_dir}", file=sys.stderr)
        return BUSY_EXIT
    print(f"[voxtune worker] pid {os.getpid()} starting {run_dir.name} at {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
    started = time.time()
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    if restarts > 0:  # Slurm requeued this job (preemption, node failure): continue, as `runs resume` would
        from engine.queue import prepare_resume

        found = prepare_resume(files)
        print(f"[voxtune worker] Slurm restart {restarts}: resuming from the "
              f"{'last checkpoint' if found else 'start (no checkpoint yet)'}", flush=True)
    from engine import distributed

    nproc = distributed.requested_procs()
    if nproc > 1:
        return _launch(files, nproc, started)
    try:
        code = int(_entry()(run_dir) or 0)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # the driver failed without writing its own result
        traceback.print_exc()
        sys.stderr.flush()
        if not files.result.exists():
            text = f"{type(e).__name__}: {e}".strip()
            result = {"status": RunStatus.FAILED, "reason": text.splitlines()[0][:300] if text else type(e).__name__,
                      "oom": is_oom(e), "duration_s": round(time.time() - started, 1)}
            if disk_full_error(e) is not None:  # name what was being saved; drop the half-written checkpoint
                result["reason"], partial = disk_full_reason(e, files.checkpoints)
                result.update(disk_full=True, oom=False)
                drop_partial(partial)
            try:
                atomic_write_json(files.result, result)
            except OSError as err:
                if disk_full_error(err) is None:
                    raise
                print(f"[voxtune worker] {result['reason']} (result.json not written: {err})", flush=True)
                return DISK_FULL_EXIT
        return 1
    print(f"[voxtune worker] finished with exit code {code}", flush=True)
    return code


def _launch(files: RunFiles, nproc: int, started: float) -> int:
    """Several training processes (engine.distributed): torchrun starts them, this worker
    waits, then folds every rank's ending into result.json."""
    from engine import distributed

    print(f"[voxtune worker] {nproc} processes ({distributed.strategy()}) through torchrun", flush=True)
    code = distributed.launch(files.root, nproc)
    merged = distributed.merge_rank_results(files, nproc, code)
    if merged is None:  # rank 0 ended without writing its result (killed, or torchrun failed first)
        from engine.runfiles import tail_lines

        tail = "\n".join(tail_lines(files.log, 40)[0]).lower() if files.log.exists() else ""
        atomic_write_json(files.result, {
            "status": "failed", "oom": any(m in tail for m in OOM_MARKERS),
            "reason": f"the training processes ended with code {code} before rank 0 wrote a result; see log.txt",
            "duration_s": round(time.time() - started, 1), "world_size": nproc, "launcher_exit_code": code,
        })
        return code if code > 0 else 1
    print(f"[voxtune worker] finished with exit code {code}", flush=True)
    return 0 if merged.get("status") in ("finished", "cancelled") else (code or 1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
