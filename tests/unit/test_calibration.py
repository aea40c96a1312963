"""Measured peaks against estimates, with a recorded example kept in the real store."""

from __future__ import annotations

import pytest

from engine import calibration
from engine.catalog import get_model
from engine.estimator import FitConfig, estimate
from engine.store import Store

# Recorded example: whisper-large-v3, 8-bit LoRA r=32 on q,v, batch 8, 30 s clips, peak as
# torch.cuda.max_memory_reserved() would report it (cf. the published ~8 GB on a T4).
RECORDED = {"model": "whisper-large-v3", "method": "lora8", "batch": 8, "audio_seconds": 30.0, "lora_rank": 32,
            "precision": "auto", "gradient_checkpointing": True, "optimizer": "adamw", "device": "Tesla T4",
            "peak_allocated_gb": 7.2, "peak_reserved_gb": 7.9, "estimate_gb": None, "run_id": "1125-0412-wlv3-lora8",
            "time": 1764000000.0}
CFG = FitConfig(method="lora8", batch=8, lora_rank=32, lora_targets=["q_proj", "v_proj"], audio_seconds=30)


def test_error_is_signed_and_relative():
    err = calibration.error(10.0, 8.0)
    assert err == {"estimate_gb": 10.0, "measured_gb": 8.0, "error_gb": 2.0, "error_pct": 25.0, "direction": "over"}
    assert calibration.error(6.0, 8.0)["direction"] == "under"
    with pytest.raises(ValueError):
        calibration.error(1.0, 0)


def test_recorded_example_through_the_store(ws):
    store = Store(ws)
    store.add_measurement(RECORDED)
    store.add_measurement(dict(RECORDED, batch=4, run_id="other-batch"))
    store.add_measurement(dict(RECORDED, model="whisper-small", run_id="other-model"))
    entry = get_model("whisper-large-v3")
    found = calibration.matching_measurements(store.list_measurements(), entry, CFG)
    assert [m["run_id"] for m in found] == ["1125-0412-wlv3-lora8"]
    est = estimate(entry, CFG)
    cmp = calibration.compare(est, store.list_measurements(), entry, CFG)
    assert cmp["measured_gb"] == 7.9 and cmp["run_id"] == "1125-0412-wlv3-lora8" and cmp["count"] == 1
    assert cmp["error_gb"] == pytest.approx(est.total_gb - 7.9, abs=1e-3)
    assert abs(cmp["error_pct"]) < 30  # the estimator lands near this published point


def test_matching_rules():
    entry = get_model("whisper-large-v3")
    assert calibration.matches(dict(RECORDED, audio_seconds=28.0), entry, CFG)  # within 10%
    assert not calibration.matches(dict(RECORDED, audio_seconds=20.0), entry, CFG)
    assert not calibration.matches(dict(RECORDED, lora_rank=16), entry, CFG)
    assert not calibration.matches(dict(RECORDED, optimizer="adamw8bit"), entry, CFG)
    assert not calibration.matches(dict(RECORDED, peak_reserved_gb=None, peak_allocated_gb=None), entry, CFG)
    assert calibration.matches(dict(RECORDED, model="openai/whisper-large-v3"), entry, CFG)
    assert calibration.measured_gb(dict(RECORDED, peak_reserved_gb=None)) == 7.2


def test_measurement_from_a_finished_run():
    entry = get_model("whisper-large-v3")
    run = {"id": "r1", "finished_at": 1764000100.0, "estimate_gb": 7.5,
           "peak_memory": {"device": "AMD Radeon RX 7700 XT", "allocated_gb": 6.0, "reserved_gb": 6.5, "rss_gb": 3.0}}
    config = {"model": "whisper-large-v3", "method": "lora8", "batch_size": 8, "lora_rank": 32,
              "optimizer": "adamw", "precision": "auto", "gradient_checkpointing": True, "audio_seconds": 30}
    m = calibration.from_run(run, config, entry)
    assert set(m) == set(calibration.FIELDS)
    assert (m["model"], m["batch"], m["peak_reserved_gb"], m["estimate_gb"], m["run_id"]) == (
        "whisper-large-v3", 8, 6.5, 7.5, "r1")
    assert calibration.from_run(dict(run, peak_memory={"device": "cpu", "rss_gb": 2.0}), config, entry) is None


def test_daemon_hook_builds_the_record_from_run_files():
    config = {"model": "whisper-large-v3", "model_ref": "openai/whisper-large-v3", "method": "lora8",
              "batch_size": 8, "lora_rank": 32, "optimizer": "adamw", "precision": "auto",
              "gradient_checkpointing": True, "audio_seconds": 30, "estimate_gb": 7.5}
    result = {"status": "finished", "oom": False,
              "peak_memory": {"device": "NVIDIA GeForce RTX 3060", "allocated_gb": 7.0, "reserved_gb": 7.7}}
    m = calibration.measurement_from_run(config, result, {"id": "r9", "finished_at": 5.0})
    assert (m["run_id"], m["peak_reserved_gb"], m["estimate_gb"], m["oom"]) == ("r9", 7.7, 7.5, False)
    entry = get_model("whisper-large-v3")
    assert calibration.matches(m, entry, FitConfig(method="lora8", batch=8, lora_rank=32))
    assert calibration.measurement_from_run(dict(config, model="nope", model_ref="nope"), result, {"id": "x"}) is None
    assert calibration.measurement_from_run(config, {"peak_memory": {"device": "cpu"}}, {"id": "x"}) is None


def test_one_unit_a_perfect_estimate_has_zero_error():
    """Estimate, measured peak and GPU presets are all GiB (2**30 bytes): an estimator whose
    terms add up to exactly the bytes torch.cuda.max_memory_reserved() reports shows 0%."""
    from engine import estimator, gpus, training

    assert estimator.GB == training.GIB == gpus.GB == 2**30
    est = estimate(get_model("whisper-small"), FitConfig(method="full", batch=4))
    reserved_bytes = int(est.total_gb * 2**30)  # what the allocator would report, in bytes
    measured = reserved_bytes / training.GIB  # engine.training's conversion of the peak
    assert calibration.error(est, measured)["error_pct"] == 0.0
    rx = gpus.find_gpu("rx-7700-xt", detected=[])
    assert rx.total_gb * 2**30 == 12 * 1024**3  # the card's 12 GiB, not 12e9 bytes


def test_gpu_points_from_the_shipped_file_format(tmp_path):
    f = tmp_path / "fit_calibration_gpu.json"
    assert calibration.gpu_points("whisper-small", "lora", path=f) == []  # no file: nothing
    f.write_text('{"schema": 1, "device": "NVIDIA H100", "torch": "2.9", "date": "2026-12-07", "points": '
                 '[{"model": "whisper-small", "method": "lora", "batch": 4, "audio_seconds": 30, "peak_reserved_gb": 2.1}]}')
    pts = calibration.gpu_points("whisper-small", "lora", path=f)
    assert len(pts) == 1 and pts[0]["device"] == "NVIDIA H100" and pts[0]["peak_reserved_gb"] == 2.1
    assert calibration.gpu_points("whisper-small", "full", path=f) == []
