"""`voxtune runs`: list, inspect, cancel, retry, resume, clone, remove, tail logs, export."""

from __future__ import annotations

import argparse
import sys
import time

from tui.cli import emit, need_workspace, read_workspace, run_workspace
from tui.cli.queue import add_run_options, run_options, start_engine
from engine.compare import method_label, scored_split
from engine.enums import RunStatus

FOLLOW_POLL_S = 0.5


def _fmt_num(v, spec: str = ".3f") -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def _row(ws, r: dict) -> dict:
    from engine.progress import read_progress
    from engine.runfiles import RunFiles

    prog = read_progress(RunFiles(ws.run_dir(r["id"])))
    return {"id": r["id"], "status": r["status"], "reason": r.get("status_reason"), "model": r.get("model"),
            "method": method_label(r), "dataset": r.get("dataset"), "priority": r.get("priority", 0),
            "created_at": r.get("created_at"), "step": prog["step"], "max_steps": prog["max_steps"],
            "loss": prog["loss"], "wer": prog["wer"], "split": scored_split(r), "eval_only": bool(r.get("eval_only")),
            "best_wer": prog["best_wer"], "eta_s": prog["eta_s"],
            "slurm_job_id": r.get("slurm_job_id")}


def cmd_ls(args: argparse.Namespace) -> int:
    from engine.store import Store

    ws = read_workspace(args)
    if ws is None:
        emit([], args.json, "(no runs)")
        return 0
    store = Store(ws)
    runs = sorted(store.list_runs(), key=lambda r: r.get("seq", 0))
    if args.status:
        runs = [r for r in runs if r["status"] == args.status]
    rows = [_row(ws, r) for r in runs]
    lines = []
    if store.get_meta("queue_paused", False):
        lines.append(f"queue paused: {store.get_meta('queue_paused_reason') or ''}")
    lines.append(f"{'ID':<40} {'STATUS':<11} {'STEP':>11} {'LOSS':>7} {'WER':>6} {'SPLIT':<10} REASON")
    for r in rows:
        step = "evaluation" if r["eval_only"] else f"{r['step']}/{r['max_steps']}" if r["step"] is not None else "-"
        wer_split = r["split"] if r["wer"] is not None else ""
        lines.append(f"{r['id']:<40} {r['status']:<11} {step:>11} {_fmt_num(r['loss']):>7} "
                     f"{_fmt_num(r['wer']):>6} {wer_split:<10} {r['reason'] or ''}".rstrip())
    if not rows:
        lines.append("(no runs: `voxtune queue add --model M --dataset D --method lora`)")
    emit(rows, args.json, "\n".join(lines))
    known = {r["id"] for r in store.list_runs()}
    lost = [p.parent.name for p in ws.runs_dir.glob("*/config.json") if p.parent.name not in known] if ws.runs_dir.is_dir() else []
    if lost:  # folders the store does not list (a lost or replaced store): say how to get them back
        print(f"note: {len(lost)} run folder(s) in {ws.runs_dir} are not in the index ({', '.join(sorted(lost)[:3])}"
              f"{', ...' if len(lost) > 3 else ''}); `voxtune runs rebuild` lists them again", file=sys.stderr)
    return 0


def _require(ws, run_id: str) -> dict:
    from engine.store import Store

    return Store(ws).require_run(run_id)


def cmd_show(args: argparse.Namespace) -> int:
    from engine.progress import read_progress
    from engine.runfiles import RunFiles, read_json

    ws = run_workspace(args)
    run = _require(ws, args.id)
    files = RunFiles(ws.run_dir(args.id))
    prog = read_progress(files)
    config = read_json(files.config, {})
    result = read_json(files.result, None)
    split = scored_split(run)
    out = {"id": run["id"], "status": run["status"], "reason": run.get("status_reason"),
           "eval_only": bool(run.get("eval_only")), "method": method_label(run), "split": split, "run": run,
           "config": config, "progress": prog, "metrics": run.get("metrics") or prog["last_eval"],
           "best": run.get("best"), "peak_memory": run.get("peak_memory"), "result": result,
           "folder": str(files.root)}
    lines = [f"{run['id']}: {run['status']}" + (f" -- {run.get('status_reason')}" if run.get("status_reason") else "")]
    if out["eval_only"]:  # trains nothing: no method, steps, grad-accum or learning rate
        lines.append(f"  evaluation only: model {config.get('model') or run.get('model')}, dataset "
                     f"{config.get('dataset') or run.get('dataset')}, {split} split, batch {config.get('batch_size')}, "
                     f"estimate {_fmt_num(config.get('estimate_gb') or run.get('estimate_gb'), '.1f')} GiB")
    else:
        lines.append(f"  model {config.get('model')} ({config.get('method')}), dataset {config.get('dataset')}, "
                     f"batch {config.get('batch_size')} x {config.get('grad_accum')}, lr {config.get('lr')}, "
                     f"estimate {_fmt_num(config.get('estimate_gb'), '.1f')} GiB")
    if config.get("defaults_note") and not out["eval_only"]:
        lines.append(f"  why: {config['defaults_note']}")
    if config.get("eval_dataset"):
        lines.append(f"  evaluates on {config['eval_dataset']}")
    if (result or {}).get("stopped_early_at"):
        lines.append(f"  stopped early at step {result['stopped_early_at']} (no better validation WER)")
    if run.get("slurm_job_id"):
        lines.append(f"  slurm job {run['slurm_job_id']}" + (f" ({run['slurm_state'].lower()})" if run.get("slurm_state") else ""))
    if prog["step"] is not None and not out["eval_only"] and prog["max_steps"]:
        eta = f", eta {int(prog['eta_s'])} s" if prog["eta_s"] is not None and run["status"] == RunStatus.RUNNING else ""
        lines.append(f"  progress: step {prog['step']}/{prog['max_steps']}{eta}, loss {_fmt_num(prog['loss'])}")
    if out["metrics"]:
        m = out["metrics"]
        lines.append(f"  last evaluation ({split} split): " + ", ".join(f"{k} {_fmt_num(m[k])}" for k in ("wer", "cer", "eval_loss", "wer_normalized") if k in m))
    if run.get("best"):
        lines.append(f"  best: {run['best']}")
    if run.get("peak_memory"):
        lines.append("  peak memory: " + ", ".join(f"{k} {v}" for k, v in run["peak_memory"].items() if v is not None))
    for h in run.get("history", []):
        lines.append(f"  {time.strftime('%m-%d %H:%M:%S', time.localtime(h['time']))} {h['status']}"
                     + (f": {h['reason']}" if h.get("reason") else ""))
    lines.append(f"  folder: {files.root}")
    if getattr(args, "clips", None):
        from engine import clips

        records = clips.read(files.root)
        out["worst_clips"] = clips.worst(records, args.clips)
        lines += clips.format_worst(records, args.clips)
    emit(out, args.json, "\n".join(lines))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from engine import queue

    now = queue.cancel(run_workspace(args), args.id)
    print(f"{args.id}: cancelled" if now == RunStatus.CANCELLED else
          f"{args.id}: cancel requested; the worker saves a checkpoint and stops (forced after a timeout)")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    from engine import queue

    ws = run_workspace(args)
    new = queue.retry(ws, args.id)
    emit({"id": new}, args.json, new)
    start_engine(ws, args.json)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from engine import queue

    ws = run_workspace(args)
    paused, _ = queue.is_paused(ws)
    has_ckpt = queue.resume(ws, args.id)  # asked for by name: it starts even while the queue is paused
    print(f"{args.id} resumes " + ("from its last checkpoint" if has_ckpt else "from step 0 (no checkpoint yet)")
          + ("; the queue stays paused for the other runs (`voxtune queue resume` starts them)" if paused else ""))
    start_engine(ws, True)
    return 0


def cmd_clone(args: argparse.Namespace) -> int:
    from engine import queue

    ws = run_workspace(args)
    new = queue.clone(ws, args.id, **run_options(args))
    emit({"id": new}, args.json, new)
    start_engine(ws, args.json)
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from engine import queue

    dest = queue.remove(run_workspace(args), args.id)
    print(f"{args.id} removed" + (f"; its folder is in {dest}" if dest else ""))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from engine.runfiles import RunFiles, read_lines_from, tail_lines
    from engine.store import Store

    ws = run_workspace(args)
    _require(ws, args.id)
    path = RunFiles(ws.run_dir(args.id)).log
    lines, offset = tail_lines(path, args.lines)
    for ln in lines:
        sys.stdout.write(ln + "\n")
    sys.stdout.flush()
    if not args.follow:
        return 0
    store = Store(ws)
    while True:
        new, offset = read_lines_from(path, offset)
        for ln in new:
            sys.stdout.write(ln + "\n")
        sys.stdout.flush()
        if not new:
            run = store.get_run(args.id)
            if run is None or run["status"] not in (RunStatus.QUEUED, RunStatus.RUNNING):
                new, offset = read_lines_from(path, offset)
                for ln in new:
                    sys.stdout.write(ln + "\n")
                return 0
            time.sleep(FOLLOW_POLL_S)


def cmd_export(args: argparse.Namespace) -> int:
    from engine import export

    ws = run_workspace(args)
    _require(ws, args.id)
    out = export.export_run(ws, args.id, merge=args.merge, out=args.out, format=args.format,
                            quantization=args.quantization)
    print(f"exported to {out} (model card: {out / 'README.md'})")
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    from engine.rebuild import rebuild

    rep = rebuild(need_workspace(args), force=args.force)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(rep["runs"].items())) or "none"
    lines = [f"rebuilt the run index from runs/*/: {len(rep['restored'])} run(s) ({counts}); "
             f"datasets: {', '.join(rep['datasets']) or '-'}"]
    if rep["kept"]:
        lines.append(f"the previous store is kept as {rep['kept']}")
    lines += [f"skipped {s['folder']}: {s['reason']}" for s in rep["skipped"]] + rep["notes"]
    if rep["paused"]:
        lines.append("the queue is paused: check `voxtune runs ls`, then `voxtune queue resume`")
    emit(rep, args.json, "\n".join(lines))
    return 0


def register(sub) -> None:
    p = sub.add_parser("runs", help="list and manage runs")
    rs = p.add_subparsers(dest="runs_command", metavar="SUBCOMMAND")
    ls = rs.add_parser("ls", help="all runs with status, progress and WER")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--status", choices=RunStatus.values())
    ls.set_defaults(func=cmd_ls)
    p.set_defaults(func=cmd_ls, json=False, status=None)

    show = rs.add_parser("show", help="config, status, progress, last evaluation, peak memory")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    show.add_argument("--clips", type=int, nargs="?", const=5, default=None, metavar="N",
                      help="also print the N clips with the highest WER in the last evaluation, with word "
                           "diffs (default 5)")
    show.set_defaults(func=cmd_show)

    c = rs.add_parser("cancel", help="cancel a queued run, or stop a running one after a checkpoint")
    c.add_argument("id")
    c.set_defaults(func=cmd_cancel)
    r = rs.add_parser("retry", help="queue a failed/cancelled/interrupted run again as a new run")
    r.add_argument("id")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_retry)
    r = rs.add_parser("resume", help="continue an interrupted/cancelled/failed run from its last checkpoint")
    r.add_argument("id")
    r.set_defaults(func=cmd_resume)
    cl = rs.add_parser("clone", help="queue a copy of a run with changed options")
    cl.add_argument("id")
    add_run_options(cl, required=False)
    cl.add_argument("--json", action="store_true")
    cl.set_defaults(func=cmd_clone)
    rm = rs.add_parser("rm", help="forget a run (its folder moves to .voxtune/trash)")
    rm.add_argument("id")
    rm.set_defaults(func=cmd_rm)
    lg = rs.add_parser("logs", help="print the worker's log")
    lg.add_argument("id")
    lg.add_argument("-f", "--follow", action="store_true", help="keep printing until the run ends")
    lg.add_argument("-n", "--lines", type=int, default=200)
    lg.set_defaults(func=cmd_logs)
    rb = rs.add_parser("rebuild", help="index the runs found in runs/*/ again (after the store was lost or damaged)",
                       description="Write a fresh store from runs/*/config.json, result.json and metrics.jsonl. "
                                   "A damaged store is kept as voxtune.json.corrupt-TIME; a readable one is only "
                                   "replaced with --force (and kept as voxtune.json.bak-TIME).")
    rb.add_argument("--force", action="store_true", help="rebuild even though the store is readable")
    rb.add_argument("--json", action="store_true")
    rb.set_defaults(func=cmd_rebuild)
    from engine.export import CT2_DEFAULT_QUANTIZATION, CT2_QUANTIZATIONS, FORMATS

    ex = rs.add_parser(
        "export", help="save the fine-tuned model with a model card (hf adapter/merged, or ct2 for faster-whisper)",
        description="Write the run's best (else last) checkpoint as a folder other tools load, with a model "
                    "card (README.md) ready for `huggingface-cli upload`. Formats: hf = Hugging Face "
                    "Transformers/PEFT folder (a LoRA adapter, or a standalone model with --merge); ct2 = "
                    "CTranslate2 model for faster-whisper (Whisper family; LoRA runs are merged first; needs "
                    "pip install 'voxtune[ct2]'). whisper.cpp (ggml) is not offered: see the README.")
    ex.add_argument("id")
    ex.add_argument("--format", choices=FORMATS, default="hf",
                    help="hf (default): Transformers/PEFT folder; ct2: CTranslate2 folder for faster-whisper")
    ex.add_argument("--quantization", choices=CT2_QUANTIZATIONS, metavar="TYPE",
                    help=f"ct2 weight type: {', '.join(CT2_QUANTIZATIONS)} (default {CT2_DEFAULT_QUANTIZATION})")
    ex.add_argument("--merge", action="store_true", help="hf: merge LoRA weights into the base model")
    ex.add_argument("--out", metavar="DIR", help="target folder (default: runs/ID/export[-merged|-ct2-TYPE])")
    ex.set_defaults(func=cmd_export)
