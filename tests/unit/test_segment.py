"""Long clips -> <= 30 s segments whose clean targets join back to the whole transcript."""

from __future__ import annotations

import json

import pytest

from data_helpers import burst_audio
from engine import datasets as D
from engine import segment as S
from engine.audio import load_audio

SR = 16000


def long_row(ws, clip_id="long_project"):
    return next(r for r in D.load_rows(ws, "demo") if r["id"] == clip_id)


def check_segments(segs, row, duration, window=30.0):
    assert len(segs) >= 2
    assert all(s["end"] - s["start"] <= window + 1e-6 for s in segs)
    assert segs[0]["start"] == 0.0 and segs[-1]["end"] == pytest.approx(duration, abs=1e-3)
    assert all(a["end"] == b["start"] for a, b in zip(segs, segs[1:]))  # contiguous: no audio dropped
    assert " ".join(s["text"] for s in segs if s["text"]) == row["text"]  # exact clean transcript
    assert all(s["text"] for s in segs)


def test_two_minute_clip_with_verbatim_timestamps(ws):
    row = long_row(ws)
    audio = load_audio(row["audio"])
    assert len(audio) / SR > 120
    segs, info = S.segment_clip(row, audio, 30.0)
    assert info["method"] == "verbatim_timestamps" and info["matched"] > 0.95
    check_segments(segs, row, len(audio) / SR)
    # cuts fall between sentences here: every segment ends a sentence
    assert all(s["text"].endswith((".", "?", "!")) for s in segs)


def test_two_minute_clip_with_model_word_timestamps_aligned_to_clean_text(ws):
    row = dict(long_row(ws, "long_recipe"))
    timed = S.words_from_segments(row.pop("verbatim_segments"))  # stands in for the base model's words
    calls = []

    def words_fn(audio):
        calls.append(len(audio))
        return [(w.strip(",.").lower(), s, e) for w, s, e in timed]  # models drop punctuation/case

    audio = load_audio(row["audio"])
    segs, info = S.segment_clip(row, audio, 30.0, words_fn)
    assert info["method"] == "model_timestamps" and calls == [len(audio)]
    check_segments(segs, row, len(audio) / SR)
    assert all(s["text"].endswith(".") for s in segs)


def test_fallback_without_timestamps_and_with_useless_ones(ws):
    row = dict(long_row(ws))
    row.pop("verbatim_segments")
    audio = load_audio(row["audio"])
    segs, info = S.segment_clip(row, audio, 30.0)
    assert info["method"] == "pause_fallback"
    check_segments(segs, row, len(audio) / SR)
    segs, info = S.segment_clip(row, audio, 30.0, lambda a: [("zebra", 0.0, 1.0), ("quux", 1.0, 2.0)])
    assert info["method"] == "pause_fallback" and info["rejected_model_timestamps"] < 0.3
    check_segments(segs, row, len(audio) / SR)


def test_synthetic_clip_cuts_at_pauses():
    audio = burst_audio(95.0, pause_every=10, pause_s=0.8)
    pause_list = [(s, e) for s, e in S.pauses(audio, SR) if e - s > 0.6]
    row = {"id": "x", "text": " ".join(f"w{i}." for i in range(200))}
    segs, info = S.segment_clip(row, audio, 30.0)
    check_segments(segs, row, 95.0)
    for s in segs[:-1]:  # every cut lands in one of the long pauses
        assert any(ps - 0.05 <= s["end"] <= pe + 0.05 for ps, pe in pause_list), s["end"]


def test_short_clip_is_one_whole_segment():
    row = {"id": "s", "text": "Just  one\nline."}
    segs, info = S.segment_clip(row, burst_audio(5.0), 30.0)
    assert info == {"method": "whole"} and segs == [{"start": 0.0, "end": 5.0, "text": "Just one line."}]


# -- alignment on hand-made words ---------------------------------------------------------
def test_align_skips_fillers_and_false_starts():
    clean = "We went to the store.".split()
    timed = [("um", 0.0, 0.3), ("we", 0.4, 0.6), ("we", 0.7, 0.9), ("went", 1.0, 1.3), ("to", 1.4, 1.5),
             ("uh", 1.6, 1.9), ("the", 2.0, 2.1), ("store", 2.2, 2.6)]
    spans, share = S.align(clean, timed)
    assert share == 1.0
    assert spans[1:] == [(1.0, 1.3), (1.4, 1.5), (2.0, 2.1), (2.2, 2.6)]
    assert spans[0][0] in (0.4, 0.7)


def test_align_interpolates_words_the_model_missed_and_keeps_order():
    clean = "the quick brown fox jumps".split()
    timed = [("the", 0.0, 0.2), ("fox", 1.0, 1.2), ("jumps", 1.3, 1.6)]
    spans, share = S.align(clean, timed)
    assert share == pytest.approx(3 / 5)
    assert spans[0] == (0.0, 0.2) and spans[3] == (1.0, 1.2)
    assert 0.2 <= spans[1][0] < spans[1][1] <= spans[2][0] < spans[2][1] <= 1.0 + 1e-9
    starts = [s for s, _ in spans]
    assert starts == sorted(starts)


def test_align_misheard_words_are_placed_before_the_next_match():
    spans, share = S.align(["colour", "red"], [("color", 0.0, 0.5), ("red", 0.6, 0.9)])
    assert spans[1] == (0.6, 0.9) and share == 0.5
    assert 0.0 <= spans[0][0] < spans[0][1] <= 0.6


def test_align_prefers_the_restart_after_a_false_start():
    clean = "We went home.".split()
    timed = [("we", 0.0, 0.2), ("uh", 0.3, 0.5), ("we", 1.0, 1.2), ("went", 1.2, 1.5), ("home", 1.5, 1.9)]
    spans, share = S.align(clean, timed)
    assert share == 1.0 and spans[0] == (1.0, 1.2)


def test_hallucinated_zero_length_words_are_ignored():
    clean = "one two three four".split()
    timed = [("one", 0.0, 0.3)] + [("see", 1.0, 1.0)] * 5 + [("two", 0.4, 0.4), ("four", 3.0, 3.3)]
    spans, share = S.align(clean, timed)
    assert spans[0] == (0.0, 0.3) and spans[3] == (3.0, 3.3) and share == 0.5


def test_words_from_segments_spreads_time_inside_a_segment():
    words = S.words_from_segments([{"start": 1.0, "end": 3.0, "text": "aa bb"}])
    assert words == [("aa", 1.0, 2.0), ("bb", 2.0, 3.0)]


# -- cache, strategies, plan --------------------------------------------------------------
def test_prepare_caches_per_dataset_and_model_with_provenance(ws):
    rows = [dict(r) for r in D.load_rows(ws, "demo")]
    for r in rows:
        r.pop("verbatim_segments", None)
    calls = []

    def words_fn(audio):
        calls.append(1)
        return []  # unusable: forces the fallback, but it must be asked only once per clip

    first = S.prepare(ws, "demo", "whisper-small", rows, 30.0, words_fn, manifest_hash="abc")
    assert len(calls) == 2 and set(first) == {r["id"] for r in rows}
    again = S.prepare(ws, "demo", "whisper-small", rows, 30.0, words_fn, manifest_hash="abc")
    assert again == first and len(calls) == 2
    prov = S.provenance(ws, "demo", "whisper-small")
    assert prov["manifest_hash"] == "abc" and prov["methods"] == {"whole": 12, "pause_fallback": 2}
    cached = json.loads(S.cache_path(ws, "demo", "whisper-small").read_text())
    assert cached["clips"]["long_recipe"]["method"] == "pause_fallback"
    assert rows[-1]["id"] == "long_recipe"
    rows[-1]["text"] = rows[-1]["text"] + " Extra."  # a changed transcript redoes that clip only
    S.prepare(ws, "demo", "whisper-small", rows, 30.0, words_fn)
    assert len(calls) == 3
    S.prepare(ws, "demo", "other-model", rows[:1], 30.0)  # another model has its own cache file
    assert S.cache_path(ws, "demo", "other-model").exists() and len(calls) == 3


def test_segment_examples_and_join_by_clip(ws):
    rows = [r for r in D.load_rows(ws, "demo") if r["id"] in ("short_01", "long_recipe")]
    exs = S.examples(ws, "demo", {"name": "whisper-small", "window_s": 30, "long_audio": "segment"}, rows)
    long = [e for e in exs if e.clip_id == "long_recipe"]
    assert len(long) >= 5 and all(len(e.audio) <= 30 * SR for e in exs)
    full = len(load_audio(next(r["audio"] for r in rows if r["id"] == "long_recipe")))
    assert sum(len(e.audio) for e in long) == pytest.approx(full, abs=len(long))  # nothing dropped
    joined = S.join_by_clip(list(reversed(exs)), [e.text for e in reversed(exs)])
    assert joined == {r["id"]: r["text"] for r in rows}


def test_multi_item_and_native(ws, tmp_path):
    row = long_row(ws)
    ex = S.multi_item_example(row)
    total = len(load_audio(row["audio"]))
    assert isinstance(ex.audio, list) and len(ex.audio) >= 5 and all(len(a) <= 30 * SR for a in ex.audio)
    assert sum(len(a) for a in ex.audio) == pytest.approx(total, abs=len(ex.audio))
    assert ex.text == row["text"]
    nat = S.native_example(row)
    assert len(nat.audio) == total and nat.text == row["text"]
    # a native model with a shorter maximum than the clip: segmented, never truncated
    exs = S.examples(ws, "demo", {"name": "m", "window_s": 60, "long_audio": "native"}, [row])
    assert len(exs) >= 3 and " ".join(e.text for e in exs) == row["text"]


def test_plan_says_how_each_long_clip_is_handled(ws):
    rows = D.load_rows(ws, "demo")
    p = S.plan(rows, {"name": "whisper-small", "window_s": 30, "long_audio": "segment"})
    assert p["over_window"] == 2 and p["clips"] == 14
    assert all("verbatim timestamps" in h["how"] and h["pieces"] >= 5 for h in p["handling"])
    p = S.plan(rows, {"name": "qwen2-audio", "window_s": 30, "long_audio": "multi_item"})
    assert "audio items" in p["handling"][0]["how"]
    p = S.plan(rows, {"name": "voxtral", "window_s": 1800, "long_audio": "native"})
    assert p["over_window"] == 0 and "one item" in p["summary"]


def test_plan_with_catalog_entries(ws):
    catalog = pytest.importorskip("engine.catalog")
    rows = D.load_rows(ws, "demo")
    entry = catalog.get_model("whisper-small")
    assert S.plan(rows, entry)["over_window"] == 2


def test_words_fn_that_fails_falls_back_and_says_why(ws):
    row = dict(long_row(ws))
    row.pop("verbatim_segments")

    def broken(audio):
        raise RuntimeError("no alignment heads")

    segs, info = S.segment_clip(row, load_audio(row["audio"]), 30.0, broken)
    assert info["method"] == "pause_fallback" and "no alignment heads" in info["model_timestamps_error"]
    check_segments(segs, row, len(load_audio(row["audio"])) / SR)


@pytest.mark.slow
@pytest.mark.parametrize("clip_id", ["long_recipe", "long_project"])
def test_real_whisper_word_timestamps_cut_between_sentences(ws, clip_id):
    """With a real checkpoint (VOXTUNE_TEST_MODEL=/path/to/whisper-tiny.en): the base model's
    word times, aligned to the clean text, put every cut in the pause between two sentences."""
    import os

    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    torch.set_num_threads(2)
    ref = os.environ["VOXTUNE_TEST_MODEL"]
    words_fn = S.whisper_words_fn(WhisperForConditionalGeneration.from_pretrained(ref),
                                  WhisperProcessor.from_pretrained(ref))
    row = dict(long_row(ws, clip_id))
    truth = row.pop("verbatim_segments")  # one per sentence, exact times
    audio = load_audio(row["audio"])
    segs, info = S.segment_clip(row, audio, 30.0, words_fn)
    assert info["method"] == "model_timestamps" and info["matched"] > 0.7
    check_segments(segs, row, len(audio) / SR)
    done = 0  # sentences so far (the demo's clean sentences and verbatim segments pair up)
    for seg in segs[:-1]:
        done += seg["text"].count(". ") + seg["text"].endswith(".")
        assert seg["text"].endswith("."), seg
        gap = (truth[done - 1]["end"] - 0.6, truth[done]["start"] + 0.6)  # espeak's trailing pause + ours
        assert gap[0] <= seg["end"] <= gap[1], (seg, gap)
