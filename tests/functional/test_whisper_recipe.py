"""The shared driver with the Whisper recipe, on a tiny random Whisper with the real tokenizer.

Runs are queued with engine.queue.add (as the CLI does) and trained by `python -m
engine.worker RUN_DIR` in a real subprocess, except the overfit and OOM tests, which call
engine.training.run in-process (the OOM one patches the collator to raise the error a GPU
would).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from tiny_models import make_tiny_dataset, make_tiny_whisper  # noqa: E402

from engine.runfiles import RunFiles, read_json, read_jsonl  # noqa: E402

REPO = TESTS.parent
METRICS = ("wer", "cer", "wer_normalized", "filler_rate", "deletion_rate", "eval_loss")
pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> Path:
    return make_tiny_whisper(tmp_path_factory.mktemp("models") / "tiny-whisper")


def worker_env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
                PYTHONPATH=str(REPO), VOXTUNE_DEVICE="cpu")


def run_worker(run_dir: Path) -> int:
    with open(RunFiles(run_dir).log, "ab") as log:
        return subprocess.run([sys.executable, "-m", "engine.worker", str(run_dir)], cwd=REPO, env=worker_env(),
                              stdout=log, stderr=subprocess.STDOUT, timeout=300).returncode


def queue_run(ws, model: Path, method: str, **overrides) -> Path:
    from engine import queue

    options = dict(model=str(model), dataset="tiny", method=method, max_steps=2, batch_size=2, grad_accum=1,
                   eval_every=2, save_every=2, lr=1e-3, warmup_steps=0, seed=0, max_new_tokens=8,
                   gradient_checkpointing=False, optimizer="adamw", precision="fp32")
    if method != "full":
        options.update(lora_rank=4, lora_alpha=8, lora_dropout=0.0)
    options.update(overrides)
    return ws.run_dir(queue.add(ws, **options))


def log_text(run_dir: Path) -> str:
    return RunFiles(run_dir).log.read_text(errors="replace")


def test_overfit_loss_falls_and_evaluation_writes_wer_and_samples(ws, tiny_whisper, monkeypatch):
    import torch

    from engine import training

    torch.set_num_threads(1)
    monkeypatch.setenv("VOXTUNE_DEVICE", "cpu")
    make_tiny_dataset(ws, n=3, splits={"train": [0, 1, 2], "validation": [0, 1, 2], "test": []}, pinned=2)
    run_dir = queue_run(ws, tiny_whisper, "full", max_steps=20, batch_size=3, lr=1e-2, eval_every=10,
                        save_every=1000, max_new_tokens=10)
    assert training.run(run_dir) == 0
    files = RunFiles(run_dir)
    train = list(files.iter_metrics("train"))
    evals = list(files.iter_metrics("eval"))
    assert [r["step"] for r in train] == list(range(1, 21))
    assert train[-1]["loss"] < 0.4 * train[0]["loss"], [r["loss"] for r in train]
    assert [e["step"] for e in evals] == [10, 20]
    for e in evals:
        for k in METRICS:
            assert isinstance(e[k], float), (k, e)
    assert evals[1]["eval_loss"] < evals[0]["eval_loss"]
    samples = read_jsonl(files.samples)
    assert [(s["step"], s["sample_id"]) for s in samples] == [(10, "clip00"), (10, "clip01"), (20, "clip00"), (20, "clip01")]
    assert samples[0]["reference"] == "Hello world."
    result = read_json(files.result)
    assert result["status"] == "finished" and result["oom"] is False
    assert result["metrics"]["wer"] == evals[-1]["wer"]
    best = result["best"]
    assert best["wer"] == min(e["wer"] for e in evals)
    assert (run_dir / best["checkpoint"] / "model.safetensors").exists()
    assert (run_dir / best["checkpoint"] / "tokenizer.json").exists()  # processor saved with the weights
    assert result["peak_memory"]["device"] == "cpu" and result["peak_memory"]["rss_gb"] > 0.1
    assert result["final_loss"] == pytest.approx(train[-1]["loss"])


LAYER_MARK = {"full": "layers: plain", "lora": "LoRA", "qlora": "4-bit", "lora8": "8-bit"}


@pytest.mark.parametrize("method", ["full", "lora", "qlora", "lora8"])
def test_every_method_trains_through_the_worker(ws, tiny_whisper, method):
    make_tiny_dataset(ws, n=4, splits={"train": [0, 1, 2, 3], "validation": [0, 1], "test": [2, 3]}, pinned=2)
    extra = {"qlora": dict(optimizer="adamw8bit", gradient_checkpointing=True),  # the QLoRA recipe
             "lora": dict(freeze_audio_encoder=True, optimizer="adafactor")}.get(method, {})
    run_dir = queue_run(ws, tiny_whisper, method, **extra)
    rc = run_worker(run_dir)
    log = log_text(run_dir)
    assert rc == 0, log[-3000:]
    assert LAYER_MARK[method] in log, log[-3000:]
    files = RunFiles(run_dir)
    result = read_json(files.result)
    assert result["status"] == "finished", result
    assert [r["step"] for r in files.iter_metrics("train")] == [1, 2]
    (ev,) = list(files.iter_metrics("eval"))
    assert all(isinstance(ev[k], float) for k in METRICS), ev
    assert {s["sample_id"] for s in read_jsonl(files.samples)} == {"clip00", "clip01"}
    ckpt = run_dir / result["best"]["checkpoint"]
    weights = "model.safetensors" if method == "full" else "adapter_model.safetensors"
    assert (ckpt / weights).exists(), sorted(p.name for p in ckpt.iterdir())


def test_resume_after_cancel_continues_step_count_optimizer_and_data_order(ws, tiny_whisper):
    make_tiny_dataset(ws, n=4, splits={"train": [0, 1, 2, 3], "validation": [], "test": []}, pinned=0)
    common = dict(max_steps=4, batch_size=2, save_every=1000, eval_every=1000, lr=3e-3)
    reference = queue_run(ws, tiny_whisper, "lora", **common)
    assert run_worker(reference) == 0, log_text(reference)[-3000:]
    ref_loss = {r["step"]: r["loss"] for r in RunFiles(reference).iter_metrics("train")}

    run_dir = queue_run(ws, tiny_whisper, "lora", **common)
    files = RunFiles(run_dir)
    files.cancel_request.write_text("now\n")  # the worker sees it after its first step
    assert run_worker(run_dir) == 0, log_text(run_dir)[-3000:]
    first = read_json(files.result)
    assert first["status"] == "cancelled" and first["step"] == 1, first
    assert (files.checkpoints / "checkpoint-1" / "optimizer.pt").exists()

    from engine import queue
    from engine.store import Store

    store = Store(ws)
    store.set_status(run_dir.name, "running")
    store.set_status(run_dir.name, "cancelled", "cancelled by the test")
    assert queue.resume(ws, run_dir.name) is True  # rewrites config, removes cancel.request
    assert run_worker(run_dir) == 0, log_text(run_dir)[-3000:]
    second = read_json(files.result)
    assert second["status"] == "finished", second
    steps = [r["step"] for r in files.iter_metrics("train")]
    assert steps == [1, 2, 3, 4]  # 1 before the cancel, 2..4 after: the count continued
    state = json.loads((files.checkpoints / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    # same batches in the same order with the same optimizer state: the losses match the
    # uninterrupted run's step for step
    resumed = {r["step"]: r["loss"] for r in files.iter_metrics("train")}
    for step in (1, 2, 3, 4):
        assert resumed[step] == pytest.approx(ref_loss[step], rel=1e-4), (step, resumed, ref_loss)


def test_out_of_memory_is_recorded_with_step_and_peak(ws, tiny_whisper, monkeypatch):
    import torch

    from engine import training
    from transformers import WhisperForConditionalGeneration

    monkeypatch.setenv("VOXTUNE_DEVICE", "cpu")
    make_tiny_dataset(ws, n=2, splits={"train": [0, 1], "validation": [], "test": []}, pinned=0)
    run_dir = queue_run(ws, tiny_whisper, "lora", max_steps=4, batch_size=1, save_every=1000, eval_every=1000)
    real = WhisperForConditionalGeneration.forward
    calls = {"n": 0}

    def forward(self, *args, **kwargs):  # the third step's forward does not fit, as a GPU would say
        calls["n"] += 1
        if calls["n"] == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(WhisperForConditionalGeneration, "forward", forward)
    assert training.run(run_dir) == 3
    result = read_json(RunFiles(run_dir).result)
    assert result["status"] == "failed" and result["oom"] is True
    assert result["oom_step"] == 3
    assert "out of memory at step 3" in result["reason"] and "try" in result["reason"]
    assert result["peak_memory"]["rss_gb"] > 0


def test_unavailable_model_fails_with_a_clear_reason(ws, tiny_whisper):
    make_tiny_dataset(ws, n=2, splits={"train": [0, 1], "validation": [], "test": []}, pinned=0)
    run_dir = queue_run(ws, tiny_whisper, "lora")
    cfg = read_json(RunFiles(run_dir).config)
    cfg["model_ref"] = "voxtune-test/no-such-whisper"
    from engine.runfiles import atomic_write_json

    atomic_write_json(RunFiles(run_dir).config, cfg)
    assert run_worker(run_dir) == 1
    result = read_json(RunFiles(run_dir).result)
    assert result["status"] == "failed"
    assert "HF_HUB_OFFLINE" in result["reason"] and "local folder" in result["reason"]


def test_long_clips_become_segments_for_training_and_are_joined_for_evaluation(ws, tiny_whisper, monkeypatch):
    """A 70 s clip: training pieces <= 30 s whose targets join back to the clean text;
    evaluation pieces carry no target and their predictions are joined per clip. (A random
    model has no usable timestamps: timing words with it would only cost time, so the
    pause-based cut is used; test_real_whisper covers model timestamps.)"""
    from engine import loading
    from engine.recipes.whisper import WhisperRecipe

    monkeypatch.setattr(WhisperRecipe, "words_fn", lambda self, loaded: (lambda audio: []))
    from engine.datasets import load_rows
    from engine.recipes import get_recipe
    from engine.training import join_predictions

    make_tiny_dataset(ws, n=2, splits={"train": [0, 1], "validation": [0, 1], "test": []}, long_clips={1: 70.0})
    rows = load_rows(ws, "tiny", "train")
    recipe = get_recipe("whisper")
    loaded = loading.load_model(recipe, str(tiny_whisper), method="full", trainable=False,
                                context={"workspace": str(ws.home), "dataset": "tiny", "model": "tiny-whisper"})
    train = recipe.examples(rows, loaded, for_training=True)
    long_train = [e for e in train if e.clip_id == "clip01"]
    assert len(long_train) >= 3
    assert all(len(e.audio) <= 30 * 16000 for e in train)
    assert " ".join(e.text for e in long_train) == rows[1]["text"]
    assert (ws.cache_dir / "segments").is_dir()  # prepared once, reused by later runs

    ev = recipe.examples(rows, loaded, for_training=False)
    assert [e.segment for e in ev if e.clip_id == "clip01"] == list(range(len([e for e in ev if e.clip_id == "clip01"])))
    assert all(e.meta.get("score_text") is False for e in ev if e.clip_id == "clip01")
    preds = [f"p{e.segment}" for e in ev]
    joined = join_predictions(rows, ev, preds)
    assert joined[0] == "p0" and joined[1].startswith("p0 p1 p2")


def test_a_target_over_the_decoder_limit_is_an_error_not_a_truncation(tmp_path, tiny_whisper):
    import soundfile as sf

    from engine import loading
    from engine.recipes import get_recipe

    from tiny_models import synth_clip

    wav = tmp_path / "a.wav"
    sf.write(wav, synth_clip(0, 2.0), 16000)
    row = {"id": "wordy", "audio": str(wav), "duration": 2.0, "text": " ".join(["antidisestablishment"] * 200)}
    recipe = get_recipe("whisper")
    loaded = loading.load_model(recipe, str(tiny_whisper), method="full", trainable=False)
    with pytest.raises(ValueError, match=r"clip wordy .*448-token decoder limit"):
        recipe.examples([row], loaded, for_training=True)


def test_multilingual_checkpoints_get_language_and_task_prefix(tmp_path, tiny_whisper):
    from engine.recipes.base import Loaded
    from engine.recipes.whisper import WhisperRecipe

    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper)
    proc = WhisperProcessor.from_pretrained(tiny_whisper)
    english = WhisperRecipe()
    loaded = Loaded(model, proc)
    english._configure_prefix(loaded)
    assert loaded.extra["generate_kwargs"] == {}
    ids = proc.tokenizer("Hi").input_ids
    assert proc.tokenizer.convert_ids_to_tokens(ids[:2]) == ["<|startoftranscript|>", "<|notimestamps|>"]
    with pytest.raises(ValueError, match="English-only"):
        WhisperRecipe(language="german")._configure_prefix(Loaded(model, proc))
    model.generation_config.is_multilingual = True
    multi = WhisperRecipe(language="german")
    loaded = Loaded(model, proc)
    multi._configure_prefix(loaded)
    assert loaded.extra["generate_kwargs"] == {"language": "german", "task": "transcribe"}
