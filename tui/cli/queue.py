"""`voxtune queue`: add runs, list the queue, pause/resume it, reorder it."""

from __future__ import annotations

import argparse
import sys

from tui.cli import CliError, emit, workspace


def add_run_options(p: argparse.ArgumentParser, required: bool) -> None:
    """Options shared by `queue add` and `runs clone` (clone: all optional, they change the source's)."""
    p.add_argument("--model", required=required, help="catalog name, hub id or local checkpoint folder")
    p.add_argument("--dataset", required=required, help="dataset name (voxtune data ls)")
    p.add_argument("--method", required=required, choices=("full", "lora", "qlora", "lora8"))
    p.add_argument("--eval-only", action="store_true", default=None, help="evaluate without training")
    p.add_argument("--split", choices=("validation", "test", "all"), help="split to evaluate (eval-only)")
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--max-steps", type=int, metavar="N")
    steps.add_argument("--epochs", type=float, metavar="E")
    p.add_argument("--batch", "--batch-size", dest="batch_size", type=int, metavar="B")
    p.add_argument("--grad-accum", type=int, metavar="G")
    p.add_argument("--lr", type=float, metavar="LR")
    p.add_argument("--warmup-steps", type=int, metavar="N")
    p.add_argument("--lora-rank", type=int, metavar="R")
    p.add_argument("--lora-alpha", type=float, metavar="A")
    p.add_argument("--eval-every", type=int, metavar="N")
    p.add_argument("--save-every", type=int, metavar="N")
    p.add_argument("--seed", type=int, metavar="S")
    p.add_argument("--priority", type=int, metavar="P", help="higher runs first (default 0)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp16", "fp32"))
    p.add_argument("--optimizer", choices=("adamw", "adamw8bit", "adafactor"))
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--freeze-audio-encoder", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--language", help="language code for the decoder prompt (default: the model's)")
    p.add_argument("--max-new-tokens", type=int, metavar="N")
    p.add_argument("--report-to", metavar="LIST",
                   help="also write metrics for tensorboard and/or trackio (comma-separated, or none); "
                        "local files in the run folder, nothing is sent anywhere")


RUN_OPTION_DESTS = ("model", "dataset", "method", "eval_only", "split", "max_steps", "epochs", "batch_size",
                    "grad_accum", "lr", "warmup_steps", "lora_rank", "lora_alpha", "eval_every", "save_every",
                    "seed", "priority", "precision", "optimizer", "gradient_checkpointing",
                    "freeze_audio_encoder", "language", "max_new_tokens", "report_to")


def run_options(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in RUN_OPTION_DESTS if getattr(args, k, None) is not None}


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
    try:
        run_id = queue.add(ws, **run_options(args))
    except queue.QueueError as e:
        raise CliError(str(e)) from e
    emit({"id": run_id}, args.json, run_id)
    if not args.no_start:
        start_engine(ws, args.json)
    return 0


def _fmt_queue(status: dict) -> str:
    lines = []
    if status["queue_paused"]:
        lines.append(f"queue paused: {status['queue_paused_reason'] or ''}".rstrip(": "))
    lines.append(f"engine: {'running, pid ' + str(status['pid']) if status['running'] else 'not running'}")
    for a in status["active_runs"]:
        step = f"step {a['step']}/{a['max_steps']}" if a["step"] is not None else "starting"
        lines.append(f"  running  {a['id']}  {step}" + ("  (cancelling)" if a["cancel_requested"] else ""))
    for i, q in enumerate(status["queued"], 1):
        lines.append(f"  {i:>3}.    {q['id']}  {q['reason'] or ''}".rstrip())
    if not status["active_runs"] and not status["queued"]:
        lines.append("  (queue empty)")
    return "\n".join(lines)


def cmd_ls(args: argparse.Namespace) -> int:
    from engine import daemon

    st = daemon.status(workspace(args))
    emit({k: st[k] for k in ("queue_paused", "queue_paused_reason", "active_runs", "queued")} | {"engine_running": st["running"]},
         getattr(args, "json", False), _fmt_queue(st))
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    from engine import queue

    queue.pause(workspace(args))
    print("queue paused: running runs continue, nothing new starts")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from engine import queue

    ws = workspace(args)
    queue.unpause(ws)
    print("queue resumed")
    start_engine(ws, True)
    return 0


def _move(args: argparse.Namespace, delta: int) -> int:
    from engine import queue

    try:
        pos = queue.move(workspace(args), args.id, delta * args.n)
    except queue.QueueError as e:
        raise CliError(str(e)) from e
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
