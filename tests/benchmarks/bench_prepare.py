"""Preparation speed for a 5-minute recording, in x real time (audio seconds per second).

    .venv/bin/python tests/benchmarks/bench_prepare.py [--repeat 3]
    VOXTUNE_TEST_MODEL=/path/to/whisper-tiny.en .venv/bin/python tests/benchmarks/bench_prepare.py

The 5-minute clip is the demo's two long clips plus short ones, end to end, written as a
16 kHz wav in a temp folder. Baseline, measured in the same run: decoding the clip
(engine.audio.load_audio). Each figure is x real time and its cost relative to the baseline.
With VOXTUNE_TEST_MODEL set, the base model's word timestamps are timed as well (the part of
preparation that dominates when no verbatim timestamps exist; it happens once per clip and
is cached).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from engine import segment as S  # noqa: E402
from engine.audio import load_audio  # noqa: E402
from engine.datasets import DEMO_DIR  # noqa: E402

SR = 16000


def five_minute_row(folder: Path) -> dict:
    rows = [json.loads(line) for line in (DEMO_DIR / "manifest.jsonl").read_text().splitlines()]
    rows.sort(key=lambda r: -len(r.get("verbatim_segments") or []))  # long clips first
    pieces, texts, segs, t = [], [], [], 0.0
    for r in rows * 2:
        audio = load_audio(DEMO_DIR / r["audio"])
        for s in r.get("verbatim_segments") or [{"start": 0.0, "end": len(audio) / SR, "text": r["verbatim"]}]:
            segs.append({"start": t + s["start"], "end": t + s["end"], "text": s["text"]})
        pieces.append(audio)
        texts.append(r["text"])
        t += len(audio) / SR
        if t >= 300:
            break
    path = folder / "five_minutes.wav"
    sf.write(str(path), np.concatenate(pieces), SR)
    return {"id": "five", "audio": str(path), "duration": t, "text": " ".join(texts), "verbatim_segments": segs}


def timed(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        row = five_minute_row(Path(tmp))
        dur = row["duration"]
        no_ts = {k: v for k, v in row.items() if k != "verbatim_segments"}
        words = S.words_from_segments(row["verbatim_segments"])

        base = timed(lambda: load_audio(row["audio"]), args.repeat)
        cases = {
            "decode only (baseline)": lambda: load_audio(row["audio"]),
            "segment: verbatim timestamps": lambda: S.segment_clip(row, load_audio(row["audio"])),
            "segment: given word timestamps (align only)": lambda: S.segment_clip(no_ts, load_audio(row["audio"]),
                                                                                  words_fn=lambda a: words),
            "segment: pause fallback": lambda: S.segment_clip(no_ts, load_audio(row["audio"])),
            "multi_item audio pieces": lambda: S.audio_pieces(load_audio(row["audio"])),
        }
        print(f"clip: {dur:.0f} s ({dur / 60:.1f} min), {len(row['text'].split())} clean words")
        print(f"{'case':<46} {'x real time':>12} {'vs decode':>10}")
        for name, fn in cases.items():
            t = base if name.startswith("decode") else timed(fn, args.repeat)
            print(f"{name:<46} {dur / t:>11.0f}x {t / base:>9.2f}x")
        ref = os.environ.get("VOXTUNE_TEST_MODEL")
        if ref:
            import torch
            from transformers import WhisperForConditionalGeneration, WhisperProcessor

            torch.set_num_threads(max(1, (os.cpu_count() or 2)))
            fn = S.whisper_words_fn(WhisperForConditionalGeneration.from_pretrained(ref),
                                    WhisperProcessor.from_pretrained(ref))
            t = timed(lambda: S.segment_clip(no_ts, load_audio(row["audio"]), words_fn=fn), 1)
            print(f"{'segment: base-model timestamps (' + Path(ref).name + ', CPU)':<46} {dur / t:>11.1f}x {t / base:>9.0f}x")


if __name__ == "__main__":
    main()
