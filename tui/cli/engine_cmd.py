"""`voxtune engine start|stop|status`: the background daemon that executes the queue."""

from __future__ import annotations

import argparse
import time

from tui.cli import emit, workspace


def cmd_start(args: argparse.Namespace) -> int:
    from engine import daemon

    ws = workspace(args)
    if args.foreground:  # for systemd (Type=simple) and debugging
        return daemon.serve(ws)
    pid = daemon.start(ws)
    print(f"engine running, pid {pid} (log: {daemon.log_path(ws)})")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from engine import daemon

    ws = workspace(args)
    stopped = daemon.stop(ws)
    st = daemon.status(ws)
    if not stopped:
        print("engine was not running")
    else:
        print("engine stopped")
    if st["active_runs"]:
        print(f"{len(st['active_runs'])} run(s) keep training and are re-adopted at the next start; "
              "`voxtune runs cancel ID` stops one")
    return 0


def _ago(t: float | None) -> str:
    if not t:
        return "?"
    s = int(time.time() - t)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def cmd_status(args: argparse.Namespace) -> int:
    from engine import daemon

    st = daemon.status(workspace(args))
    lines = [f"engine: running, pid {st['pid']}, up {_ago(st['started_at'])}" if st["running"] else "engine: not running"]
    lines.append(f"queue: {'paused (' + (st['queue_paused_reason'] or '') + ')' if st['queue_paused'] else 'active'}, "
                 f"{len(st['queued'])} queued")
    for a in st["active_runs"]:
        step = f"step {a['step']}/{a['max_steps']}" if a["step"] is not None else "starting"
        eta = f", eta {int(a['eta_s'] // 60)}m{int(a['eta_s'] % 60):02d}s" if a.get("eta_s") is not None else ""
        lines.append(f"  running {a['id']} (pid {a['pid']}, {a['device']}): {step}{eta}")
    lines.append(f"log: {st['log']}")
    emit(st, args.json, "\n".join(lines))
    return 0


def register(sub) -> None:
    p = sub.add_parser("engine", help="the background engine that runs the queue")
    es = p.add_subparsers(dest="engine_command", metavar="SUBCOMMAND")
    s = es.add_parser("start", help="start the engine detached (no-op if running)")
    s.add_argument("--foreground", action="store_true", help="run in this process (for systemd)")
    s.set_defaults(func=cmd_start)
    es.add_parser("stop", help="stop the engine; running runs keep going").set_defaults(func=cmd_stop)
    st = es.add_parser("status", help="is it running, what is it doing")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
