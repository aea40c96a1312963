"""`voxtune queue`: add runs, list the queue, pause/resume it, reorder it."""

from __future__ import annotations

import argparse
import sys

from tui.cli import emit, need_workspace, read_workspace, run_workspace, workspace


def add_run_options(p: argparse.ArgumentParser, required: bool) -> None:
    """Every RunConfig option as a flag (engine.config.cli_options: the form shows the same
    list). `queue add` requires --model and --dataset; `runs clone` takes all as changes."""
    from engine.config import cli_options

    steps = p.add_mutually_exclusive_group()
    for name, opt in cli_options():
        kw: dict = {"dest": name, "help": opt.help.replace("%", "%%"), "default": None}
        target = steps if name in ("max_steps", "epochs") else p
        if opt.kind == "bool":
            kw["action"] = "store_true" if name in ("eval_only", "trust_remote_code") else argparse.BooleanOptionalAction
        elif opt.kind == "choice":
            kw["choices"] = opt.choices
        else:
            kw["metavar"] = opt.metavar  # the text is parsed by engine.config.parse in run_options
        if required and name in ("model", "dataset"):
            kw["required"] = True
        target.add_argument(opt.flag, *opt.aliases, **kw)


def run_options(args: argparse.Namespace) -> dict:
    """The RunConfig options given on the command line (None: not given), parsed by
    engine.config (ConfigError names the field: `lr: must be a finite number, got nan`)."""
    from engine.config import cli_options, parse

    out = {}
    for name, opt in cli_options():
        value = getattr(args, name, None)
        if value is not None:
            out[name] = parse(name, value) if isinstance(value, str) and opt.kind not in ("text", "choice") else value
    return out


def start_engine(ws, quiet: bool) -> None:
    """The CLI starts the daemon on demand; failing to start it never loses the queued run."""
    from engine import daemon

    try:
        daemon.ensure_running(ws)
    except daemon.DaemonError as e:
        print(f"voxtune: the run is queued, but the engine did not start: {e}\n"
              "start it with `voxtune engine start`", file=sys.stderr)
        return
    paused = daemon.status(ws)
    if paused["queue_paused"] and not quiet:
        print(f"note: the queue is paused ({paused['queue_paused_reason']}); `voxtune queue resume` starts it",
              file=sys.stderr)


def cmd_add(args: argparse.Namespace) -> int:
    from engine import queue

    ws = workspace(args)
    options = run_options(args)
    run_id = queue.add(ws, **options)
    if options.get("trust_remote_code"):
        from engine.config import OPTIONS

        print(f"voxtune: warning: {OPTIONS['trust_remote_code'].flag} {OPTIONS['trust_remote_code'].warning}",
              file=sys.stderr)
    from engine.config import RunConfig
    from engine.runfiles import RunFiles

    cfg = RunConfig.load(RunFiles(ws.run_dir(run_id)).config)
    if cfg.defaults_note:
        print(f"voxtune: defaults: {cfg.defaults_note}", file=sys.stderr)
    warning = queue.eval_set_warning(ws, cfg)
    if warning:
        print(f"voxtune: warning: {warning}", file=sys.stderr)
    emit({"id": run_id, "defaults_note": cfg.defaults_note, "warning": warning} if args.json else {"id": run_id},
         args.json, run_id)
    if not args.no_start:
        start_engine(ws, args.json)
    return 0


def _fmt_queue(status: dict) -> str:
    lines = []
    if status["queue_paused"]:
        lines.append(f"queue paused: {status['queue_paused_reason'] or ''}".rstrip(": "))
    lines.append(f"engine: {'running, pid ' + str(status['pid']) if status['running'] else 'not running'}")
    for a in status["active_runs"]:
        step = (f"step {a['step']}/{a['max_steps']}" if a["step"] is not None and a["max_steps"]
                else "starting" if a["step"] is None else "evaluating")  # an eval-only run has no steps
        lines.append(f"  running  {a['id']}  {step}" + ("  (cancelling)" if a["cancel_requested"] else ""))
    for i, q in enumerate(status["queued"], 1):
        lines.append(f"  {i:>3}.    {q['id']}  {q['reason'] or ''}".rstrip())
    if not status["active_runs"] and not status["queued"]:
        lines.append("  (queue empty)")
    return "\n".join(lines)


def cmd_ls(args: argparse.Namespace) -> int:
    from engine import daemon

    ws = read_workspace(args)
    if ws is None:
        emit({"queue_paused": False, "queue_paused_reason": None, "active_runs": [], "queued": [],
              "engine_running": False}, getattr(args, "json", False), "(queue empty)")
        return 0
    st = daemon.status(ws)
    emit({k: st[k] for k in ("queue_paused", "queue_paused_reason", "active_runs", "queued")} | {"engine_running": st["running"]},
         getattr(args, "json", False), _fmt_queue(st))
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    from engine import queue

    queue.pause(need_workspace(args))
    print("queue paused: running runs continue, nothing new starts")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from engine import queue

    ws = need_workspace(args)
    queue.unpause(ws)
    print("queue resumed")
    start_engine(ws, True)
    return 0


def _move(args: argparse.Namespace, delta: int) -> int:
    from engine import queue

    pos = queue.move(run_workspace(args), args.id, delta * args.n)
    print(f"{args.id} is now number {pos + 1} in the queue")
    return 0


def register(sub) -> None:
    p = sub.add_parser("queue", help="queue runs and manage the queue", description="Without a subcommand: list the queue.")
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_ls)
    qs = p.add_subparsers(dest="queue_command", metavar="SUBCOMMAND")

    a = qs.add_parser("add", help="validate and queue a run; prints its id and returns at once")
    add_run_options(a, required=True)
    a.add_argument("--json", action="store_true", help='print {"id": ...}')
    a.add_argument("--no-start", action="store_true", help="do not start the engine")
    a.set_defaults(func=cmd_add)

    ls = qs.add_parser("ls", help="running and queued runs, in order, with why each waits")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_ls)
    qs.add_parser("pause", help="start nothing new (running runs continue)").set_defaults(func=cmd_pause)
    qs.add_parser("resume", help="start queued runs again").set_defaults(func=cmd_resume)
    for name, delta in (("up", 1), ("down", -1)):
        m = qs.add_parser(name, help=f"move a queued run {name}")
        m.add_argument("id")
        m.add_argument("n", nargs="?", type=int, default=1, help="places (default 1)")
        m.set_defaults(func=lambda args, d=delta: _move(args, d))
