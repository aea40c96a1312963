"""Audio the model should not hear (issue 13, item 13): evaluation and `transcribe` cut long
recordings into pieces, and stretches that are silent by the import threshold (-50 dBFS) --
digital silence, room tone -- are never sent to the model."""

from __future__ import annotations

import numpy as np

from data_helpers import burst_audio, write_wav
from engine import segment
from engine.recipes.base import Loaded
from engine.recipes.windowed import windowed_examples

SR = 16000


def speech_gap_speech(gap: np.ndarray) -> np.ndarray:
    return np.concatenate([burst_audio(10.0, seed=1), gap, burst_audio(10.0, seed=2)]).astype(np.float32)


def room_tone(seconds: float, dbfs: float = -65.0) -> np.ndarray:
    rms = 10 ** (dbfs / 20)
    return (rms * np.random.default_rng(0).standard_normal(int(seconds * SR))).astype(np.float32)


def covered(pieces, a: float, b: float) -> float:
    """Seconds of [a, b] inside any piece."""
    return sum(max(0.0, min(e, b) - max(s, a)) for s, e in pieces)


def test_forty_seconds_of_silence_between_speech_is_left_out():
    audio = speech_gap_speech(np.zeros(40 * SR, np.float32))
    pieces = segment.speech_pieces(audio, 30.0)
    assert len(pieces) == 2, pieces
    assert covered(pieces, 10.5, 49.5) == 0.0, pieces  # nothing of the silence is decoded
    assert covered(pieces, 0.0, 10.0) > 9.5 and covered(pieces, 50.0, 60.0) > 9.5  # all speech is
    assert all(e - s <= 30.0 for s, e in pieces)
    # the old plan sent the silence to the model: ~60 s in pieces of <= 30 s
    assert covered(segment.audio_pieces(audio, 30.0), 10.5, 49.5) > 38


def test_room_tone_below_the_import_threshold_is_left_out_too():
    audio = speech_gap_speech(room_tone(40.0))
    pieces = segment.speech_pieces(audio, 30.0)
    assert covered(pieces, 10.5, 49.5) == 0.0, pieces


def test_a_long_stretch_of_speech_is_still_cut_into_windows_and_all_silence_gives_no_piece():
    audio = burst_audio(75.0, seed=3)
    pieces = segment.speech_pieces(audio, 30.0)
    assert len(pieces) >= 3 and all(e - s <= 30.0 for s, e in pieces)
    assert covered(pieces, 0.0, 75.0) > 74.0
    assert segment.speech_pieces(np.zeros(70 * SR, np.float32), 30.0) == []


def test_evaluation_examples_never_hold_the_silent_stretch(tmp_path):
    long = write_wav(tmp_path / "long.wav", speech_gap_speech(np.zeros(40 * SR, np.float32)))
    quiet = write_wav(tmp_path / "quiet.wav", np.zeros(5 * SR, np.float32))
    rows = [{"id": "long", "audio": str(long), "duration": 60.0, "text": "x"},
            {"id": "quiet", "audio": str(quiet), "duration": 5.0, "text": ""}]
    exs = windowed_examples(rows, Loaded(model=None, processor=None), window_s=30.0, for_training=False,
                            model_key="whisper")
    assert [ex.clip_id for ex in exs] == ["long", "long"]  # an all-silent clip is not decoded at all
    assert covered([(ex.start_s, ex.end_s) for ex in exs], 10.5, 49.5) == 0.0
    for ex in exs:
        assert len(ex.audio) == round((ex.end_s - ex.start_s) * SR) or abs(len(ex.audio) / SR - (ex.end_s - ex.start_s)) < 1e-3
