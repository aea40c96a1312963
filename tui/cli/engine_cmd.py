"""`voxtune engine start|stop|status`: the background daemon that executes the queue."""

from __future__ import annotations

import argparse
import sys
import time

from tui.cli import CliError, emit, read_workspace, workspace


SLURM_FLAGS = {"partition": "partition", "account": "account", "qos": "qos", "slurm_time": "time",
               "slurm_mem": "mem_gb", "slurm_cpus": "cpus_per_task", "slurm_gres": "gres", "slurm_gpu_gb": "gpu_gb",
               "sbatch_arg": "extra"}


def _set_executor(ws, args: argparse.Namespace) -> None:
    """--executor (and the Slurm options) become the workspace's setting, kept for later starts."""
    from engine import daemon, executors

    options = {key: getattr(args, flag) for flag, key in SLURM_FLAGS.items() if getattr(args, flag, None) is not None}
    if args.executor is None:
        if options:
            raise CliError("the Slurm options need --executor slurm", field="executor")
        return
    if options and args.executor != "slurm":
        raise CliError(f"--{next(iter(options))} is a Slurm option; it needs --executor slurm", field="executor")
    st = daemon.status(ws)
    if st["running"] and st.get("engine_executor") not in (None, args.executor):
        raise CliError(f"the engine runs with the {st['engine_executor']} executor; `voxtune engine stop` first, "
                       f"then start it with --executor {args.executor}", field="executor")
    conf = executors.configure(ws, args.executor, **options)
    if args.executor == "slurm":
        import shutil

        if shutil.which("sbatch") is None:
            print("warning: sbatch is not on PATH here; runs will fail to submit until it is", file=sys.stderr)
        print("executor: slurm (" + ", ".join(f"{k} {v}" for k, v in conf.items() if k != "kind") + ")"
              if len(conf) > 1 else "executor: slurm")
    else:
        print("executor: local")


def cmd_start(args: argparse.Namespace) -> int:
    from engine import daemon

    ws = workspace(args)
    _set_executor(ws, args)
    if args.foreground:  # for systemd (Type=simple) and debugging
        return daemon.serve(ws)
    pid = daemon.start(ws)
    print(f"engine running, pid {pid} (log: {daemon.log_path(ws)})")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from engine import daemon

    ws = read_workspace(args)
    if ws is None:
        print("engine was not running")
        return 0
    stopped = daemon.stop(ws)
    st = daemon.status(ws)
    if not stopped:
        print("engine was not running")
    else:
        print("engine stopped")
    alive = [r for r in st["active_runs"] if r.get("worker_alive")]
    stale = [r["id"] for r in st["active_runs"] if not r.get("worker_alive")]
    if alive:
        print(f"{len(alive)} run(s) keep training and are re-adopted at the next start; "
              "`voxtune runs cancel ID` stops one")
    if stale:  # the store says running, but no worker lives: say so, never "keep training"
        print(f"{len(stale)} run(s) marked running have no live worker ({', '.join(stale)}); "
              "the next `voxtune engine start` marks them interrupted")
    return 0


def _ago(t: float | None) -> str:
    if not t:
        return "?"
    s = int(time.time() - t)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def cmd_status(args: argparse.Namespace) -> int:
    from engine import daemon

    ws = read_workspace(args)
    if ws is None:
        emit({"running": False, "pid": None, "workspace": None, "queue_paused": False, "active_runs": [],
              "queued": []}, args.json, "engine: not running")
        return 0
    st = daemon.status(ws)
    lines = [f"engine: running, pid {st['pid']}, up {_ago(st['started_at'])}" if st["running"] else "engine: not running"]
    lines.append(f"executor: {st['executor']}")
    lines.append(f"queue: {'paused (' + (st['queue_paused_reason'] or '') + ')' if st['queue_paused'] else 'active'}, "
                 f"{len(st['queued'])} queued")
    for a in st["active_runs"]:
        step = (f"step {a['step']}/{a['max_steps']}" if a["step"] is not None and a["max_steps"]
                else "starting" if a["step"] is None else "evaluating")  # an eval-only run has no steps
        eta = f", eta {int(a['eta_s'] // 60)}m{int(a['eta_s'] % 60):02d}s" if a.get("eta_s") is not None else ""
        where = f"slurm job {a['slurm_job_id']}" if a.get("slurm_job_id") else f"pid {a['pid']}, {a['device']}"
        lines.append(f"  running {a['id']} ({where}): {step}{eta}")
    lines.append(f"log: {st['log']}")
    emit(st, args.json, "\n".join(lines))
    return 0


def register(sub) -> None:
    p = sub.add_parser("engine", help="the background engine that runs the queue")
    es = p.add_subparsers(dest="engine_command", metavar="SUBCOMMAND")
    s = es.add_parser("start", help="start the engine detached (no-op if running)")
    s.add_argument("--foreground", action="store_true", help="run in this process (for systemd)")
    s.add_argument("--executor", choices=("local", "slurm"),
                   help="where runs execute: this machine (default) or one sbatch job per run; kept for this workspace")
    g = s.add_argument_group("Slurm (with --executor slurm; kept for this workspace)")
    g.add_argument("--partition")
    g.add_argument("--account")
    g.add_argument("--qos")
    g.add_argument("--slurm-time", metavar="TIME", help="--time of each job (default 1-00:00:00)")
    g.add_argument("--slurm-mem", metavar="GB", type=float, help="host memory per job (default: from the fit)")
    g.add_argument("--slurm-cpus", metavar="N", type=int, help="--cpus-per-task (default 4 per GPU)")
    g.add_argument("--slurm-gres", metavar="NAME", help="GRES name for GPUs (default gpu; '' for CPU-only clusters)")
    g.add_argument("--slurm-gpu-gb", metavar="GB", type=float, help="memory of the cluster's GPUs (chooses DDP or FSDP)")
    g.add_argument("--sbatch-arg", metavar="ARG", action="append", help="extra sbatch argument (repeatable)")
    s.set_defaults(func=cmd_start)
    es.add_parser("stop", help="stop the engine; running runs keep going").set_defaults(func=cmd_stop)
    st = es.add_parser("status", help="is it running, what is it doing")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
