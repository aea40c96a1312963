"""The engine daemon: one per workspace, detached from any terminal, executing the queue.

It polls the store (~0.5 s), starts `python -m engine.worker RUN_DIR` for each admitted
run in the worker's own session (log.txt as stdout+stderr), samples telemetry about once a
second, escalates cancel requests (cancel.request -> SIGTERM -> SIGKILL), and when a worker
ends records its exit status, signal, last log lines and peak memory into result.json and
the run record. Workers are never the daemon's responsibility to keep alive: they outlive
a daemon that stops or dies, and a restarted daemon re-adopts them.

One daemon per workspace: it holds an exclusive flock on .voxtune/engine.lock for its whole
life; .voxtune/engine.pid says who it is (pid + create_time, checked with psutil).
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import psutil

from engine import executors, faults
from engine import queue as runqueue
from engine import scheduler
from engine.config import ConfigError, RunConfig
from engine.procs import python_module, safe_env
from engine.progress import read_progress
from engine.runfiles import RunFiles, atomic_write_json, read_json, tail_lines
from engine.store import Store
from engine.telemetry import Sampler, detect_gpus
from engine.worker import BUSY_EXIT, lock_holder
from engine.workspace import Workspace, open_private, private_umask
from engine.errors import VoxtuneError
from engine.enums import RunStatus

POLL_S = 0.5
TELEMETRY_S = 1.0
CANCEL_TIMEOUT_S = float(os.environ.get("VOXTUNE_CANCEL_TIMEOUT", "180"))  # graceful stop, then SIGTERM
KILL_GRACE_S = float(os.environ.get("VOXTUNE_KILL_GRACE", "15"))  # SIGTERM, then SIGKILL
ERROR_TAIL_LINES = 20
LOG_ROTATE_BYTES = 5 * 1024 * 1024


class DaemonError(VoxtuneError):
    """The engine cannot start or stop; the message says why and where its log is."""

    exit_code = 1  # not the user's input: the environment or a bug (the log says which)


def _pid_path(ws: Workspace) -> Path:
    return ws.engine_dir / "engine.pid"


def _lock_path(ws: Workspace) -> Path:
    return ws.engine_dir / "engine.lock"


def log_path(ws: Workspace) -> Path:
    return ws.engine_dir / "engine.log"


def _proc_matches(pid: int | None, create_time: float | None) -> psutil.Process | None:
    """The live process `pid`, if it is the same process that was recorded (not a reused pid)."""
    if not pid:
        return None
    try:
        p = psutil.Process(int(pid))
        if create_time is not None and abs(p.create_time() - float(create_time)) > 1.0:
            return None
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        return p
    except (psutil.Error, ValueError):
        return None


def _lock_held(ws: Workspace) -> bool:
    path = _lock_path(ws)
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _worker_alive(ws: Workspace, run: dict) -> bool:
    """Whether a live worker trains `run`: it holds the run's lock, or its recorded pid lives."""
    try:
        holder = lock_holder(ws.run_dir(run["id"]))
    except OSError:
        holder = None
    return bool(holder) or _proc_matches(run.get("pid"), run.get("pid_create_time")) is not None


def _daemon_process(ws: Workspace) -> psutil.Process | None:
    info = read_json(_pid_path(ws)) or {}
    proc = _proc_matches(info.get("pid"), info.get("create_time"))
    if proc is not None and _lock_held(ws):
        return proc
    return None


# -- the public API used by the CLI and the TUI ------------------------------------------------
def engine_pid(ws: Workspace) -> int | None:
    """The live engine's pid, or None: the cheap check screens poll every second."""
    proc = _daemon_process(ws)
    return proc.pid if proc is not None else None


def status(ws: Workspace) -> dict:
    """running, pid, queue_paused (+ reason), active runs with progress, queued count."""
    proc = _daemon_process(ws)
    info = read_json(_pid_path(ws)) or {}
    store = Store(ws)
    runs = store.list_runs()
    active = []
    for r in scheduler.order(x for x in runs if x["status"] == RunStatus.RUNNING):
        prog = read_progress(RunFiles(ws.run_dir(r["id"])))
        active.append({
            "id": r["id"], "pid": r.get("pid"), "device": r.get("device"), "started_at": r.get("started_at"),
            "cancel_requested": bool(r.get("cancel_requested")), "step": prog["step"],
            "max_steps": prog["max_steps"], "eta_s": prog["eta_s"], "slurm_job_id": r.get("slurm_job_id"),
            "worker_alive": bool(r.get("slurm_job_id")) or _worker_alive(ws, r),
        })
    queued = scheduler.order(x for x in runs if x["status"] == RunStatus.QUEUED)
    return {
        "running": proc is not None,
        "pid": proc.pid if proc else None,
        "started_at": info.get("started_at") if proc else None,
        "workspace": str(ws.home),
        "executor": executors.settings(ws)["kind"],
        "engine_executor": info.get("executor") if proc else None,  # what the running daemon uses
        "log": str(log_path(ws)),
        "queue_paused": bool(store.get_meta("queue_paused", False)),
        "queue_paused_reason": store.get_meta("queue_paused_reason"),
        "active_runs": active,
        "queued": [{"id": r["id"], "reason": r.get("status_reason")} for r in queued],
    }


def start(ws: Workspace, wait_s: float = 30.0) -> int:
    """Start the daemon detached (new session, streams to .voxtune/engine.log) unless one runs.
    Returns its pid."""
    proc = _daemon_process(ws)
    if proc is not None:
        return proc.pid
    ws.ensure()
    log_file = log_path(ws)
    if log_file.exists() and log_file.stat().st_size > LOG_ROTATE_BYTES:
        os.replace(log_file, log_file.with_name(log_file.name + ".1"))  # keep one previous log
    with os.fdopen(open_private(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "ab") as log:
        child = subprocess.Popen(
            python_module("engine.daemon", "--home", str(ws.home)), env=safe_env(),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True, cwd=str(ws.home),
        )
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        proc = _daemon_process(ws)
        if proc is not None:
            if child.poll() is None and proc.pid != child.pid:
                child.wait(timeout=wait_s)  # lost the race to another starter: it exits by itself
            return proc.pid
        if child.poll() is not None:
            proc = _daemon_process(ws)
            if proc is not None:
                return proc.pid
            tail = "\n".join(tail_lines(log_path(ws), 15)[0])
            raise DaemonError(f"the engine exited at start (code {child.returncode}); {log_path(ws)} ends with:\n{tail}")
        time.sleep(0.1)
    raise DaemonError(f"the engine did not come up within {wait_s:.0f} s; see {log_path(ws)}")


ensure_running = start


def stop(ws: Workspace, timeout_s: float = 30.0) -> bool:
    """SIGTERM the daemon and wait for it to exit. Running workers are left alone (they keep
    training and are re-adopted at the next start). Returns False if none was running."""
    proc = _daemon_process(ws)
    if proc is None:
        return False
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except psutil.TimeoutExpired:
        raise DaemonError(f"the engine (pid {proc.pid}) did not stop within {timeout_s:.0f} s; "
                          f"see {log_path(ws)}") from None
    return True


# -- the daemon itself ------------------------------------------------------------------------
def _log(msg: str) -> None:
    """A line in engine.log (the daemon's stdout); on a full disk the line is lost, never the daemon."""
    try:
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}", flush=True)
    except OSError:
        pass


def _gb(x: Any) -> str:
    return f"{x:.1f} GiB" if isinstance(x, (int, float)) else "?"


def gpu_devices(gpus: list) -> list[scheduler.Device]:
    from engine.telemetry import _attr

    out = []
    for i, g in enumerate(gpus):
        total = _attr(g, "total_gb", "memory_gb")
        free = _attr(g, "free_gb")
        used = _attr(g, "used_gb")
        if free is None and total is not None and used is not None:
            free = total - used
        idx = _attr(g, "index")
        out.append(scheduler.Device(str(idx if idx is not None else i), str(_attr(g, "name") or f"GPU {i}"), free, total))
    return out


def oom_reason(config: RunConfig, result: dict, budget_gb: float | None, fallback: str | None = None) -> str:
    """'out of memory at step 40 (peak 11.6 GiB); try `voxtune runs clone ...`' with a config the
    estimator says fits `budget_gb`; without an estimate, the worker's own advice (`fallback`)."""
    peak = (result.get("peak_memory") or {})
    peak_gb = peak.get("reserved_gb") or peak.get("allocated_gb") or peak.get("proc_gpu_gb")
    step = result.get("oom_step")
    where = f" at step {step}" if step is not None else ""
    text = f"out of memory{where} (peak {_gb(peak_gb)})" if peak_gb else f"out of memory{where}"
    fix = runqueue.suggest_fit(config, budget_gb)
    if (not fix or fix["estimate_gb"] is None) and fallback and "out of memory at step" in fallback:
        return fallback  # the driver's own message already has the step, the peak and advice
    if fix:
        est = f" (estimated {_gb(fix['estimate_gb'])})" if fix["estimate_gb"] is not None else ""
        text += f"; try `voxtune runs clone {config.run_id} {fix['flags']}`{est}"
    else:
        text += "; try a smaller batch with more --grad-accum, gradient checkpointing, or --method qlora"
    return text


def distributed_env(procs: int, strategy: str | None) -> dict[str, str]:
    """What tells a worker to start several training processes (engine.distributed)."""
    from engine.distributed import NPROC_ENV, STRATEGY_ENV

    return {NPROC_ENV: str(max(1, int(procs))), STRATEGY_ENV: strategy or "ddp"}


class _Following(Exception):
    """finalize(): the run's worker was another live process, now followed instead."""


class Daemon:
    def __init__(self, ws: Workspace) -> None:
        self.ws = ws.ensure()
        self.store = Store(ws)
        self.children: dict[str, subprocess.Popen] = {}
        self.adopted: dict[str, psutil.Process] = {}
        self.samplers: dict[str, Sampler] = {}
        self.term_sent: dict[str, float] = {}
        self.forced: set[str] = set()
        self.unrecorded: set[str] = set()  # runs whose ending could not be written to the store yet
        self.oom_base: dict[str, int | None] = {}  # kernel OOM-kill count when each worker started (faults)
        self.stopping = False
        self._last_sample = 0.0
        self._gpus: list = []
        self._gpus_at = -1e9
        self._lock_fd: int | None = None
        self.executor: executors.Executor | None = None  # None: this daemon's own worker processes

    # lifecycle
    def acquire(self) -> bool:
        fd = open_private(_lock_path(self.ws))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        me = psutil.Process()
        atomic_write_json(_pid_path(self.ws), {"pid": me.pid, "create_time": me.create_time(), "started_at": time.time(),
                                               "python": sys.executable,
                                               "executor": executors.settings(self.ws)["kind"]})
        return True

    def release(self) -> None:
        info = read_json(_pid_path(self.ws)) or {}
        if info.get("pid") == os.getpid():
            try:
                _pid_path(self.ws).unlink()
            except FileNotFoundError:
                pass
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _on_signal(self, signum, _frame) -> None:
        self.stopping = True

    def serve(self) -> int:
        if not self.acquire():
            _log(f"another engine already serves {self.ws.home}; exiting")
            return 0
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a dropped SSH session must not stop the queue
        _log(f"engine started, pid {os.getpid()}, workspace {self.ws.home}")
        try:
            self.executor = executors.load(self.ws)
            if self.executor is not None:
                _log(f"runs execute on {self.executor.kind}")
            self.recover()
            while not self.stopping:
                try:
                    self.tick()
                except Exception:  # a bad record or a full disk must not kill the daemon
                    _log("error during poll:\n" + traceback.format_exc())
                    time.sleep(2)
                time.sleep(POLL_S)
        finally:
            live = list(self.children) + list(self.adopted)
            if live:
                _log(f"leaving {len(live)} run(s) running ({', '.join(live)}); the next start re-adopts them")
            _log("engine stopped")
            self.release()
        return 0

    def gpus(self) -> list:
        """engine.gpus.detect(), at most once a second (NVML / amdsmi queries are not free)."""
        if time.monotonic() - self._gpus_at >= TELEMETRY_S:
            self._gpus, self._gpus_at = detect_gpus(), time.monotonic()
        return self._gpus

    # recovery
    def recover(self) -> None:
        interrupted = []
        for run in self.store.list_runs():
            if run["status"] != RunStatus.RUNNING:
                continue
            if run.get("slurm_job_id"):  # followed through Slurm (the next poll settles it), never a local pid
                continue
            rid = run["id"]
            run_dir = self.ws.run_dir(rid)
            holder = lock_holder(run_dir)
            if holder is None and not run.get("pid") and time.time() - (run.get("started_at") or 0) < 10:
                time.sleep(3)  # the previous daemon died just after spawning: let the worker take its lock
                holder = lock_holder(run_dir)
            for _ in range(20):  # locked, pid not written yet: the worker is starting right now
                if holder != -1:
                    break
                time.sleep(0.05)
                holder = lock_holder(run_dir)
            proc = _proc_matches(holder, None) if holder and holder > 0 else _proc_matches(run.get("pid"), run.get("pid_create_time"))
            if proc is not None:
                self.adopted[rid] = proc
                self.samplers[rid] = Sampler(RunFiles(run_dir), proc.pid, self._gpu_index(run))
                if proc.pid != run.get("pid"):
                    self.store.update_run(rid, pid=proc.pid, pid_create_time=proc.create_time())
                _log(f"re-adopted {rid} (worker pid {proc.pid})")
                continue
            try:
                result = read_json(RunFiles(run_dir).result, None)
            except ValueError:  # a torn result.json is no result: the run is interrupted
                result = None
            if isinstance(result, dict) and result.get("status") in (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.CANCELLED):
                self.finalize(rid, None)  # it ended while no engine was watching
                continue
            prog = read_progress(RunFiles(run_dir))
            at = f" at step {prog['step']}" if prog["step"] is not None else ""
            reason = f"interrupted{at}: the engine stopped and the worker is gone; `voxtune runs resume {rid}` continues it"
            self.store.set_status(rid, RunStatus.INTERRUPTED, reason, pid=None, pid_create_time=None)
            interrupted.append(rid)
            _log(f"{rid}: {reason}")
        if interrupted:
            runqueue.pause(self.ws, f"paused after a crash: {len(interrupted)} run(s) interrupted "
                                    f"({', '.join(interrupted)}); resume them or `voxtune queue resume`")

    # the poll loop
    def tick(self) -> None:
        if self.executor is not None:
            return self.remote_tick()
        self.reap()
        runs = self.store.list_runs()
        self.handle_cancels([r for r in runs if r["status"] == RunStatus.RUNNING])
        gpus = None
        if self.samplers and time.monotonic() - self._last_sample >= TELEMETRY_S:
            self._last_sample = time.monotonic()
            gpus = self.gpus()
            for rid, sampler in list(self.samplers.items()):
                try:
                    sampler.sample(gpus)
                except Exception:
                    _log(f"{rid}: telemetry failed:\n{traceback.format_exc()}")
        if not self.stopping:
            self.schedule(runs, gpus)

    def reap(self) -> None:
        for rid, child in list(self.children.items()):
            rc = child.poll()
            if rc is not None:
                self.finalize(rid, rc)
        for rid, proc in list(self.adopted.items()):
            try:
                gone = not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
            except psutil.Error:
                gone = True
            if gone:
                self.finalize(rid, None)

    def _pid_of(self, rid: str) -> int | None:
        if rid in self.children:
            return self.children[rid].pid
        if rid in self.adopted:
            return self.adopted[rid].pid
        return None

    def handle_cancels(self, running: list[dict]) -> None:
        now = time.time()
        for run in running:
            rid = run["id"]
            if not run.get("cancel_requested"):
                continue
            files = RunFiles(self.ws.run_dir(rid))
            try:
                if not files.cancel_request.exists():
                    files.cancel_request.write_text(f"{now}\n")
            except OSError as e:  # a full disk: the signals below still stop the worker
                _log(f"{rid}: cannot write cancel.request ({e})")
            pid = self._pid_of(rid)
            if pid is None:
                continue
            asked = run.get("cancel_requested_at") or now
            sig = None
            if rid not in self.term_sent and now - asked > CANCEL_TIMEOUT_S:
                sig, self.term_sent[rid] = signal.SIGTERM, now
            elif rid in self.term_sent and rid not in self.forced and now - self.term_sent[rid] > KILL_GRACE_S:
                sig = signal.SIGKILL
                self.forced.add(rid)
            if sig is not None:
                _log(f"{rid}: worker did not stop after the cancel request; sending {signal.Signals(sig).name}")
                self.forced.add(rid)
                try:
                    os.killpg(pid, sig)  # the worker leads its own session/process group
                except ProcessLookupError:
                    pass

    def _gpu_index(self, run: dict) -> int | None:
        dev = run.get("device")
        return int(dev) if dev not in (None, scheduler.CPU) and str(dev).isdigit() else None

    def schedule(self, runs: list[dict], gpus: list | None) -> None:
        queued = [r for r in runs if r["status"] == RunStatus.QUEUED]
        if not queued:
            return
        active = [r for r in runs if r["status"] == RunStatus.RUNNING]
        paused = bool(self.store.get_meta("queue_paused", False))
        devices = gpu_devices(gpus if gpus is not None else self.gpus())
        plan = scheduler.plan(queued, active, devices, paused=paused)
        by_id = {r["id"]: r for r in queued}
        for rid, reason in plan.waiting.items():
            if by_id[rid].get("status_reason") != reason:
                self.store.update_run(rid, status_reason=reason)
        for rid, device in plan.start:
            self.spawn(by_id[rid], device, multi_gpu=len(devices) > 1, procs=plan.procs.get(rid, 1),
                       strategy=plan.strategy.get(rid))

    def _refuse_changed_dataset(self, rid: str, files: RunFiles) -> bool:
        """A queued run whose dataset was re-imported since it was queued (or since it was
        interrupted) does not start: failed, with both manifest hashes (engine.queue.dataset_drift)."""
        try:
            drift = runqueue.dataset_drift(self.store, RunConfig.load(files.config))
        except ConfigError as e:
            drift = f"{files.config} cannot be read ({e})"
        if drift:
            self.store.set_status(rid, RunStatus.FAILED, f"not started: {drift}")
            _log(f"{rid}: not started: {drift}")
        return bool(drift)

    def spawn(self, run: dict, device: str, multi_gpu: bool = False, procs: int = 1, strategy: str | None = None) -> None:
        rid = run["id"]
        files = RunFiles(self.ws.run_dir(rid))
        if not files.config.exists():
            self.store.set_status(rid, RunStatus.FAILED, f"{files.config} is missing; the run cannot start")
            return
        if self._refuse_changed_dataset(rid, files):
            return
        # Recorded as running before the process exists: if the daemon dies in between, the
        # run comes back as interrupted (resumable) rather than queued and started twice.
        oom_base = faults.oom_kill_count()
        self.store.set_status(rid, RunStatus.RUNNING, "resuming from last checkpoint" if run.get("resume") else None,
                              device=device, pid=None, pid_create_time=None, cancel_requested=False,
                              exit_code=None, signal=None, procs=procs, strategy=strategy, oom_kills_at_start=oom_base,
                              start_now=False)
        env = safe_env(PYTHONUNBUFFERED="1")
        if multi_gpu and device != scheduler.CPU:
            env["CUDA_VISIBLE_DEVICES"] = device  # ROCm builds of torch honour it too
        env.update(distributed_env(procs, strategy))
        try:
            with open(files.log, "ab") as log:
                on = f"{device} ({procs} processes, {strategy})" if procs > 1 else device
                try:  # a header that does not fit on a full disk is no reason not to start
                    log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {'resume' if run.get('resume') else 'start'} "
                              f"on {on} ===\n".encode())
                    log.flush()
                except OSError:
                    pass
                child = subprocess.Popen(
                    python_module("engine.worker", str(files.root)),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, close_fds=True, cwd=str(files.root), env=env,
                )
        except OSError as e:  # never leave a run `running` without a worker
            from engine.errors import from_os_error

            why = from_os_error(e, "the worker could not start")
            reason = why.one_line() if why is not None else f"the worker could not start: {e}"
            self.store.set_status(rid, RunStatus.FAILED, reason, pid=None, pid_create_time=None,
                                  disk_full=faults.disk_full_error(e) is not None)
            if faults.disk_full_error(e) is not None:
                runqueue.pause(self.ws, f"paused: {rid}: {reason}; free some space, then `voxtune queue resume`")
            _log(f"{rid}: {reason}")
            return
        self.children[rid] = child
        self.oom_base[rid] = oom_base
        try:
            ctime = psutil.Process(child.pid).create_time()
        except psutil.Error:
            ctime = None
        self.store.update_run(rid, pid=child.pid, pid_create_time=ctime)
        self.samplers[rid] = Sampler(files, child.pid, self._gpu_index({"device": device}))
        self._last_sample = 0.0  # first sample on the next poll
        _log(f"{rid}: started worker pid {child.pid} on {device}")

    # a remote executor (Slurm): it starts, follows and stops the jobs; the rest is as above
    def remote_tick(self) -> None:
        runs = self.store.list_runs()
        running = [r for r in runs if r["status"] == "running" and r.get("slurm_job_id")]
        ended, updates = self.executor.poll(running)
        done = {e.run_id for e in ended}
        for e in ended:
            self.finalize(e.run_id, e.returncode, ended=e)
        for rid, fields in updates.items():
            self.store.update_run(rid, **fields)
        now = time.time()
        for run in running:
            rid = run["id"]
            if rid in done or not run.get("cancel_requested") or rid in self.forced:
                continue
            files = RunFiles(self.ws.run_dir(rid))
            if not files.cancel_request.exists():
                files.cancel_request.write_text(f"{now}\n")  # the worker checkpoints and stops
            asked = run.get("cancel_requested_at") or now
            if not run.get("slurm_started") or now - asked > CANCEL_TIMEOUT_S:
                _log(f"{rid}: scancel slurm job {run['slurm_job_id']}")
                self.executor.cancel(run, force=True)
                self.forced.add(rid)
        if self.stopping or not any(r["status"] == "queued" for r in runs):
            return
        paused = bool(self.store.get_meta("queue_paused", False))
        for run in scheduler.order(r for r in runs if r["status"] == "queued"):
            if not paused or run.get("start_now"):  # while paused: only runs started by hand
                self.submit(run)

    def submit(self, run: dict) -> None:
        rid = run["id"]
        files = RunFiles(self.ws.run_dir(rid))
        config = read_json(files.config, None)
        if not isinstance(config, dict):
            self.store.set_status(rid, "failed", f"{files.config} is missing; the run cannot start")
            return
        if self._refuse_changed_dataset(rid, files):
            return
        # running before the job exists, as in spawn(): a crash in between leaves it interrupted, not twice submitted
        self.store.set_status(rid, "running", "submitting to Slurm", device=None, pid=None, pid_create_time=None,
                              cancel_requested=False, exit_code=None, signal=None, slurm_job_id=None,
                              slurm_started=False, slurm_state=None)
        try:
            fields = self.executor.submit(run, config)
        except VoxtuneError as e:
            self.store.set_status(rid, "failed", f"not submitted: {e}", oom=False)
            _log(f"{rid}: not submitted: {e}")
            return
        self.store.update_run(rid, **fields)
        _log(f"{rid}: {fields.get('status_reason')}")

    def finalize(self, rid: str, returncode: int | None, ended: executors.Ended | None = None) -> None:
        """A worker ended: decide the run's status and record everything we know. `ended`: what
        a remote executor knows about how its job ended (used when result.json does not say).

        The store is written first and nothing depends on a run file being written: on a full
        disk result.json may stay as the worker left it. If even the store cannot be written the
        run stays tracked and the next poll tries again (so freeing space is enough)."""
        try:
            self._finalize(rid, returncode, ended)
        except _Following:
            return
        except Exception:
            if rid not in self.unrecorded:  # the traceback once, not at every poll
                self.unrecorded.add(rid)
                _log(f"{rid}: could not record the worker's end yet (tried again at every poll):\n{traceback.format_exc()}")
            return
        self.unrecorded.discard(rid)
        self.children.pop(rid, None)
        self.adopted.pop(rid, None)
        self.samplers.pop(rid, None)
        self.oom_base.pop(rid, None)

    def _finalize(self, rid: str, returncode: int | None, ended: executors.Ended | None = None) -> None:
        sampler = self.samplers.get(rid)
        if returncode == BUSY_EXIT:  # our worker found another one training this run: follow that one
            holder = lock_holder(self.ws.run_dir(rid))
            proc = _proc_matches(holder, None) if holder and holder > 0 else None
            if proc is not None:
                self.store.update_run(rid, pid=proc.pid, pid_create_time=proc.create_time())
                self.children.pop(rid, None)
                self.adopted[rid] = proc
                self.samplers[rid] = Sampler(RunFiles(self.ws.run_dir(rid)), proc.pid)
                _log(f"{rid}: already trained by worker pid {proc.pid}; following it")
                raise _Following()
        forced = rid in self.forced
        files = RunFiles(self.ws.run_dir(rid))
        run = self.store.get_run(rid)
        if run is None:
            return
        try:
            result = read_json(files.result, None)
        except ValueError:
            result = None
        result = result if isinstance(result, dict) else {}
        try:
            config = RunConfig.load(files.config)
        except ConfigError:  # a lost or torn config.json must not stop the run from ending
            config = RunConfig(run_id=rid)
        tail, _ = tail_lines(files.log, ERROR_TAIL_LINES)
        sig = signal.Signals(-returncode).name if returncode is not None and returncode < 0 else None
        last_line = next((ln.strip() for ln in reversed(tail) if ln.strip() and not ln.startswith("===")), "")

        disk_full = bool(result.get("disk_full"))
        if result.get("status") in (RunStatus.FINISHED, RunStatus.FAILED, RunStatus.CANCELLED):
            status, reason = result["status"], result.get("reason")
        elif ended is not None and ended.status:
            status, reason = ended.status, ended.reason
        elif forced:
            status, reason = RunStatus.CANCELLED, f"cancelled: the worker ignored the cancel request and was stopped ({sig or 'signal'})"
        elif sig:
            base = self.oom_base.get(rid, run.get("oom_kills_at_start"))
            reason, killed_oom = faults.signal_reason(sig, base, faults.oom_kill_count())
            status = RunStatus.FAILED
            if killed_oom:
                result["oom"] = True
        elif returncode == faults.DISK_FULL_EXIT or (returncode and faults.is_disk_full_text("\n".join(tail))):
            line = next((ln for ln in reversed(tail) if faults.is_disk_full_text(ln)), "")
            reason, partial = faults.disk_full_reason(OSError(errno.ENOSPC, line, line), files.checkpoints)
            faults.drop_partial(partial)
            status, disk_full = RunStatus.FAILED, True
        elif returncode is None:
            status, reason = RunStatus.FAILED, f"the worker ended while the engine was not watching, without a result; last line: {last_line[:200]}"
        elif returncode != 0:
            status, reason = RunStatus.FAILED, f"worker exited with code {returncode}: {last_line[:200]}"
        else:
            status, reason = RunStatus.FAILED, "the worker exited without writing result.json"
        oom = not disk_full and (bool(result.get("oom")) or bool(ended is not None and ended.oom) or (
            status == RunStatus.FAILED and not sig and faults.is_oom_text("\n".join(tail))))
        peaks = sampler.peaks() if sampler else {}
        peak = dict(result.get("peak_memory") or {})
        peak.setdefault("device", run.get("device"))
        if peaks.get("rss_gb"):
            peak["rss_gb"] = max(peak.get("rss_gb") or 0.0, peaks["rss_gb"])
        if peaks.get("proc_gpu_gb") is not None:
            peak["proc_gpu_gb"] = peaks["proc_gpu_gb"]
        result["peak_memory"] = peak
        if oom and status == RunStatus.FAILED:
            result["oom"] = True
            budget = next((d.total_gb for d in gpu_devices(self.gpus()) if d.id == run.get("device")), None)
            killed = bool(sig)
            reason = oom_reason(config, result, budget, fallback=reason if result.get("oom") else None)
            if killed:
                reason += f" (the kernel's out-of-memory killer sent {sig}: its oom_kill count rose while the run trained)"
            if ended is not None and ended.detail:
                reason += f" ({ended.detail})"
        result.update(status=status, reason=reason, exit_code=returncode, signal=sig, error_tail=tail)
        prog = read_progress(files)
        metrics = result.get("metrics") or prog["last_eval"]
        try:  # a calibration point (a store write, before the status others wait on)
            self._measure(rid, run, config.to_dict(), result)
        except Exception:
            _log(f"{rid}: measurement not recorded:\n{traceback.format_exc()}")
        self.store.set_status(  # the store first: it must never wait on a run file (a full disk)
            rid, status, reason, pid=None, pid_create_time=None, exit_code=returncode, signal=sig,
            peak_memory=peak, metrics=metrics, best=result.get("best") or run.get("best"),
            resume=False, cancel_requested=False, oom=oom, disk_full=disk_full,
        )
        self.forced.discard(rid)
        self.term_sent.pop(rid, None)
        if disk_full:
            runqueue.pause(self.ws, f"paused: {rid}: {reason.split(';')[0]}; free some space, then `voxtune queue resume`")
        try:
            atomic_write_json(files.result, result)
        except OSError as e:
            _log(f"{rid}: result.json not completed ({e}); the store has the ending")
        _log(f"{rid}: {status} ({reason or 'ok'}), exit code {returncode}, signal {sig}")

    def _measure(self, rid: str, run: dict, config: dict, result: dict) -> None:
        """A calibration point for the estimator: what this config really took on the GPU."""
        peak = result.get("peak_memory") or {}
        if peak.get("allocated_gb") is None and peak.get("reserved_gb") is None:
            return
        record = {
            "model": config.get("model"), "method": config.get("method"), "batch": config.get("batch_size"),
            "audio_seconds": result.get("audio_seconds") or config.get("audio_seconds"),
            "lora_rank": config.get("lora_rank"), "precision": result.get("precision") or config.get("precision"),
            "gradient_checkpointing": config.get("gradient_checkpointing"), "optimizer": config.get("optimizer"),
            "device": peak.get("device") or run.get("device"), "peak_allocated_gb": peak.get("allocated_gb"),
            "peak_reserved_gb": peak.get("reserved_gb"), "estimate_gb": config.get("estimate_gb"),
            "oom": bool(result.get("oom")), "run_id": rid, "time": time.time(),
        }
        try:
            from engine import calibration  # the estimator's own format and rules (None: not a GPU point)

            record = calibration.measurement_from_run(config, result, dict(run, id=rid))
        except ImportError:
            pass
        except Exception:
            _log(f"{rid}: calibration record failed, storing the plain one:\n{traceback.format_exc()}")
        if record is not None:
            self.store.add_measurement(record)


def serve(ws: Workspace) -> int:
    """Run the daemon in the foreground (systemd, or the detached child of start())."""
    return Daemon(ws).serve()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.daemon")
    parser.add_argument("--home", required=True)
    args = parser.parse_args(argv)
    private_umask()  # runs/, logs, checkpoints: 0700/0600 (engine.workspace)
    from engine.workspace import open_workspace

    return serve(open_workspace(args.home))


if __name__ == "__main__":
    sys.exit(main())
