"""`voxtune models | fit | gpus | doctor`: which models fit which GPU, by how much, and why."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from engine.catalog import OUTPUTS, matches
from engine.enums import METHODS
from tui.cli import CliError, emit

DEFAULT_PRESET = "rx-7700-xt"  # the card voxtune was built for; used when none is detected


def register(sub) -> None:
    p = sub.add_parser("models", help="candidate models and whether each method fits a GPU")
    _gpu_args(p)
    p.add_argument("--batch", type=_positive_int, default=1, help="examples per step (default 1)")
    p.add_argument("--audio-seconds", type=_positive_float, default=30.0, metavar="S",
                   help="audio per example in seconds (default 30)")
    p.add_argument("--takes-whole", type=_positive_float, default=None, metavar="S",
                   help="only models that take a clip of S seconds whole, uncut (e.g. 300 for 5-minute audio)")
    p.add_argument("--output", choices=OUTPUTS, default=None,
                   help="rewrite: models that can rewrite text (encoder-decoder, audio LLM); "
                        "delete: models that can only keep or drop what they hear (CTC)")
    p.add_argument("--json", action="store_true", help="print a JSON array only")
    p.set_defaults(func=cmd_models)

    f = sub.add_parser("fit", help="memory estimate for one model and configuration, term by term")
    f.add_argument("model", metavar="MODEL", help="catalog name or hub id (case-insensitive), or a local checkpoint folder")
    f.add_argument("--method", choices=METHODS, required=True)
    f.add_argument("--batch", type=_positive_int, default=1)
    f.add_argument("--audio-seconds", type=_positive_float, default=30.0, metavar="S")
    f.add_argument("--target-tokens", type=_positive_int, default=None, metavar="N",
                   help="target text tokens per example (default: ~200 per minute of speech)")
    f.add_argument("--lora-rank", type=_positive_int, default=None, metavar="R",
                   help="LoRA rank r (default: the family's, as `queue add` uses)")
    f.add_argument("--lora-targets", default=None, metavar="a,b", help="module names (default: the family's)")
    f.add_argument("--optimizer", choices=("adamw", "adamw8bit", "adafactor"), default="adamw")
    f.add_argument("--precision", choices=("auto", "bf16", "fp16", "fp32"), default="auto")
    f.add_argument("--no-checkpointing", dest="checkpointing", action="store_false",
                   help="turn gradient checkpointing off (faster, much more activation memory)")
    f.add_argument("--freeze-audio-encoder", action="store_true")
    f.add_argument("--attention", choices=("math", "sdpa"), default="math",
                   help="math stores attention matrices (RDNA3, the default); sdpa: fused kernels")
    f.add_argument("--trace", action="store_true",
                   help="also trace two real-size training steps on fake tensors (no GPU, no weights; "
                        "seconds to minutes, cached in the workspace) and show the traced terms")
    _gpu_args(f)
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=cmd_fit)

    g = sub.add_parser("gpus", help="GPU presets and the devices on this machine")
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=cmd_gpus)

    d = sub.add_parser("doctor", help="check torch, GPU, bitsandbytes, attention kernels, disk, ffmpeg, HF cache")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_doctor)


def _positive_int(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{v} must be at least 1")
    return n


def _positive_float(v: str) -> float:
    try:
        x = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not a number") from None
    if x <= 0:
        raise argparse.ArgumentTypeError(f"{v} must be positive")
    return x


def _gpu_args(p) -> None:
    x = p.add_mutually_exclusive_group()
    x.add_argument("--gpu", metavar="NAME", help="preset or detected device (`voxtune gpus` lists them)")
    x.add_argument("--vram", type=_positive_float, metavar="GIB", help="GPU memory in GiB (2**30 bytes)")


def resolve_gpu(args) -> tuple[str, float, str]:
    """(label, GiB, how chosen): --vram, --gpu, the first detected device, else the default preset."""
    from engine.gpus import detect, find_gpu

    if getattr(args, "vram", None):
        return f"{args.vram:g} GiB", float(args.vram), "--vram"
    if getattr(args, "gpu", None):
        g = find_gpu(args.gpu)
        return g.name, g.total_gb, "detected" if g.detected else "preset"
    found = detect()
    if found:
        return found[0].name, found[0].total_gb, "detected"
    g = find_gpu(DEFAULT_PRESET, detected=[])
    return g.name, g.total_gb, "preset (no GPU detected)"


def _entry(ref: str):
    from engine.catalog import get_model

    return get_model(ref)


def _measurements(args) -> list[dict]:
    """The store's measurements, without creating a workspace where there is none."""
    from engine.store import Store
    from tui.cli import read_workspace

    ws = read_workspace(args)
    return [] if ws is None else Store(ws).list_measurements()


def _traced(args, e, cfg, est) -> dict:
    """`fit --trace`: the traced peak (cached per model config and options in the workspace),
    with the same runtime/allocator overhead added so the totals compare (GiB)."""
    from dataclasses import asdict

    from engine import trace as tr
    from engine.estimator import overhead_gib
    from engine.workspace import resolve_home

    home = resolve_home(getattr(args, "home", None))
    try:
        result, hit = tr.get_or_trace(home, e.to_dict(), asdict(cfg))
    except tr.TraceFailed as err:
        raise CliError(f"{e.name}: cannot trace {cfg.method}: {err}") from None
    tensors = float(result["total_gb"])
    overhead = overhead_gib(tensors)
    total = tensors + overhead
    analytical = est.total_gb
    return {"total_gb": round(total, 3), "tensors_gb": round(tensors, 3), "overhead_gb": round(overhead, 3),
            "terms": {k: result["terms"].get(k, 0.0) for k in tr.TERMS}, "phases_gb": result.get("phases_gb"), "notes": result.get("notes") or [],
            "seconds": result.get("seconds"), "cached": hit, "unit": "GiB",
            "analytical_error_pct": round(100 * (analytical - total) / total, 1)}


def fmt_params(n: int | None) -> str:
    if not n:
        return "?"
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def model_row(row: dict, gpu_gb: float) -> dict:
    """One `voxtune models --json` element."""
    e = row["entry"]
    p = e.params or {}
    from engine.estimator import recommend

    return {
        "name": e.name, "hub_id": e.hub_id, "family": e.family, "recipe": e.recipe,
        "params_total": p.get("total"),
        "params": {k: p.get(k) for k in ("audio_encoder", "decoder", "other")} | {"source": p.get("source")},
        "window_s": e.window_s, "long_audio": e.long_audio, "whole_audio_s": _finite(e.whole_audio_s),
        "audio_tokens_per_s": e.audio_tokens_per_s, "output": "rewrite" if e.can_rewrite else "delete",
        "model_type": e.model_type, "requires_remote_code": e.requires_remote_code, "notes": e.notes,
        "languages": e.languages, "licence": e.licence,
        "trainable": e.trainable, "reason": e.reason, "supported_methods": e.methods,
        "methods": row["methods"], "gpu_gb": gpu_gb,
        "recommendation": recommend(e, gpu_gb).text if e.params else None,
    }


MARK = {"fits": "✓", "tight": "~", "no": "✗"}


def _finite(x: float) -> float | None:
    """JSON has no infinity: None means no limit."""
    return None if x == float("inf") else x


def cmd_models(args) -> int:
    from engine.estimator import FitConfig, estimate_all

    label, gb, how = resolve_gpu(args)
    rows = estimate_all(gb, FitConfig(batch=args.batch, audio_seconds=args.audio_seconds))
    rows = [r for r in rows if matches(r["entry"], args.takes_whole, args.output)]
    out = [model_row(r, gb) for r in rows]
    lines = [f"GPU: {label} ({gb:g} GiB, {how})",
             f"batch {args.batch}, {args.audio_seconds:g} s audio per example; GiB per method: "
             "✓ fits ~ tight ✗ no"]
    shown = [f"takes {args.takes_whole:g} s whole"] if args.takes_whole else []
    shown += {"rewrite": ["can rewrite (seq2seq, audio LLM)"], "delete": ["can only delete (CTC)"]}.get(args.output, [])
    if shown:
        lines.append("filter: " + ", ".join(shown) + f" ({len(out)} models)")
    lines.append(f"{'model':<24}{'params':>7} {'window':>6}" + "".join(f"{m:>10}" for m in METHODS) + " o")
    for o in out:
        cells = []
        for m in METHODS:
            v = o["methods"].get(m)
            cells.append(f"{MARK[v['verdict']]} {v['total_gb']:.1f}".rjust(10) if v else "?".rjust(10))
        win = f"{o['window_s']:g}s"
        name = o["name"] if o["trainable"] else o["name"] + "*"
        lines.append(f"{name[:23]:<24}{fmt_params(o['params_total']):>7} {win:>6}" + "".join(cells)
                     + (" r" if o["output"] == "rewrite" else " d"))
    lines.append("* estimates only: voxtune cannot train it (`voxtune fit MODEL` says why)")
    lines.append("o (output): r can rewrite text; d CTC, monotonic: can drop words, not rewrite")
    lines.append("`voxtune fit MODEL --method M` explains one estimate term by term.")
    emit(out, args.json, "\n".join(lines))
    return 0


def cmd_fit(args) -> int:
    from engine import calibration
    from engine.estimator import FitConfig, estimate, recommend

    e = _entry(args.model)
    if not e.params and e.local_path:  # no safetensors headers to read: build it on meta, in a child
        from engine.params import compute_in_subprocess

        e.params = compute_in_subprocess(e.to_dict())
    if not e.params:
        raise CliError(f"{e.name}: no parameter counts: the folder has no *.safetensors and transformers "
                       f"cannot build its config; pick a catalog model of the same size")
    targets = [t.strip() for t in args.lora_targets.split(",") if t.strip()] if args.lora_targets else None
    cfg = FitConfig(method=args.method, precision=args.precision, optimizer=args.optimizer, batch=args.batch,
                    gradient_checkpointing=args.checkpointing, lora_rank=args.lora_rank, lora_targets=targets,
                    audio_seconds=args.audio_seconds, target_tokens=args.target_tokens,
                    freeze_audio_encoder=args.freeze_audio_encoder, attention=args.attention)
    try:
        est = estimate(e, cfg)
    except ValueError as err:  # FitConfig.validate: the message names the option
        raise CliError(str(err)) from None
    label, gb, how = resolve_gpu(args)
    measured = calibration.compare(est, _measurements(args), e, cfg)
    rec = recommend(e, gb, replace(cfg, batch=1))
    out = {"model": e.name, "method": cfg.method, "unit": "GiB", "gpu": label, "gpu_gb": gb, "total_gb": round(est.total_gb, 3),
           "breakdown": est.breakdown, "fits": est.fits(gb), "verdict": est.verdict(gb),
           "max_batch": est.max_batch(gb), "trainable_params": est.trainable_params, "details": est.details,
           "recommendation": rec.text, "measured": measured}
    if cfg.method not in e.methods:
        out["warning"] = f"voxtune cannot train {e.name} with {cfg.method}: {e.reason or 'method not supported'}"
    lines = [f"{e.name}, {cfg.method}, batch {cfg.batch}, {cfg.audio_seconds:g} s audio "
             f"({est.details['text_tokens']} text tokens, {est.details['encoder_chunks']} x "
             f"{est.details['encoder_frames']} encoder frames), checkpointing {'on' if cfg.gradient_checkpointing else 'off'}"]
    for k, v in est.breakdown.items():
        lines.append(f"  {k:<12}{v:8.2f} GiB")
    lines.append(f"  {'total':<12}{est.total_gb:8.2f} GiB  on {label} ({gb:g} GiB): "
                 f"{ {'fits': 'fits', 'tight': 'fits, tight', 'no': 'does NOT fit'}[est.verdict(gb)] }; "
                 f"largest batch {out['max_batch']}")
    if measured:
        lines.append(f"  measured    {measured['measured_gb']:8.2f} GiB  ({measured['device']}, run {measured['run_id']}; "
                     f"estimate {measured['error_pct']:+.0f}%)")
    points = calibration.gpu_points(e.name, cfg.method)
    if points:
        out["gpu_points"] = points
        for pt in points:
            lines.append(f"  GPU point   {pt.get('peak_reserved_gb') or 0:8.2f} GiB   reserved, batch {pt.get('batch')}, "
                         f"{pt.get('audio_seconds'):g} s ({pt.get('device')}, {pt.get('date')}; estimate then "
                         f"{pt.get('estimate_gb')} GiB)")
    if getattr(args, "trace", False):
        traced = _traced(args, e, cfg, est)
        out["traced"] = traced
        lines.append(f"  traced (fake tensors, {traced['seconds']:g} s{', cached' if traced['cached'] else ''}):")
        for k, v in traced["terms"].items():
            lines.append(f"    {k:<12}{v:8.2f} GiB")
        lines.append(f"    {'peak':<12}{traced['tensors_gb']:8.2f} GiB   + overhead {traced['overhead_gb']:.2f} = "
                     f"{traced['total_gb']:.2f} GiB; analytical {traced['analytical_error_pct']:+.1f}% vs traced")
        for n in traced.get("notes") or []:
            lines.append(f"    note: {n}")
    if "warning" in out:
        lines.append("  warning: " + out["warning"])
    lines.append(rec.text)
    emit(out, args.json, "\n".join(lines))
    return 0


def cmd_gpus(args) -> int:
    from engine.gpus import detect, presets

    found = detect()
    out = {"detected": [g.to_dict() for g in found], "presets": [g.to_dict() for g in presets()]}
    lines = ["Detected:" if found else "Detected: no GPU (CPU only)"]
    for g in found:
        util = f", {g.util_percent:.0f}% busy" if g.util_percent is not None else ""
        lines.append(f"  {g.label}{util}  [{g.vendor}, {g.arch or '?'}, via {g.source}]")
    lines.append("Presets (use with --gpu KEY):")
    for g in presets():
        lines.append(f"  {g.key:<12} {g.name} ({g.total_gb:g} GiB)")
    emit(out, args.json, "\n".join(lines))
    return 0


def cmd_doctor(args) -> int:
    from engine.doctor import run_doctor
    from engine.workspace import resolve_home
    from tui.cli import read_workspace

    ws = read_workspace(args)
    home = ws.home if ws is not None else resolve_home(getattr(args, "home", None))
    while not home.exists() and home != home.parent:  # the disk it will be created on
        home = home.parent
    steps = iter(range(1, 100))
    found = run_doctor(home, progress=lambda check: print(f"doctor [{next(steps)}] {check}...", file=sys.stderr,
                                                          flush=True))
    icon = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "info": "info"}
    lines = []
    for f in found:
        lines.append(f"[{icon[f.status]}] {f.check}: {f.detail}")
        if f.fix and f.status != "ok":
            lines.append(f"       fix: {f.fix}")
    emit([f.to_dict() for f in found], args.json, "\n".join(lines))
    return 1 if any(f.status == "fail" for f in found) else 0
