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

from engine.config import ConfigError, RunConfig, with_defaults
from engine.enums import METHODS, RETRYABLE, RunStatus
from engine.errors import VoxtuneError
from engine.runfiles import RunFiles, atomic_write_json
from engine.store import Store, StoreError
from engine.workspace import Workspace

VERSIONED = ("torch", "torchaudio", "transformers", "peft", "accelerate", "bitsandbytes", "jiwer", "tinydb", "textual")


class QueueError(VoxtuneError):
    """A refusal about a run's state (cancel a finished run, move a running one...)."""

    def __init__(self, message: str, field: str | None = None, **kw) -> None:
        super().__init__(message, field=field, **kw)


def library_versions() -> dict:
    """Versions recorded with every run, read from package metadata (importing nothing heavy)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("voxtune", *VERSIONED):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def _estimate_gb(config: RunConfig) -> float | None:
    """The peak admission uses for this config, GiB: the traced figure when `voxtune fit
    --trace` cached one for it, else the estimator's; None when neither can say (admission
    then trusts luck)."""
    try:
        from engine import estimator

        traced = estimator.traced_for_run(config)
        if traced is not None:
            return round(traced, 2)
        est = estimator.estimate_for_run(config)
    except Exception:  # noqa: BLE001 - an estimator bug must not block queueing; the daemon still runs it
        return None
    return round(float(est.total_gb), 2) if est is not None else None


# -- operations ------------------------------------------------------------------------------
def resolve(ws: Workspace, store: Store, *, model_files: bool = True, **options: Any) -> RunConfig:
    """Validate user options (engine.config.RunConfig fields; None = not given) and build the
    full run configuration, without run_id. Raises a VoxtuneError naming the field.
    model_files=False skips the check that the model's files are on this machine (and its
    processor and language): the new-run form's estimate for a catalog model not downloaded
    yet. A config resolved so is never queued."""
    from engine import catalog

    model = options.get("model")
    if not model:
        raise ConfigError("model: required", field="model", hint="give --model (a catalog name, hub id or folder)")
    try:
        entry = catalog.get_model(str(model))
    except catalog.UnknownModel as e:
        raise ConfigError(f"model: {e.message}", field="model", hint=e.hint) from None
    if not options.get("dataset"):
        raise ConfigError("dataset: required", field="dataset", hint="give --dataset (`voxtune data ls`)")
    dataset = _dataset(ws, store, str(options["dataset"]), "dataset")
    eval_ref = None
    if options.get("eval_dataset") and not options.get("eval_only"):
        eval_ref = parse_eval_dataset(str(options["eval_dataset"]), dataset["name"])
        _dataset(ws, store, eval_ref[0], "eval_dataset")
    cfg = with_defaults(options, entry, data=None if options.get("eval_only") else
                        _data_size(ws, store, dataset["name"], eval_ref, entry))
    cfg.check(entry)
    if eval_ref is not None:
        cfg.eval_dataset = f"{eval_ref[0]}:{eval_ref[1]}"
    if cfg.report_to:
        from engine import reporting

        reporting.require_installed(cfg.report_to)  # one line naming the extra to install
    local = Path(str(model)).expanduser()
    cfg.model = str(model)
    cfg.model_ref = str(local.resolve()) if local.is_dir() else (getattr(entry, "hub_id", None) or str(model))
    cfg.family = getattr(entry, "family", None)
    cfg.recipe = getattr(entry, "recipe", None)
    if model_files:
        _check_model_files(cfg, entry)
    cfg.dataset = dataset["name"]
    cfg.dataset_manifest = dataset.get("manifest")
    cfg.dataset_manifest_hash = dataset.get("manifest_hash")
    cfg.workspace = str(ws.home)
    cfg.resume_from_checkpoint = None
    cfg.versions = library_versions()
    cfg.estimate_gb = _estimate_gb(cfg)
    cfg.estimate_devices = _estimate_devices(cfg) if cfg.gpus != 1 else None
    return cfg


def _dataset(ws: Workspace, store: Store, name: str, field: str) -> dict:
    """A dataset's record; the shipped demo is in every workspace. ConfigError naming `field`."""
    dataset = store.get_dataset(name)
    if dataset is None and name == "demo":
        from engine.datasets import ensure_demo

        dataset = ensure_demo(ws)
    if dataset is None:
        known = [d["name"] for d in store.list_datasets()]
        hint = f"known: {', '.join(known)}" if known else "import one with `voxtune data import`"
        raise ConfigError(f"{field}: no dataset {name!r} ({hint})", field=field)
    return dataset


def parse_eval_dataset(text: str, train_dataset: str) -> tuple[str, str]:
    """--eval-dataset NAME[:SPLIT] -> (name, split). NAME alone: all of another dataset's clips,
    or the training dataset's validation split. Scoring the clips a run trains on (the training
    dataset's train or all split) is refused. Raises ConfigError naming eval_dataset."""
    name, _, split = text.strip().partition(":")
    name, split = name.strip(), split.strip().lower()
    if not name:
        raise ConfigError(f"eval_dataset: {text!r}: give NAME or NAME:SPLIT", field="eval_dataset")
    split = split or ("validation" if name == train_dataset else "all")
    if split not in ("train", "validation", "test", "all"):
        raise ConfigError(f"eval_dataset: split {split!r} is not one of train, validation, test, all",
                          field="eval_dataset")
    if name == train_dataset and split in ("train", "all"):
        raise ConfigError(f"eval_dataset: {name}:{split} holds the clips the run trains on",
                          field="eval_dataset", hint=f"use {name}:validation, {name}:test or another dataset")
    return name, split


def _data_size(ws: Workspace, store: Store, name: str, eval_ref: tuple[str, str] | None, entry: Any):
    """The training split's size and the evaluation set's clip count (engine.config.DataSize)."""
    from engine import datasets
    from engine.config import data_size

    try:
        train = datasets.load_rows(ws, name, "train", store)
        ev_name, ev_split = eval_ref or (name, "validation")
        n_eval = len(datasets.load_rows(ws, ev_name, ev_split, store))
    except (OSError, ValueError, datasets.DatasetError):
        return None  # an unreadable manifest: the family defaults; the run itself names the problem
    return data_size(train, n_eval, entry)


def eval_set_warning(ws: Workspace, config: RunConfig) -> str | None:
    """A warning when a training run evaluates on fewer than datasets.MIN_VALIDATION clips."""
    if config.eval_only:
        return None
    from engine import datasets

    name, split = (config.eval_dataset or f"{config.dataset}:validation").split(":", 1)
    try:
        n = len(datasets.load_rows(ws, name, split))
    except (OSError, ValueError, datasets.DatasetError):
        return None
    if n >= datasets.MIN_VALIDATION:
        return None
    if n == 0:
        return (f"{name}:{split} has no clips: the run is not evaluated during training and no best checkpoint "
                f"is chosen; give --eval-dataset NAME[:SPLIT] or redraw the splits (`voxtune data split`)")
    return (f"the run evaluates on {n} clip(s) of {name}:{split} (< {datasets.MIN_VALIDATION}): its WER and the "
            f"best checkpoint chosen on it are noisy; give --eval-dataset NAME[:SPLIT] or redraw the splits")


def _check_model_files(cfg: RunConfig, entry: Any) -> None:
    """What used to fail only when the run started, checked at `queue add` naming the option:
    a hub model that is not cached while offline (HF_HUB_OFFLINE), a local checkpoint whose
    processor disagrees with its config.json (mel bins), and a --language the model's family
    does not know. Reads JSON and the hub cache only (no model is loaded)."""
    from engine import languages, loading

    try:
        source = loading.resolve(str(cfg.model_ref))
        if source.local:
            loading.check_processor_files(source.ref)
    except loading.ModelNotAvailable as e:
        raise ConfigError(f"model: {e.message}", field="model", file=e.file, hint=e.hint) from None
    languages.check_language(cfg.language, recipe=cfg.recipe, model=str(cfg.model), model_ref=source.ref,
                             entry=entry)


def _estimate_devices(config: RunConfig) -> dict | None:
    """Per-device terms for a multi-device run (estimator.multi_device_terms); None if unknown."""
    try:
        from engine import estimator

        est = estimator.estimate_for_run(config)
        return estimator.multi_device_terms(est) if est is not None else None
    except Exception:  # noqa: BLE001 - like _estimate_gb: never a reason to refuse a run
        return None


def add(ws: Workspace, parent: str | None = None, **options: Any) -> str:
    """Validate, resolve, create runs/<id>/ with config.json, insert the record. Returns the id."""
    store = Store(ws)
    cfg = resolve(ws, store, **options)
    with store.locked():
        label = cfg.model if not Path(cfg.model).is_dir() else Path(cfg.model).name
        run_id = store.new_run_id(label, "eval" if cfg.eval_only else str(cfg.method))
        cfg.run_id = run_id
        files = RunFiles(ws.run_dir(run_id)).create()
        try:
            atomic_write_json(files.config, cfg.to_dict())
            record = {
                "id": run_id, "priority": cfg.priority, "model": cfg.model, "method": cfg.method,
                "dataset": cfg.dataset, "eval_only": cfg.eval_only, "split": cfg.split,
                "status": RunStatus.QUEUED, "estimate_gb": cfg.estimate_gb, "gpus": cfg.gpus,
                "estimate_devices": cfg.estimate_devices, "cancel_requested": False,
                "resume": False, "pid": None, "pid_create_time": None,
            }
            if parent:
                record["parent"] = parent
            store.add_run(record)
        except BaseException:  # a full disk mid-way leaves no orphan run folder
            shutil.rmtree(files.root, ignore_errors=True)
            raise
    return run_id


def dataset_drift(store: Store, cfg: RunConfig) -> str | None:
    """Why the run must not start on its dataset as it is now, or None. A run trains on the
    manifest it was queued with (config.json's dataset_manifest_hash); a re-import since then
    (another hash in the dataset record) or a removed dataset means other data: refused, with
    both hashes, until the user re-queues the run (`runs retry`/`clone` take the current data)."""
    want = cfg.dataset_manifest_hash
    if not want or not cfg.dataset:
        return None
    rec = store.get_dataset(cfg.dataset)
    now = (rec or {}).get("manifest_hash")
    if rec is not None and now == want:
        return None
    what = f"manifest {str(want)[:12]} when queued, {str(now)[:12]} now" if rec is not None else "it was removed"
    return (f"dataset {cfg.dataset!r} changed since this run was queued ({what}); "
            f"`voxtune runs retry {cfg.run_id}` queues it again on the current data")


def _config(ws: Workspace, run_id: str) -> RunConfig:
    return RunConfig.load(RunFiles(ws.run_dir(run_id)).config)


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
        if run["status"] == RunStatus.QUEUED:
            store.set_status(run_id, RunStatus.CANCELLED, "cancelled before it started")
            return RunStatus.CANCELLED
        if run["status"] != RunStatus.RUNNING:
            raise QueueError(f"run {run_id} is {run['status']}; only queued or running runs can be cancelled")
        RunFiles(ws.run_dir(run_id)).cancel_request.write_text(f"{time.time()}\n")
        store.update_run(run_id, cancel_requested=True, cancel_requested_at=time.time())
        return RunStatus.RUNNING


def clone(ws: Workspace, run_id: str, **changes: Any) -> str:
    """A new run from another's options, with `changes` applied (validated like `add`)."""
    store = Store(ws)
    run = _require(store, run_id)
    options = _config(ws, run_id).options()
    options["priority"] = run.get("priority", 0)
    changes = {k: v for k, v in changes.items() if v is not None}
    if "epochs" in changes:
        options.pop("max_steps", None)
    elif "max_steps" in changes:
        options.pop("epochs", None)
    if changes.get("method") and changes["method"] != options.get("method"):
        for k in ("lora_rank", "lora_alpha", "lora_dropout", "optimizer"):  # the new method's defaults
            if k not in changes:
                options.pop(k, None)
    options.update(changes)
    return add(ws, parent=run_id, **options)


def retry(ws: Workspace, run_id: str) -> str:
    """A failed, cancelled or interrupted run again from scratch, as a new run (folders are never reused)."""
    run = _require(Store(ws), run_id)
    if run["status"] not in RETRYABLE:
        raise QueueError(f"run {run_id} is {run['status']}; only failed, cancelled or interrupted runs can be retried")
    return clone(ws, run_id)


def resume(ws: Workspace, run_id: str, start_now: bool = True) -> bool:
    """Requeue an interrupted/cancelled/failed run to continue from its last checkpoint.
    `start_now`: it starts even while the queue is paused (the other queued runs keep
    waiting), as pueue's `start` does.

    Returns whether a checkpoint exists (False: it will start again from step 0)."""
    store = Store(ws)
    files = RunFiles(ws.run_dir(run_id))
    with store.locked():
        run = _require(store, run_id)
        if run["status"] not in RETRYABLE:
            raise QueueError(f"run {run_id} is {run['status']}; only interrupted, cancelled or failed runs can be resumed")
        drift = dataset_drift(store, RunConfig.load(files.config))
        if drift:  # its checkpoints were trained on other data: continuing would mix the two
            why, _, hint = drift.partition("; ")
            raise QueueError(f"run {run_id}: {why}", hint=hint)
        has_ckpt = prepare_resume(files)
        store.update_run(run_id, resume=True, cancel_requested=False, pid=None, pid_create_time=None,
                         start_now=start_now)
        store.set_status(run_id, RunStatus.QUEUED, "resume from last checkpoint" if has_ckpt else "resume: no checkpoint yet, starts at step 0")
    return has_ckpt


def prepare_resume(files: RunFiles) -> bool:
    """The run folder's side of a resume: config.json asks for the last checkpoint, an earlier
    result.json is kept as result.attempt-N.json, a stale cancel.request goes. Also used by a
    worker that Slurm restarted (requeue, preemption). Returns whether a checkpoint exists."""
    cfg = RunConfig.load(files.config)
    cfg.resume_from_checkpoint = "last"
    atomic_write_json(files.config, cfg.to_dict())
    if files.result.exists():  # keep the earlier attempt's result; the next attempt writes a new one
        attempt = len(list(files.root.glob("result.attempt-*.json"))) + 1
        os.replace(files.result, files.root / f"result.attempt-{attempt}.json")
    try:
        files.cancel_request.unlink()
    except FileNotFoundError:
        pass
    return any(files.checkpoints.glob("checkpoint-*"))


def move(ws: Workspace, run_id: str, delta: int) -> int:
    """Move a queued run `delta` places towards the front (negative: back). Returns its new position (0 = next)."""
    from engine.scheduler import order

    store = Store(ws)
    with store.locked():
        run = _require(store, run_id)
        if run["status"] != RunStatus.QUEUED:
            raise QueueError(f"run {run_id} is {run['status']}; only queued runs can be moved")
        queued = order(r for r in store.list_runs() if r["status"] == RunStatus.QUEUED)
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
        if run["status"] == RunStatus.RUNNING:
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


def suggest_fit(config: RunConfig | dict, budget_gb: float | None) -> dict | None:
    """A nearby config the estimator says fits `budget_gb`: {changes, estimate_gb, flags} or None.

    Tries, in order: half the batch with twice the accumulation (same effective batch),
    then gradient checkpointing, then batch 1, then QLoRA -- the least invasive change first."""
    import dataclasses

    from engine import catalog
    from engine.config import OPTIONS, as_config

    config = as_config(config)
    batch, accum = int(config.batch_size or 1), int(config.grad_accum or 1)
    effective = batch * accum
    candidates: list[dict] = []
    if batch > 1:
        candidates.append({"batch_size": batch // 2, "grad_accum": accum * 2})
    if not config.gradient_checkpointing:
        candidates.append({**(candidates[-1] if candidates else {}), "gradient_checkpointing": True})
    candidates.append({"batch_size": 1, "grad_accum": effective, "gradient_checkpointing": True})
    if config.method in ("full", "lora", "lora8"):
        candidates.append({"method": "qlora", "batch_size": 1, "grad_accum": effective, "gradient_checkpointing": True,
                           "optimizer": "adamw8bit"})
    try:
        supported = tuple(catalog.get_model(str(config.model)).methods or METHODS)
    except VoxtuneError:
        supported = METHODS
    for changes in candidates:
        if changes.get("method", config.method) not in supported:
            continue
        changes = {k: v for k, v in changes.items() if getattr(config, k) != v}
        if not changes:
            continue
        est = _estimate_gb(dataclasses.replace(config, **changes))
        if budget_gb is None or (est is not None and est <= budget_gb):
            flags = " ".join(OPTIONS[k].flag if v is True else f"{OPTIONS[k].flag} {v}" for k, v in changes.items())
            return {"changes": changes, "estimate_gb": est, "flags": flags}
    return None
