"""Measured peaks against estimates: how wrong the estimator is, per configuration.

Runs record their peak GPU memory; a measurement (table `measurements` of engine.store.Store)
keeps it with the configuration that produced it:
  {model, method, batch, audio_seconds, lora_rank, precision, gradient_checkpointing, optimizer,
   device, peak_allocated_gb, peak_reserved_gb, estimate_gb, run_id, time}
`fit` and the Models screen show measured next to estimated where one matches.
Light module: no torch.
"""

from __future__ import annotations

import time as _time
from typing import Any, Iterable

from engine.catalog import ModelEntry
from engine.estimator import Estimate, FitConfig, fit_config_from_run, rank_of

FIELDS = ("model", "method", "batch", "audio_seconds", "lora_rank", "precision", "gradient_checkpointing",
          "optimizer", "device", "peak_allocated_gb", "peak_reserved_gb", "estimate_gb", "run_id", "time")
AUDIO_TOLERANCE = 0.10  # audio lengths within 10% count as the same configuration


def measured_gb(m: dict) -> float | None:
    """What the card had to hold: the allocator's reserved peak (allocated + cache), which is
    what an out-of-memory error is about; the allocated peak where reserved is missing."""
    v = m.get("peak_reserved_gb") or m.get("peak_allocated_gb")
    return float(v) if v else None


def error(estimate: Estimate | float, measured: float) -> dict:
    """Signed error of an estimate against a measured peak (positive: the estimate is high)."""
    est = estimate.total_gb if isinstance(estimate, Estimate) else float(estimate)
    if measured <= 0:
        raise ValueError(f"measured peak must be positive, got {measured}")
    diff = est - measured
    return {"estimate_gb": round(est, 3), "measured_gb": round(measured, 3), "error_gb": round(diff, 3),
            "error_pct": round(100 * diff / measured, 1), "direction": "over" if diff >= 0 else "under"}


def record(entry: ModelEntry, cfg: FitConfig, *, peak_allocated_gb: float | None, peak_reserved_gb: float | None,
           estimate_gb: float | None, device: str | None, run_id: str | None = None,
           time: float | None = None) -> dict:
    """A measurement in the store's format."""
    return {"model": entry.name, "method": cfg.method, "batch": cfg.batch, "audio_seconds": cfg.audio_seconds,
            "lora_rank": rank_of(entry, cfg), "precision": cfg.precision,
            "gradient_checkpointing": cfg.gradient_checkpointing, "optimizer": cfg.optimizer, "device": device,
            "peak_allocated_gb": peak_allocated_gb, "peak_reserved_gb": peak_reserved_gb,
            "estimate_gb": estimate_gb, "run_id": run_id, "time": time if time is not None else _time.time()}


def from_run(run: dict, config: dict, entry: ModelEntry) -> dict | None:
    """A measurement from a finished run's record (peak_memory) and its config.json; None
    when the run recorded no GPU peak (CPU runs, crashes before the first step)."""
    peak = run.get("peak_memory") or {}
    if not (peak.get("reserved_gb") or peak.get("allocated_gb")) or peak.get("device") in (None, "cpu"):
        return None
    cfg = fit_config_from_run(config, entry)
    return record(entry, cfg, peak_allocated_gb=peak.get("allocated_gb"), peak_reserved_gb=peak.get("reserved_gb"),
                  estimate_gb=config.get("estimate_gb") or run.get("estimate_gb"), device=peak.get("device"),
                  run_id=run.get("id"), time=run.get("finished_at"))


def measurement_from_run(config: dict, result: dict, run: dict) -> dict | None:
    """The daemon's hook at a run's end: config.json + result.json + the run record -> a
    measurement (None: no GPU peak, or a model the catalog cannot describe)."""
    from engine.catalog import UnknownModel, get_model

    entry = None
    for ref in (config.get("model"), config.get("model_ref")):
        try:
            entry = get_model(ref) if ref else None
        except UnknownModel:
            entry = None
        if entry is not None:
            break
    if entry is None:
        return None
    merged = dict(run, peak_memory=result.get("peak_memory") or run.get("peak_memory"))
    cfg_dict = dict(config)
    if result.get("audio_seconds"):
        cfg_dict["audio_seconds"] = result["audio_seconds"]
    rec = from_run(merged, cfg_dict, entry)
    if rec is not None:
        rec["oom"] = bool(result.get("oom"))
    return rec


def matches(m: dict, entry: ModelEntry, cfg: FitConfig) -> bool:
    if m.get("model") not in (entry.name, entry.hub_id) or m.get("method") != cfg.method:
        return False
    if int(m.get("batch") or 0) != cfg.batch:
        return False
    if cfg.method != "full" and int(m.get("lora_rank") or 0) != rank_of(entry, cfg):
        return False
    for k in ("precision", "optimizer", "gradient_checkpointing"):
        if k in m and m[k] is not None and m[k] != getattr(cfg, k):
            return False
    a = float(m.get("audio_seconds") or 0)
    return abs(a - cfg.audio_seconds) <= AUDIO_TOLERANCE * cfg.audio_seconds and measured_gb(m) is not None


def matching_measurements(store_measurements: Iterable[dict], entry: ModelEntry, cfg: FitConfig) -> list[dict]:
    """Measurements of this exact configuration, newest first."""
    found = [m for m in store_measurements if matches(m, entry, cfg)]
    return sorted(found, key=lambda m: m.get("time") or 0, reverse=True)


def compare(estimate: Estimate, store_measurements: Iterable[dict], entry: ModelEntry, cfg: FitConfig) -> dict[str, Any] | None:
    """Newest matching measurement against this estimate, or None."""
    found = matching_measurements(store_measurements, entry, cfg)
    if not found:
        return None
    m = found[0]
    out = error(estimate, measured_gb(m))  # type: ignore[arg-type]
    out.update(device=m.get("device"), run_id=m.get("run_id"), count=len(found))
    return out


GPU_CALIBRATION = __import__("pathlib").Path(__file__).resolve().parents[1] / "data" / "fit_calibration_gpu.json"


def gpu_points(model: str, method: str | None = None, path=None) -> list[dict]:
    """Shipped GPU measurements (data/fit_calibration_gpu.json, written by
    `tests/benchmarks/bench_fit_accuracy.py --gpu`) for this model (and method), each with the
    file's device/torch/date. Empty when the file is missing or has no such point."""
    import json

    try:
        doc = json.loads((path or GPU_CALIBRATION).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    meta = {k: doc.get(k) for k in ("device", "torch", "cuda", "rocm", "date")}
    return [dict(pt, **meta) for pt in doc.get("points", [])
            if pt.get("model") == model and (method is None or pt.get("method") == method)]
