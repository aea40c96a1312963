"""Data faults met during training and transcription (issue 13): a non-finite loss stops the
run naming the step and the likely cause; QLoRA trains on a long clip whether or not the
segment cache exists; silent stretches of long recordings are never decoded."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from tiny_models import make_tiny_dataset, make_tiny_whisper, synth_clip  # noqa: E402

from engine.runfiles import RunFiles, read_json  # noqa: E402

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> Path:
    return make_tiny_whisper(tmp_path_factory.mktemp("models") / "tiny-whisper")


def queue_run(ws, model: Path, method: str, **overrides) -> Path:
    from engine import queue

    options = dict(model=str(model), dataset="tiny", method=method, max_steps=3, batch_size=2, grad_accum=1,
                   eval_every=1000, save_every=1000, lr=1e-3, warmup_steps=0, seed=0, max_new_tokens=8,
                   gradient_checkpointing=False, optimizer="adamw", precision="fp32")
    if method != "full":
        options.update(lora_rank=4, lora_alpha=8, lora_dropout=0.0)
    options.update(overrides)
    return ws.run_dir(queue.add(ws, **options))


def test_nan_loss_fails_the_run_naming_the_step_and_likely_cause(ws, tiny_whisper, monkeypatch):
    import torch

    from engine import training

    torch.set_num_threads(1)
    monkeypatch.setenv("VOXTUNE_DEVICE", "cpu")
    rec = make_tiny_dataset(ws, n=2, splits={"train": [0, 1], "validation": [], "test": []}, pinned=0)
    run_dir = queue_run(ws, tiny_whisper, "lora")
    # the clip goes bad after import (a re-export in place): NaN samples reach the model
    wav = Path(rec["source"]) / "clip00.wav"
    audio = synth_clip(0, 1.0)
    audio[4000:4100] = np.nan
    sf.write(str(wav), audio, 16000, subtype="FLOAT")

    assert training.run(run_dir) == 1
    files = RunFiles(run_dir)
    result = read_json(files.result)
    assert result["status"] == "failed", result
    assert result["reason"].startswith("loss is nan and gradient norm is nan at step 1: training diverged"), result
    assert "NaN/Inf samples in a clip" in result["reason"]
    assert [r["step"] for r in files.iter_metrics("train")] == []  # nothing NaN was recorded as progress
    assert not list(files.checkpoints.glob("checkpoint-*"))  # and nothing NaN was saved


def test_qlora_trains_on_a_long_clip_with_and_without_the_segment_cache(ws, tiny_whisper, monkeypatch):
    """The word-timestamp pass for clips over 30 s runs on the 4-bit model right before
    training; on a CPU with AVX512-BF16, bitsandbytes repacked the 4-bit weights into its
    inference-only layout on that no-grad forward, and training then failed at step 1
    (in-place `result += bias` on a leaf view). The CPU feature flag is forced on here so the
    repacking path is reachable on any machine; the trainable model must never be repacked."""
    import bitsandbytes.nn.modules as bnb_modules
    import torch

    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: True)
    repacked = []
    convert = bnb_modules._convert_weight_packed_for_cpu
    monkeypatch.setattr(bnb_modules, "_convert_weight_packed_for_cpu",
                        lambda *a, **k: repacked.append(1) or convert(*a, **k))

    from engine import segment, training

    torch.set_num_threads(1)
    monkeypatch.setenv("VOXTUNE_DEVICE", "cpu")
    make_tiny_dataset(ws, n=3, splits={"train": [0, 1, 2], "validation": [], "test": []}, pinned=0,
                      long_clips={0: 71.0})
    cache = segment.cache_path(ws, "tiny", str(tiny_whisper))
    for attempt in ("no cache", "cache"):
        assert cache.exists() == (attempt == "cache")
        run_dir = queue_run(ws, tiny_whisper, "qlora", max_steps=2, gradient_checkpointing=True, optimizer="adamw8bit")
        rc = training.run(run_dir)
        result = read_json(RunFiles(run_dir).result)
        assert rc == 0 and result["status"] == "finished", (attempt, result)
        assert [r["step"] for r in RunFiles(run_dir).iter_metrics("train")] == [1, 2]
        assert not repacked, f"{attempt}: 4-bit weights of the trainable model were repacked for inference"
    prov = segment.provenance(ws, "tiny", str(tiny_whisper))
    assert prov["methods"] == {"model_timestamps": 1} or "pause_fallback" in prov["methods"], prov


def test_transcribe_never_sends_the_silent_stretch_to_the_model(tiny_whisper, tmp_path, monkeypatch):
    """A random tiny model emits junk for anything it hears, so the test counts what it hears."""
    from data_helpers import burst_audio, write_wav

    from engine import transcribe as T
    from engine.recipes.whisper import WhisperRecipe

    heard: list[tuple[float, float]] = []
    generate = WhisperRecipe.generate

    def spy(self, model, loaded, batch, max_new_tokens):
        heard.extend((ex.start_s, ex.end_s) for ex in batch)
        return generate(self, model, loaded, batch, max_new_tokens)

    monkeypatch.setattr(WhisperRecipe, "generate", spy)
    speech = [burst_audio(10.0, seed=1), burst_audio(10.0, seed=2)]
    gap = write_wav(tmp_path / "gap.wav", np.concatenate([speech[0], np.zeros(40 * 16000, np.float32), speech[1]]))
    quiet = write_wav(tmp_path / "quiet.wav", np.zeros(45 * 16000, np.float32))

    out = T.transcribe_detailed([gap, quiet], T.target_for_model(str(tiny_whisper)), device="cpu", max_new_tokens=4)

    assert [r["pieces"] for r in out] == [2, 0]
    assert out[1]["text"] == ""  # nothing to hear, nothing invented
    assert len(heard) == 2 and sum(e - s for s, e in heard) < 21.0, heard
    assert all(e <= 10.5 or s >= 49.5 for s, e in heard), heard


def _mismatched_processor(model: Path) -> Path:
    import json

    pre = model / "processor_config.json"  # transformers 5 keeps the feature extractor's settings here
    data = json.loads(pre.read_text())
    data["feature_extractor"]["feature_size"] = 128  # large-v3's processor next to an 80-bin model
    pre.write_text(json.dumps(data))
    return pre


@pytest.mark.parametrize("eval_only", [False, True])
def test_mel_bin_mismatch_is_one_line_naming_both_files_at_queue_add_training_and_eval(
        ws, tmp_path, capsys, monkeypatch, eval_only):
    from tiny_models import write_run_config

    from engine import training
    from tui.cli import main

    model = make_tiny_whisper(tmp_path / "odd-whisper")
    pre = _mismatched_processor(model)
    make_tiny_dataset(ws, n=2, splits={"train": [0, 1], "validation": [0, 1], "test": []}, pinned=0)
    capsys.readouterr()
    flags = ["--eval-only"] if eval_only else ["--method", "lora"]
    assert main(["--home", str(ws.home), "queue", "add", "--model", str(model), "--dataset", "tiny", *flags,
                 "--no-start"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("voxtune: model: ") and str(pre) in err and str(model / "config.json") in err, err
    assert "128 mel bins" in err and "expects 80" in err and "Traceback" not in err
    assert not ws.runs_dir.exists() or not any(ws.runs_dir.iterdir())

    # a run queued before the processor changed: the worker fails it with the same line
    monkeypatch.setenv("VOXTUNE_DEVICE", "cpu")
    run_dir = write_run_config(ws, model_ref=model, method="full" if eval_only else "lora", eval_only=eval_only,
                               max_steps=1)
    assert training.run(run_dir) == 1
    reason = read_json(RunFiles(run_dir).result)["reason"]
    assert str(pre) in reason and str(model / "config.json") in reason and "\n" not in reason, reason
