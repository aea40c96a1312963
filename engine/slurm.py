"""The Slurm executor: each queued run is one sbatch job running the ordinary worker.

Why plain Slurm commands and not submitit: the job is a command line (`python -m
engine.worker RUN_DIR`), not a pickled Python callable; submitit keeps its own folder of
pickles and logs, and reads job states through sacct, which needs the accounting database
(slurmdbd) that many small clusters -- and the test cluster here -- do not run. voxtune
needs four commands: sbatch (submit), squeue (active jobs), scontrol show job (jobs that
ended recently; kept MinJobAge seconds, 300 by default) with sacct as the fallback for older
ones, and scancel.

The job script (kept as runs/<id>/slurm.sbatch, for the curious and for resubmitting by hand):
  --job-name voxtune-<id>, --output runs/<id>/log.txt (appended: the dashboard tails it as
  for a local run), --chdir runs/<id>, one node, one task;
  GPUs: --gres=gpu:N from the run's `gpus` ("all": --exclusive, every GPU of the node);
  memory (host RAM, --mem): the `mem_gb` setting, else from the fit: twice the weights (they
  are loaded on the host first) plus 6 GB for data and the Python stack, per process;
  time (--time): the `time` setting, else 1 day;
  --requeue: a preempted or node-failed job restarts with SLURM_RESTART_COUNT > 0, and the
  worker then resumes from the last checkpoint (the same path as `voxtune runs resume`).

Slurm's endings become run endings: OUT_OF_MEMORY (or a kill for exceeding --mem, which a
cgroup-free cluster reports as FAILED with signal 9) -> failed with the OOM reason and a
smaller-batch suggestion; TIMEOUT -> failed, resumable; NODE_FAIL / PREEMPTED (not requeued)
-> interrupted, resumable; CANCELLED outside voxtune -> cancelled. Light module.
"""

from __future__ import annotations

import math
import re
import shlex
import shutil
import subprocess
import sys
import time

from engine.executors import Ended, ExecutorError
from engine.procs import BOOTSTRAP
from engine.progress import read_progress
from engine.runfiles import RunFiles, atomic_write_text, tail_lines
from engine.workspace import Workspace

SETTINGS = ("partition", "account", "qos", "time", "mem_gb", "cpus_per_task", "gres", "gpu_gb", "extra")
DEFAULT_TIME = "1-00:00:00"
POLL_EVERY_S = 2.0
ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
          "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD")
# a kill for exceeding --mem, as slurmstepd writes it into the job's output
MEM_KILL = re.compile(r"exceeded (?:job )?memory limit(?: \((\d+) > (\d+)\))?", re.IGNORECASE)
TIME_RE = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+)(?::(\d+))?$")


def validate_settings(conf: dict) -> None:
    """Raise ExecutorError naming the setting at fault."""
    unknown = set(conf) - set(SETTINGS) - {"kind"}
    if unknown:
        raise ExecutorError(f"slurm settings: unknown {', '.join(sorted(unknown))}", field=sorted(unknown)[0])
    if conf.get("time") and not TIME_RE.match(str(conf["time"])):
        raise ExecutorError(f"slurm time: {conf['time']!r} is not a Slurm time (MM, HH:MM:SS or D-HH:MM:SS)",
                            field="time")
    for name in ("mem_gb", "cpus_per_task", "gpu_gb"):
        v = conf.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0):
            raise ExecutorError(f"slurm {name}: expected a positive number, got {v!r}", field=name)
    if conf.get("extra") is not None and not (isinstance(conf["extra"], list)
                                              and all(isinstance(a, str) for a in conf["extra"])):
        raise ExecutorError("slurm extra: expected a list of sbatch arguments", field="extra")


def _cmd(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ExecutorError(f"{name} not found: the Slurm executor needs the Slurm client commands on PATH",
                            hint="install slurm-client, or `voxtune engine start --executor local`")
    return path


# -- the job -------------------------------------------------------------------------------------
def host_mem_gb(config: dict, procs: int) -> int:
    """Host RAM (GB, decimal) for --mem: twice the model weights (loaded on the host first) plus
    6 GB for data, tokenizer and the Python/torch stack, for each process; 16 GB per process
    when the estimator does not know the model."""
    try:
        from engine import estimator

        est = estimator.estimate_for_run(config)
    except Exception:
        est = None
    per = 16.0 if est is None else 2 * est.weights_gb + 6
    return int(math.ceil(per * max(1, procs)))


def resources(run: dict, config: dict, conf: dict) -> dict:
    """What the job asks Slurm for: {procs, gres, exclusive, mem_mb, time, cpus, strategy}."""
    from engine.scheduler import requested_devices

    gpus = config.get("gpus", run.get("gpus", 1))
    every = str(gpus).lower() == "all"
    procs = 0 if every else requested_devices({"gpus": gpus}, 1)  # 0: as many as the node has GPUs
    gres = conf.get("gres", "gpu")
    strategy = "ddp"
    if procs > 1 and conf.get("gpu_gb"):
        from engine.estimator import choose_strategy

        strategy = choose_strategy(config.get("estimate_devices"), procs, float(conf["gpu_gb"]),
                                   config.get("estimate_gb"))[0]
    return {
        "procs": procs, "exclusive": every,
        "gres": f"{gres}:{procs}" if gres and procs else None,
        "mem_mb": int(float(conf["mem_gb"]) * 1000) if conf.get("mem_gb") else 1000 * host_mem_gb(config, procs or 1),
        "time": str(conf.get("time") or DEFAULT_TIME),
        "cpus": int(conf["cpus_per_task"]) if conf.get("cpus_per_task") else 4 * max(1, procs),
        "strategy": strategy,
    }


def job_script(run: dict, config: dict, files: RunFiles, conf: dict, python: str | None = None) -> str:
    """The sbatch script for one run (see the module docstring)."""
    res = resources(run, config, conf)
    q = shlex.quote
    lines = ["#!/bin/bash",
             f"#SBATCH --job-name=voxtune-{run['id']}",
             f"#SBATCH --output={files.log}",
             "#SBATCH --open-mode=append",
             f"#SBATCH --chdir={files.root}",
             "#SBATCH --nodes=1",
             "#SBATCH --ntasks=1",
             f"#SBATCH --cpus-per-task={res['cpus']}",
             f"#SBATCH --mem={res['mem_mb']}M",
             f"#SBATCH --time={res['time']}",
             "#SBATCH --requeue"]
    if res["gres"]:
        lines.append(f"#SBATCH --gres={res['gres']}")
    if res["exclusive"]:
        lines.append("#SBATCH --exclusive")
    for name in ("partition", "account", "qos"):
        if conf.get(name):
            lines.append(f"#SBATCH --{name}={conf[name]}")
    lines += [f"#SBATCH {a}" for a in conf.get("extra") or []]
    lines += [
        f"# written by voxtune for run {run['id']}: the same worker the local engine starts",
        "export PYTHONUNBUFFERED=1",
        "export PYTHONSAFEPATH=1  # voxtune's own modules, never an engine/ folder in the working folder",
        f"export VOXTUNE_NPROC={'auto' if res['procs'] == 0 else res['procs']}",
        f"export VOXTUNE_STRATEGY={res['strategy']}",
        'echo "=== $(date \'+%Y-%m-%d %H:%M:%S\') slurm job $SLURM_JOB_ID on $(hostname)'
        ' (restart ${SLURM_RESTART_COUNT:-0}) ==="',
        f"exec {q(python or sys.executable)} -c {q(BOOTSTRAP)} engine.worker {q(str(files.root))}",
    ]
    return "\n".join(lines) + "\n"


# -- reading Slurm's answers ---------------------------------------------------------------------
def parse_squeue(text: str) -> dict[str, dict]:
    """`squeue -h -o '%i|%T|%r|%N'` lines -> {job id: {state, reason, nodes}}."""
    out = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 3 and parts[0]:
            out[parts[0]] = {"state": parts[1].upper(), "reason": parts[2] if parts[2] not in ("None", "(null)") else "",
                             "nodes": parts[3] if len(parts) > 3 else ""}
    return out


def parse_scontrol(text: str) -> dict:
    """`scontrol show job -o ID` -> its Key=Value fields (values may hold spaces only at the end)."""
    fields = {}
    for m in re.finditer(r"(\w[\w/:]*)=(\S*)", text):
        fields.setdefault(m.group(1), m.group(2))
    return fields


def parse_exit(code: str | None) -> tuple[int | None, int | None]:
    """Slurm's 'EXIT:SIGNAL' -> (exit code, signal number)."""
    if not code or ":" not in code:
        return None, None
    a, b = code.split(":", 1)
    try:
        return int(a), int(b)
    except ValueError:
        return None, None


def returncode_of(exit_code: str | None) -> int | None:
    """The worker's status as the daemon records it: the exit code, or minus the signal."""
    code, sig = parse_exit(exit_code)
    if sig:
        return -sig
    return code


def ended_from(run: dict, job: dict, files: RunFiles) -> Ended:
    """Turn a finished job's state into a run ending. `job`: {state, reason, exit_code, nodes,
    time_limit, restarts} (from scontrol or sacct)."""
    rid = run["id"]
    jid = run.get("slurm_job_id")
    state = (job.get("state") or "UNKNOWN").split()[0].upper().rstrip("+")
    rc = returncode_of(job.get("exit_code"))
    prog = read_progress(files)
    at = f" at step {prog['step']}" if prog.get("step") is not None else ""
    resume = f"`voxtune runs resume {rid}` continues from the last checkpoint"
    tail = "\n".join(tail_lines(files.log, 30)[0])
    mem = MEM_KILL.search(tail)
    if state == "OUT_OF_MEMORY" or (mem and state in ("FAILED", "CANCELLED")):
        detail = f"Slurm job {jid} exceeded its memory limit"
        if mem and mem.group(1):
            detail += f" ({int(mem.group(1)) / 1e9:.1f} GB used, {int(mem.group(2)) / 1e9:.1f} GB allowed)"
        detail += "; or give jobs more memory: voxtune engine start --executor slurm --slurm-mem GB"
        return Ended(rid, rc, "failed", f"out of memory{at}: Slurm killed job {jid}", oom=True, detail=detail)
    if state == "TIMEOUT":
        return Ended(rid, rc, "failed", f"Slurm time limit ({job.get('time_limit') or '?'}) reached{at} "
                                        f"(job {jid}); {resume}, or raise --slurm-time")
    if state in ("NODE_FAIL", "BOOT_FAIL"):
        return Ended(rid, rc, "interrupted", f"node {job.get('nodes') or '?'} failed{at} (Slurm job {jid}, "
                                             f"{state}); {resume}")
    if state == "PREEMPTED":
        return Ended(rid, rc, "interrupted", f"preempted by Slurm{at} (job {jid}); {resume}")
    if state == "CANCELLED":
        if run.get("cancel_requested"):
            return Ended(rid, rc, "cancelled", f"cancelled{at} (Slurm job {jid} stopped with scancel)")
        return Ended(rid, rc, "cancelled", f"Slurm job {jid} was cancelled outside voxtune{at}")
    if state == "COMPLETED":
        return Ended(rid, rc if rc is not None else 0)
    if state == "FAILED":
        return Ended(rid, rc if rc not in (None, 0) else 1)
    if state in ("DEADLINE", "REVOKED", "SPECIAL_EXIT"):
        return Ended(rid, rc, "failed", f"Slurm ended job {jid} as {state}{at}")
    return Ended(rid, rc, "interrupted", f"Slurm no longer knows job {jid} (state {state}){at}; {resume}")


# -- the executor ------------------------------------------------------------------------------
class SlurmExecutor:
    """engine.executors.Executor for Slurm; called by the daemon's poll loop."""

    kind = "slurm"

    def __init__(self, ws: Workspace, conf: dict) -> None:
        validate_settings(conf)
        self.ws, self.conf = ws, conf
        self._polled = 0.0
        self._last: dict[str, str] = {}  # run id -> the last update sent, to send only changes

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([_cmd(args[0]), *args[1:]], capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise ExecutorError(f"{' '.join(args[:2])} failed: {(proc.stderr or proc.stdout).strip()[:300]}")
        return proc

    def submit(self, run: dict, config: dict) -> dict:
        files = RunFiles(self.ws.run_dir(run["id"]))
        script = files.root / "slurm.sbatch"
        atomic_write_text(script, job_script(run, config, files, self.conf))
        with open(files.log, "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} submitted to Slurm ===\n".encode())
        out = self._run("sbatch", "--parsable", str(script)).stdout.strip()
        jid = out.split(";")[0]
        if not jid.isdigit():
            raise ExecutorError(f"sbatch printed {out!r} instead of a job id")
        return {"slurm_job_id": jid, "status_reason": f"slurm job {jid}: submitted"}

    def _job(self, jid: str) -> dict | None:
        """A job that left squeue: scontrol first (recent), then sacct (needs accounting)."""
        proc = self._run("scontrol", "show", "job", "-o", jid, check=False)
        if proc.returncode == 0 and "JobState=" in proc.stdout:
            f = parse_scontrol(proc.stdout)
            return {"state": f.get("JobState"), "reason": f.get("Reason"), "exit_code": f.get("ExitCode"),
                    "nodes": f.get("NodeList"), "time_limit": f.get("TimeLimit"), "restarts": f.get("Restarts")}
        if shutil.which("sacct"):
            proc = self._run("sacct", "-n", "-P", "-X", "-j", jid, "-o", "State,ExitCode,NodeList,Timelimit",
                             check=False)
            line = proc.stdout.strip().splitlines()[-1:] if proc.returncode == 0 else []
            if line:
                state, code, nodes, limit = (line[0].split("|") + ["", "", "", ""])[:4]
                return {"state": state, "exit_code": code, "nodes": nodes, "time_limit": limit}
        return None

    def poll(self, running: list[dict], force: bool = False) -> tuple[list[Ended], dict[str, dict]]:
        """Ended jobs, and record updates for the others ({run id: {status_reason, slurm_state,
        slurm_started}}, only when they changed), at most every POLL_EVERY_S seconds (squeue is
        a controller RPC; a busy cluster should not see one per half-second)."""
        mine = [r for r in running if r.get("slurm_job_id")]
        if not mine or (not force and time.monotonic() - self._polled < POLL_EVERY_S):
            return [], {}
        self._polled = time.monotonic()
        ids = ",".join(str(r["slurm_job_id"]) for r in mine)
        proc = self._run("squeue", "-h", "-j", ids, "-o", "%i|%T|%r|%N", check=False)
        if proc.returncode != 0 and "Invalid job id" not in proc.stderr:
            return [], {}  # the controller is unreachable: try again later, end nothing
        active = parse_squeue(proc.stdout)
        ended, reasons = [], {}
        for run in mine:
            jid = str(run["slurm_job_id"])
            job = active.get(jid)
            if job is not None and job["state"] in ACTIVE:
                update = {"status_reason": self._reason(run, jid, job), "slurm_state": job["state"]}
                if job["state"] == "RUNNING" and not run.get("slurm_started"):
                    update["slurm_started"] = True
                reasons[run["id"]] = update
                continue
            info = self._job(jid)
            if info is not None and str(info.get("state") or "").split()[0].upper() in ACTIVE:
                continue  # left squeue's view between the two calls; look again next poll
            ended.append(ended_from(run, info or {"state": "UNKNOWN"}, RunFiles(self.ws.run_dir(run["id"]))))
        return ended, {k: v for k, v in reasons.items() if self._changed(k, v)}

    def _changed(self, rid: str, update: dict) -> bool:
        key = repr(sorted(update.items()))
        if self._last.get(rid) == key:
            return False
        self._last[rid] = key
        return True

    def _reason(self, run: dict, jid: str, job: dict) -> str:
        state = job["state"].lower()
        if job["state"] == "RUNNING":
            text = f"slurm job {jid}: running on {job['nodes'] or '?'}"
        else:
            text = f"slurm job {jid}: {state}" + (f" ({job['reason']})" if job["reason"] else "")
        if job["state"] == "PENDING" and run.get("slurm_started"):
            text += "; requeued, resumes from the last checkpoint when it starts again"
        return text

    def cancel(self, run: dict, force: bool) -> None:
        jid = run.get("slurm_job_id")
        if jid:
            self._run("scancel", str(jid), check=False)
