"""Tiny models, datasets and run configs that everyone's tests build in seconds, offline.

Import as `from tiny_models import ...` after `sys.path.insert(0, <tests dir>)`, or as
`tests.tiny_models` from the repository root (pytest runs from there).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
WHISPER_TOKENIZER = TESTS / "fixtures" / "whisper-tiny-tokenizer"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Clean targets for the synthetic clips: short, distinct, ordinary words.
TEXTS = [
    "Hello world.",
    "The cat sat on the mat.",
    "We meet on Monday.",
    "Send me the report.",
    "It is a sunny day.",
    "Thank you very much.",
    "Please call me back.",
    "The train leaves at noon.",
    "I like green tea.",
    "See you tomorrow.",
    "Open the window.",
    "That sounds good.",
]


def make_tiny_whisper(out_dir: str | Path, *, layers: int = 2, d_model: int = 64, seed: int = 0) -> Path:
    """A random 2-layer Whisper (d_model 64) saved with the real whisper-tiny.en tokenizer
    and feature extractor: loads with from_pretrained like any checkpoint folder."""
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration, WhisperProcessor

    out = Path(out_dir)
    if (out / "config.json").exists():
        return out
    torch.manual_seed(seed)
    cfg = WhisperConfig(
        vocab_size=51864, num_mel_bins=80, d_model=d_model,
        encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=d_model * 2, decoder_ffn_dim=d_model * 2,
        max_source_positions=1500, max_target_positions=448,
        pad_token_id=50256, bos_token_id=50256, eos_token_id=50256, decoder_start_token_id=50257,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, apply_spec_augment=False,
        tie_word_embeddings=True,
    )
    model = WhisperForConditionalGeneration(cfg)
    gen = GenerationConfig.from_pretrained(WHISPER_TOKENIZER)
    gen.alignment_heads = [[layers - 1, 0]]
    model.generation_config = gen
    model.save_pretrained(out)
    WhisperProcessor.from_pretrained(WHISPER_TOKENIZER).save_pretrained(out)
    return out


def synth_clip(i: int, seconds: float = 1.0, sr: int = 16000) -> np.ndarray:
    """A distinct, non-silent signal per clip index (two tones, a little noise)."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(i)
    f1, f2 = 180 + 70 * i, 900 + 110 * (i % 5)
    wave = 0.3 * np.sin(2 * np.pi * f1 * t) + 0.15 * np.sin(2 * np.pi * f2 * t)
    wave *= 0.6 + 0.4 * np.sin(2 * np.pi * (1 + i % 3) * t) ** 2  # syllable-like envelope
    return (wave + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def write_clip_folder(folder: str | Path, n: int = 6, seconds: float = 1.0,
                      long_clips: dict[int, float] | None = None) -> Path:
    """`clipNN.wav` + `clipNN.txt` pairs (the folder layout every importer accepts).
    long_clips maps clip index -> duration in seconds for clips longer than the rest."""
    import soundfile as sf

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        dur = (long_clips or {}).get(i, seconds)
        text = TEXTS[i % len(TEXTS)]
        if dur > seconds:  # a long clip: its text repeats so the target covers all of it
            text = " ".join([text] * max(1, int(dur / 2)))
        sf.write(folder / f"clip{i:02d}.wav", synth_clip(i, dur), 16000, subtype="PCM_16")
        (folder / f"clip{i:02d}.txt").write_text(text + "\n", encoding="utf-8")
    return folder


def make_tiny_dataset(ws, name: str = "tiny", n: int = 6, *, seconds: float = 1.0,
                      splits: dict[str, list[int]] | None = None, pinned: int = 2,
                      long_clips: dict[int, float] | None = None) -> dict:
    """Synthetic clips imported as dataset `name`; returns the dataset record.

    Goes through DATASETS' engine.datasets.import_dataset when it exists; otherwise writes
    the manifest and record of docs/ARCHITECTURE.md directly. `splits` (clip indices) and
    `pinned` then fix which clips are where, so tests know what they train and score on.
    """
    src = write_clip_folder(Path(ws.home) / "sources" / name, n, seconds, long_clips)
    ids = [f"clip{i:02d}" for i in range(n)]
    if splits is None:
        splits = {"train": list(range(n)), "validation": list(range(min(n, 3))), "test": list(range(min(n, 3)))}
    split_ids = {k: [ids[i] for i in v] for k, v in splits.items()}

    from engine.store import Store

    store = Store(ws)
    record = None
    try:
        from engine import datasets as ds
    except ImportError:
        ds = None
    if ds is not None and hasattr(ds, "import_dataset"):
        ds.import_dataset(ws, src, name=name)
        record = store.get_dataset(name)
    if record is None:
        from engine.audio import content_hash, probe

        manifest = Path(ws.dataset_dir(name)) / "manifest.jsonl"
        manifest.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        for cid in ids:
            wav = src / f"{cid}.wav"
            info = probe(wav)
            rows.append({"id": cid, "audio": str(wav), "duration": info.duration, "sample_rate": info.sample_rate,
                         "channels": info.channels, "sha256": content_hash(wav),
                         "text": (src / f"{cid}.txt").read_text().strip(), "verbatim": None, "speaker": None})
        manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        record = {"name": name, "source": str(src), "manifest": str(manifest), "manifest_hash": "test",
                  "clips_total": n, "clips_usable": n, "hours": sum(r["duration"] for r in rows) / 3600,
                  "problems": [], "split_seed": 0, "imported_at": time.time(), "updated_at": time.time()}
    # the tests decide the splits and pinned clips (an importer's random split would not)
    record["splits"] = split_ids
    record["pinned"] = split_ids.get("validation", [])[:pinned]
    store.upsert_dataset(record)
    return store.get_dataset(name)


RUN_DEFAULTS: dict[str, Any] = {
    "family": "seq2seq", "recipe": "whisper", "method": "full", "eval_only": False, "split": "validation",
    "max_steps": 6, "epochs": None, "batch_size": 2, "grad_accum": 1, "lr": 1e-3, "warmup_steps": 0,
    "lora_rank": 8, "lora_alpha": 16, "lora_dropout": 0.0, "lora_targets": None,
    "eval_every": 3, "save_every": 3, "seed": 0, "precision": "auto", "optimizer": "adamw",
    "gradient_checkpointing": False, "freeze_audio_encoder": False, "trust_remote_code": False,
    "max_new_tokens": 32, "language": None, "resume_from_checkpoint": None, "estimate_gb": None,
}


def write_run_config(ws, *, model_ref: str | Path, dataset: str = "tiny", run_id: str | None = None,
                     add_to_store: bool = True, **overrides: Any) -> Path:
    """A runs/<id>/ folder with config.json as the queue would write it (and a store record)."""
    from engine.runfiles import RunFiles, atomic_write_json
    from engine.store import Store

    store = Store(ws)
    cfg = dict(RUN_DEFAULTS)
    cfg.update(overrides)
    rec = store.get_dataset(dataset) or {}
    run_id = run_id or store.new_run_id(Path(str(model_ref)).name, cfg["method"])
    cfg.update(run_id=run_id, model=str(model_ref), model_ref=str(model_ref), dataset=dataset,
               dataset_manifest=rec.get("manifest"), dataset_manifest_hash=rec.get("manifest_hash"),
               workspace=str(ws.home), versions={})
    files = RunFiles(ws.run_dir(run_id)).create()
    atomic_write_json(files.config, cfg)
    if add_to_store:
        store.add_run({"id": run_id, "model": cfg["model"], "method": cfg["method"], "dataset": dataset,
                       "eval_only": cfg["eval_only"], "status": "queued"})
    return files.root


def copy_tokenizer_to(folder: str | Path) -> Path:
    """The Whisper tokenizer/feature-extractor files alone, e.g. for other families' tests."""
    folder = Path(folder)
    shutil.copytree(WHISPER_TOKENIZER, folder, dirs_exist_ok=True)
    return folder
