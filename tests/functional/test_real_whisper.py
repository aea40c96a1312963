"""Opt-in, with a real checkpoint: VOXTUNE_TEST_MODEL=/path/to/whisper-tiny.en (a local folder).

Baseline: an eval-only run scores the base model on the demo data's validation split (one
2-minute recording, cut into pieces and joined, plus a short clip). Then a short LoRA run
on the demo train split, evaluated on the same split: WER before and after are printed and
the fine-tuned model must not be worse.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from engine.runfiles import RunFiles, read_json, read_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.functional]


@pytest.fixture
def real_model() -> Path:
    path = Path(os.environ["VOXTUNE_TEST_MODEL"]).expanduser().resolve()
    assert (path / "config.json").exists(), f"VOXTUNE_TEST_MODEL={path} is not a checkpoint folder"
    return path


def test_baseline_then_lora_on_demo_data(ws, real_model, monkeypatch, capsys):
    from engine import datasets, queue, training

    monkeypatch.setenv("VOXTUNE_DEVICE", os.environ.get("VOXTUNE_DEVICE", "cpu"))
    datasets.ensure_demo(ws)
    common = dict(model=str(real_model), dataset="demo", batch_size=4, max_new_tokens=200, precision="auto", seed=0)

    base_id = queue.add(ws, method="lora", eval_only=True, split="validation", **common)
    assert training.run(ws.run_dir(base_id)) == 0, read_json(RunFiles(ws.run_dir(base_id)).result)
    before = read_json(RunFiles(ws.run_dir(base_id)).result)["metrics"]

    run_id = queue.add(ws, method="lora", max_steps=30, grad_accum=1, lr=1e-3, warmup_steps=3, lora_rank=16,
                       lora_alpha=32, lora_dropout=0.0, eval_every=15, save_every=15, **common)
    files = RunFiles(ws.run_dir(run_id))
    assert training.run(files.root) == 0, read_json(files.result)
    result = read_json(files.result)
    after = result["metrics"]
    train = list(files.iter_metrics("train"))
    samples = read_jsonl(files.samples)
    with capsys.disabled():
        print(f"\nbase  : wer {before['wer']:.3f} wer_norm {before['wer_normalized']:.3f} "
              f"fillers {before['filler_rate']:.3f} deletions {before['deletion_rate']:.3f}")
        print(f"LoRA  : wer {after['wer']:.3f} wer_norm {after['wer_normalized']:.3f} "
              f"fillers {after['filler_rate']:.3f} deletions {after['deletion_rate']:.3f}")
        print(f"loss {train[0]['loss']:.3f} -> {train[-1]['loss']:.3f}; best {result['best']}")
        print("sample:", samples[-1]["prediction"][:300], file=sys.stdout)
    assert train[-1]["loss"] < train[0]["loss"]
    assert {s["sample_id"] for s in samples} == {"long_project", "short_11"}
    assert after["wer"] <= before["wer"] + 1e-9
    from engine import segment

    prov = segment.provenance(ws, "demo", str(real_model))
    assert prov and "pause_fallback" not in prov["methods"], prov  # long_recipe cut by word times


def test_model_timestamps_time_the_clean_words_of_a_long_recording(real_model):
    """Whisper's own segment timestamps (what segmentation uses when a clip has no verbatim
    timestamps) line up with the clean transcript of a 2-minute demo recording."""
    import json

    from engine import loading, segment
    from engine.audio import load_audio
    from engine.recipes import get_recipe

    demo = Path(__file__).resolve().parents[2] / "data" / "demo_clips"
    row = next(json.loads(line) for line in (demo / "manifest.jsonl").read_text().splitlines()
               if "long_project" in line)
    audio = load_audio(demo / Path(row["audio"]).name)
    recipe = get_recipe("whisper")
    loaded = loading.load_model(recipe, str(real_model), method="full", trainable=False)
    timed = recipe.words_fn(loaded)(audio)
    assert timed and timed[-1][2] > 90.0  # words beyond the first windows: long-form decoding
    spans, share = segment.align(row["text"].split(), timed)
    assert share >= segment.MIN_MATCH, share
    assert all(a <= b for a, b in spans)
