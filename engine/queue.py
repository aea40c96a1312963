"""Queue operations shared by the CLI and the TUI: validate, resolve, record.

Everything here is a store/file operation; the daemon notices the change on its next poll.
Validation happens before anything is written, and each error names the field at fault.
Light module: no torch & co. (library versions come from importlib.metadata).
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

from engine import reporting
from engine.errors import VoxtuneError
from engine.runfiles import RunFiles, atomic_write_json, read_json
from engine.store import Store, StoreError
from engine.workspace import Workspace

METHODS = ("full", "lora", "qlora", "lora8")
SPLITS = ("validation", "test", "all")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
OPTIMIZERS = ("adamw", "adamw8bit", "adafactor")
VERSIONED = ("torch", "torchaudio", "transformers", "peft", "accelerate", "bitsandbytes", "jiwer", "tinydb", "textual")

# Fields a caller may set; everything else in config.json is derived.
OPTION_FIELDS = (
    "model", "method", "dataset", "eval_only", "split", "max_steps", "epochs", "batch_size", "grad_accum",
    "lr", "warmup_steps", "lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "eval_every",
    "save_every", "seed", "precision", "optimizer", "gradient_checkpointing", "freeze_audio_encoder",
    "trust_remote_code", "max_new_tokens", "language", "priority", "report_to",
)


class QueueError(VoxtuneError):
    """A user-facing refusal; `field` names the option at fault (None: not one field)."""

    def __init__(self, message: str, field: str | None = None, **kw) -> None:
        super().__init__(message, field=field, **kw)


# -- defaults -------------------------------------------------------------------------------
def defaults(entry: Any, method: str) -> dict:
    """Sensible starting values for a model family and method (shown by the new-run form)."""
    family = getattr(entry, "family", "seq2seq")
    big = family in ("audio-llm",)
    adapter = method in ("lora", "qlora", "lora8")
    if adapter:
        lr = 1e-4 if big else 1e-3 if family == "seq2seq" else 3e-4
    else:
        lr = 1e-5 if family in ("seq2seq", "speech-to-text") else 5e-5 if family == "ctc" else 1e-5
    return {
        "max_steps": 300,
        "epochs": None,
        "batch_size": 1 if big else 4,
        "grad_accum": 8 if big else 2,
        "lr": lr,
        "warmup_steps": 30,
        "lora_rank": 32 if adapter else None,
        "lora_alpha": 64 if adapter else None,
        "lora_dropout": 0.05 if adapter else None,
        "lora_targets": None,  # family default
        "eval_every": 50,
        "save_every": 50,
        "seed": 42,
        "precision": "auto",
        "optimizer": "adamw8bit" if method == "qlora" else "adamw",
        "gradient_checkpointing": True,  # the estimator assumes it too; it is what fits a 12 GB card
        "freeze_audio_encoder": big,
        "trust_remote_code": False,
        "max_new_tokens": 440 if family == "seq2seq" else 1024,
        "language": None,
        "split": "validation",
        "eval_only": False,
        "report_to": [],  # metric sinks besides metrics.jsonl: tensorboard, trackio (engine.reporting)
    }


def library_versions() -> dict:
    """Versions recorded with every run, read from package metadata (importing nothing heavy)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("voxtune", *VERSIONED):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


# -- validation -----------------------------------------------------------------------------
def _model_entry(model: str) -> Any:
    from engine import catalog

    try:
        return catalog.get_model(model)
    except catalog.UnknownModel as e:
        raise QueueError(f"model: {e}", "model") from e


def _positive(cfg: dict, name: str, kind: type, allow_none: bool = False, zero_ok: bool = False) -> None:
    v = cfg.get(name)
    if v is None:
        if allow_none:
            return
        raise QueueError(f"{name}: a value is required", name)
    if isinstance(v, bool):
        raise QueueError(f"{name}: expected a number, got {v!r}", name)
    try:
        num = kind(v)
    except (TypeError, ValueError):
        raise QueueError(f"{name}: expected {'an integer' if kind is int else 'a number'}, got {v!r}", name)
    if kind is int and float(v) != num:
        raise QueueError(f"{name}: expected an integer, got {v!r}", name)
    if num < 0 or (num == 0 and not zero_ok):
        raise QueueError(f"{name}: must be {'>= 0' if zero_ok else '> 0'}, got {v!r}", name)
    cfg[name] = num


def _choice(cfg: dict, name: str, choices: tuple) -> None:
    if cfg.get(name) not in choices:
        raise QueueError(f"{name}: {cfg.get(name)!r} is not one of {', '.join(choices)}", name)


def _validate(cfg: dict, entry: Any) -> None:
    _choice(cfg, "method", METHODS)
    methods = tuple(getattr(entry, "methods", METHODS) or ())
    if cfg["method"] not in methods and not cfg.get("eval_only"):  # evaluation trains nothing
        raise QueueError(
            f"method: {cfg['model']} does not support {cfg['method']!r}; it supports {', '.join(methods) or 'nothing'}",
            "method",
        )
    if not cfg.get("eval_only") and getattr(entry, "trainable", True) is False:
        why = getattr(entry, "reason", None) or "the catalog marks it as not trainable"
        raise QueueError(f"model: {cfg['model']} cannot be fine-tuned here ({why}); use --eval-only", "model")
    _choice(cfg, "split", SPLITS)
    _choice(cfg, "precision", PRECISIONS)
    _choice(cfg, "optimizer", OPTIMIZERS)
    _positive(cfg, "lr", float)
    _positive(cfg, "batch_size", int)
    _positive(cfg, "grad_accum", int)
    _positive(cfg, "warmup_steps", int, zero_ok=True)
    _positive(cfg, "eval_every", int)
    _positive(cfg, "save_every", int)
    _positive(cfg, "max_new_tokens", int)
    _positive(cfg, "seed", int, zero_ok=True)
    if cfg.get("epochs") is not None:
        _positive(cfg, "epochs", float)
        cfg["max_steps"] = None
    else:
        _positive(cfg, "max_steps", int)
    if cfg["method"] != "full":
        _positive(cfg, "lora_rank", int)
        _positive(cfg, "lora_alpha", float)
        v = cfg.get("lora_dropout")
        if v is None or not (0 <= float(v) < 1):
            raise QueueError(f"lora_dropout: must be in [0, 1), got {v!r}", "lora_dropout")
    targets = cfg.get("lora_targets")
    if targets is not None and (not isinstance(targets, list) or not all(isinstance(t, str) and t for t in targets)):
        raise QueueError(f"lora_targets: expected a list of module names, got {targets!r}", "lora_targets")
    try:  # the one place `report_to` is checked: known names, packages installed
        cfg["report_to"] = reporting.parse(cfg.get("report_to"))
        reporting.require_installed(cfg["report_to"])
    except reporting.ReportingError as e:
        raise QueueError(str(e), "report_to") from e
    try:
        cfg["priority"] = int(cfg.get("priority") or 0)
    except (TypeError, ValueError):
        raise QueueError(f"priority: expected an integer, got {cfg.get('priority')!r}", "priority")


def _estimate_gb(config: dict) -> float | None:
    """The estimator's peak for this config; None when it cannot say (admission then trusts luck)."""
    try:
        from engine import estimator

        est = estimator.estimate_for_run(config)
    except Exception:  # an estimator bug must not block queueing; the daemon still runs it
        return None
    for attr in ("total_gb", "total", "peak_gb"):
        if hasattr(est, attr):
            est = getattr(est, attr)
            break
    try:
        return round(float(est), 2) if est is not None else None
    except (TypeError, ValueError):
        return None


# -- operations ------------------------------------------------------------------------------
def resolve(ws: Workspace, store: Store, **options: Any) -> dict:
    """Validate options and build the full config.json (without run_id)."""
    unknown = set(options) - set(OPTION_FIELDS)
    if unknown:
        raise QueueError(f"unknown option(s): {', '.join(sorted(unknown))}", sorted(unknown)[0])
    for name in ("model", "dataset", "method"):
        if not options.get(name):
            raise QueueError(f"{name}: required", name)
    entry = _model_entry(str(options["model"]))
    _choice({"method": options["method"]}, "method", METHODS)
    cfg = defaults(entry, options["method"])
    cfg.update({k: v for k, v in options.items() if v is not None})
    if options.get("eval_only"):
        cfg["eval_only"] = True
    dataset = store.get_dataset(str(options["dataset"]))
    if dataset is None and str(options["dataset"]) == "demo":  # the shipped demo is in every workspace
        from engine.datasets import ensure_demo

        dataset = ensure_demo(ws)
    if dataset is None:
        known = [d["name"] for d in store.list_datasets()]
        hint = f"known: {', '.join(known)}" if known else "import one with `voxtune data import`"
        raise QueueError(f"dataset: no dataset {options['dataset']!r} ({hint})", "dataset")
    _validate(cfg, entry)
    local = Path(str(options["model"])).expanduser()
    model_ref = str(local.resolve()) if local.is_dir() else (getattr(entry, "hub_id", None) or str(options["model"]))
    cfg.update(
        model=str(options["model"]),
        model_ref=model_ref,
        family=getattr(entry, "family", None),
        recipe=getattr(entry, "recipe", None),
        dataset=dataset["name"],
        dataset_manifest=dataset.get("manifest"),
        dataset_manifest_hash=dataset.get("manifest_hash"),
        workspace=str(ws.home),
        resume_from_checkpoint=None,
        versions=library_versions(),
    )
    cfg["estimate_gb"] = _estimate_gb(cfg)
    return cfg


def add(ws: Workspace, parent: str | None = None, **options: Any) -> str:
    """Validate, resolve, create runs/<id>/ with config.json, insert the record. Returns the id."""
    store = Store(ws)
    cfg = resolve(ws, store, **options)
    priority = cfg.pop("priority", 0)
    with store.locked():
        run_id = store.new_run_id(cfg["model"] if not Path(cfg["model"]).is_dir() else Path(cfg["model"]).name,
                                  "eval" if cfg.get("eval_only") else cfg["method"])
        cfg["run_id"] = run_id
        files = RunFiles(ws.run_dir(run_id)).create()
        atomic_write_json(files.config, cfg)
        record = {
            "id": run_id, "priority": priority, "model": cfg["model"], "method": cfg["method"],
            "dataset": cfg["dataset"], "eval_only": bool(cfg.get("eval_only")), "status": "queued",
            "estimate_gb": cfg.get("estimate_gb"), "cancel_requested": False, "resume": False,
            "pid": None, "pid_create_time": None,
        }
        if parent:
            record["parent"] = parent
        store.add_run(record)
    return run_id


def _config(ws: Workspace, run_id: str) -> dict:
    cfg = read_json(RunFiles(ws.run_dir(run_id)).config)
    if cfg is None:
        raise QueueError(f"run {run_id}: {ws.run_dir(run_id) / 'config.json'} is missing; the run cannot be re-created")
    return cfg


def _require(store: Store, run_id: str) -> dict:
    try:
        return store.require_run(run_id)
    except StoreError as e:
        raise QueueError(str(e), "id") from e


def cancel(ws: Workspace, run_id: str) -> str:
    """Queued: cancelled at once. Running: ask the worker to checkpoint and stop (the daemon
    forces it after a timeout). Returns the status the run has now."""
    store = Store(ws)
    with store.locked():
        run = _require(store, run_id)
        if run["status"] == "queued":
            store.set_status(run_id, "cancelled", "cancelled before it started")
            return "cancelled"
        if run["status"] != "running":
            raise QueueError(f"run {run_id} is {run['status']}; only queued or running runs can be cancelled")
        RunFiles(ws.run_dir(run_id)).cancel_request.write_text(f"{time.time()}\n")
        store.update_run(run_id, cancel_requested=True, cancel_requested_at=time.time())
        return "running"


def clone(ws: Workspace, run_id: str, **changes: Any) -> str:
    """A new run from another's options, with `changes` applied (validated like `add`)."""
    store = Store(ws)
    run = _require(store, run_id)
    cfg = _config(ws, run_id)
    options = {k: cfg.get(k) for k in OPTION_FIELDS if k in cfg}
    options["priority"] = run.get("priority", 0)
    options.update({k: v for k, v in changes.items() if v is not None})
    if changes.get("epochs") is not None:
        options.pop("max_steps", None)
    elif changes.get("max_steps") is not None:
        options["epochs"] = None
    if options.get("method") == "full":
        for k in ("lora_rank", "lora_alpha", "lora_dropout"):
            options[k] = None
    options = {k: v for k, v in options.items() if v is not None}
    return add(ws, parent=run_id, **options)


def retry(ws: Workspace, run_id: str) -> str:
    """A failed, cancelled or interrupted run again from scratch, as a new run (folders are never reused)."""
    run = _require(Store(ws), run_id)
    if run["status"] not in ("failed", "cancelled", "interrupted"):
        raise QueueError(f"run {run_id} is {run['status']}; only failed, cancelled or interrupted runs can be retried")
    return clone(ws, run_id)


def resume(ws: Workspace, run_id: str) -> bool:
    """Requeue an interrupted/cancelled/failed run to continue from its last checkpoint.

    Returns whether a checkpoint exists (False: it will start again from step 0)."""
    store = Store(ws)
    files = RunFiles(ws.run_dir(run_id))
    with store.locked():
        run = _require(store, run_id)
        if run["status"] not in ("interrupted", "cancelled", "failed"):
            raise QueueError(f"run {run_id} is {run['status']}; only interrupted, cancelled or failed runs can be resumed")
        cfg = _config(ws, run_id)
        cfg["resume_from_checkpoint"] = "last"
        atomic_write_json(files.config, cfg)
        if files.result.exists():  # keep the earlier attempt's result; the next attempt writes a new one
            attempt = len(list(files.root.glob("result.attempt-*.json"))) + 1
            os.replace(files.result, files.root / f"result.attempt-{attempt}.json")
        try:
            files.cancel_request.unlink()
        except FileNotFoundError:
            pass
        has_ckpt = any(files.checkpoints.glob("checkpoint-*"))
        store.update_run(run_id, resume=True, cancel_requested=False, pid=None, pid_create_time=None)
        store.set_status(run_id, "queued", "resume from last checkpoint" if has_ckpt else "resume: no checkpoint yet, starts at step 0")
    return has_ckpt


def move(ws: Workspace, run_id: str, delta: int) -> int:
    """Move a queued run `delta` places towards the front (negative: back). Returns its new position (0 = next)."""
    from engine.scheduler import order

    store = Store(ws)
    with store.locked():
        run = _require(store, run_id)
        if run["status"] != "queued":
            raise QueueError(f"run {run_id} is {run['status']}; only queued runs can be moved")
        queued = order(r for r in store.list_runs() if r["status"] == "queued")
        i = next(k for k, r in enumerate(queued) if r["id"] == run_id)
        target = max(0, min(len(queued) - 1, i - delta))
        step = -1 if target < i else 1
        while i != target:  # swap sort keys with the neighbour: the others keep their relative order
            a, b = queued[i], queued[i + step]
            store.update_run(a["id"], priority=b.get("priority", 0), seq=b["seq"])
            store.update_run(b["id"], priority=a.get("priority", 0), seq=a["seq"])
            a_keys = (a.get("priority", 0), a["seq"])
            a["priority"], a["seq"] = b.get("priority", 0), b["seq"]
            b["priority"], b["seq"] = a_keys
            queued[i], queued[i + step] = b, a
            i += step
        return target


def pause(ws: Workspace, reason: str = "paused by the user") -> None:
    store = Store(ws)
    with store.locked():
        store.set_meta("queue_paused", True)
        store.set_meta("queue_paused_reason", reason)


def unpause(ws: Workspace) -> None:
    store = Store(ws)
    with store.locked():
        store.set_meta("queue_paused", False)
        store.set_meta("queue_paused_reason", None)


def is_paused(ws: Workspace) -> tuple[bool, str | None]:
    store = Store(ws)
    return bool(store.get_meta("queue_paused", False)), store.get_meta("queue_paused_reason")


def remove(ws: Workspace, run_id: str) -> Path | None:
    """Forget a run that is not running; its folder moves to .voxtune/trash/ (returned), not deleted."""
    store = Store(ws)
    with store.locked():
        run = _require(store, run_id)
        if run["status"] == "running":
            raise QueueError(f"run {run_id} is running; cancel it first (voxtune runs cancel {run_id})")
        src = ws.run_dir(run_id)
        dest = None
        if src.exists():
            trash = ws.engine_dir / "trash"
            trash.mkdir(parents=True, exist_ok=True)
            dest = trash / run_id
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(src, dest)
        store.remove_run(run_id)
        return dest


CLI_FLAGS = {"batch_size": "--batch", "grad_accum": "--grad-accum", "method": "--method",
             "gradient_checkpointing": "--gradient-checkpointing", "optimizer": "--optimizer"}


def suggest_fit(config: dict, budget_gb: float | None) -> dict | None:
    """A nearby config the estimator says fits `budget_gb`: {changes, estimate_gb, flags} or None.

    Tries, in order: half the batch with twice the accumulation (same effective batch),
    then gradient checkpointing, then batch 1, then QLoRA -- the least invasive change first."""
    batch, accum = int(config.get("batch_size") or 1), int(config.get("grad_accum") or 1)
    effective = batch * accum
    candidates = []
    if batch > 1:
        candidates.append({"batch_size": batch // 2, "grad_accum": accum * 2})
    if not config.get("gradient_checkpointing"):
        candidates.append({**(candidates[-1] if candidates else {}), "gradient_checkpointing": True})
    candidates.append({"batch_size": 1, "grad_accum": effective, "gradient_checkpointing": True})
    if config.get("method") in ("full", "lora", "lora8"):
        candidates.append({"method": "qlora", "batch_size": 1, "grad_accum": effective, "gradient_checkpointing": True,
                           "optimizer": "adamw8bit"})
    try:
        supported = tuple(getattr(_model_entry(str(config.get("model"))), "methods", METHODS))
    except QueueError:
        supported = METHODS
    for changes in candidates:
        if changes.get("method", config.get("method")) not in supported:
            continue
        changes = {k: v for k, v in changes.items() if config.get(k) != v}
        if not changes:
            continue
        est = _estimate_gb({**config, **changes})
        if budget_gb is None or (est is not None and est <= budget_gb):
            flags = " ".join(CLI_FLAGS[k] if v is True else f"{CLI_FLAGS[k]} {v}" for k, v in changes.items())
            return {"changes": changes, "estimate_gb": est, "flags": flags}
    return None
