"""Examples for models that hear at most a fixed window (Whisper, SeamlessM4T, w2v-BERT CTC).

Shared by every windowed recipe so the long-audio rule lives in one place: a clip within
the window is one example; a longer one becomes segments with their slice of the clean
text for training, and pause-cut pieces joined by the driver for evaluation. Nothing is
ever truncated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from engine.recipes.base import Example, Loaded

SAMPLE_RATE = 16_000


def windowed_examples(rows: Sequence[dict], loaded: Loaded, *, window_s: float, for_training: bool,
                      model_key: str, words_fn: Any = None) -> list[Example]:
    """Manifest rows -> examples for a model that hears at most `window_s` seconds.

    A clip within the window is one example. For training, a longer clip becomes segments
    with their slice of the clean text (engine.segment; cached per dataset and model when
    the driver put workspace/dataset in loaded.extra; `words_fn` times the words of a clip
    without verbatim timings, for the clean text to be aligned to). For evaluation it becomes audio pieces
    cut at pauses with no target of their own, leaving out stretches that are silent by the
    import threshold (engine.segment.speech_pieces: a model fed silence invents words); the
    driver joins their predictions and scores the whole clip. Nothing is truncated.
    """
    from engine import segment
    from engine.audio import is_silent, load_audio

    long_rows = [r for r in rows if float(r.get("duration") or 0) > window_s]
    prepared: dict[str, list[dict]] = {}
    ctx = loaded.extra
    if for_training and long_rows and ctx.get("workspace") and ctx.get("dataset"):
        from engine.workspace import Workspace

        prepared = segment.prepare(Workspace(Path(ctx["workspace"])), ctx["dataset"],
                                   str(ctx.get("model") or model_key), long_rows, window_s,
                                   words_fn=words_fn, manifest_hash=ctx.get("manifest_hash"))
    out: list[Example] = []
    for row in rows:
        audio = load_audio(row["audio"], sr=SAMPLE_RATE)
        duration = len(audio) / SAMPLE_RATE
        text = row.get("text", "") or ""
        if not for_training and is_silent(audio, SAMPLE_RATE):
            continue  # nothing to hear: the clip's transcript is empty, the model is not asked
        if duration <= window_s + 1e-3:
            out.append(Example(row["id"], audio, text, 0, 0.0, duration))
        elif for_training:
            segs = prepared.get(row["id"]) or segment.segment_clip(row, audio, window_s)[0]
            for k, s in enumerate(segs):
                out.append(Example(row["id"], _slice(audio, s["start"], s["end"]), s["text"], k,
                                   s["start"], s["end"], {"segments": len(segs)}))
        else:
            pieces = segment.speech_pieces(audio, window_s, SAMPLE_RATE)  # silent stretches never decoded
            for k, (a, b) in enumerate(pieces):
                out.append(Example(row["id"], _slice(audio, a, b), "", k, a, b,
                                   {"segments": len(pieces), "score_text": False}))
    for ex in out:
        if ex.end_s - ex.start_s > window_s + 0.05:
            raise ValueError(f"clip {ex.clip_id}: segment {ex.segment} is {ex.end_s - ex.start_s:.1f} s, over the "
                             f"{window_s:.0f} s window (it would be truncated); re-import the clip")
    return out


def _slice(audio, start: float, end: float):
    return audio[int(round(start * SAMPLE_RATE)): int(round(end * SAMPLE_RATE))]


class WindowedFeatureRecipe:
    """For recipes whose feature extractor pads a batch to its longest clip (SeamlessM4T's,
    shared by w2v-BERT): examples by the window rule above, features with an attention mask.
    Subclasses set `key` and `window_s`."""

    key: str
    window_s: float

    def examples(self, rows: Sequence[dict], loaded: Loaded, *, for_training: bool) -> list[Example]:
        return windowed_examples(rows, loaded, window_s=self.window_s, for_training=for_training,
                                 model_key=self.key)

    def _features(self, batch: Sequence[Example], loaded: Loaded) -> dict:
        fe = loaded.processor.feature_extractor
        return dict(fe([ex.audio for ex in batch], sampling_rate=SAMPLE_RATE, padding=True,
                       return_attention_mask=True, return_tensors="pt"))
