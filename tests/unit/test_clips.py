"""engine.clips: per-clip records, the latest evaluation, the worst clips and their word diffs."""

from __future__ import annotations

import pytest

from engine import clips


ROWS = [{"id": "a", "text": "Hello world.", "duration": 1.5}, {"id": "b", "text": "one two three four"},
        {"id": "c", "text": ""}]


def test_clip_records_score_each_clip_on_its_own():
    recs = clips.clip_records(ROWS, ["hello world", "one two three", "uh"], step=10, split="test", now=1.0)
    assert [r["clip_id"] for r in recs] == ["a", "b", "c"]
    assert recs[0]["wer"] == 1.0 and recs[0]["wer_normalized"] == 0.0  # case/punctuation only
    assert recs[1]["wer"] == pytest.approx(0.25) and recs[1]["ref_words"] == 4
    assert recs[2]["wer"] == 1.0  # empty reference, non-empty prediction
    assert {r["split"] for r in recs} == {"test"} and recs[0]["duration_s"] == 1.5
    with pytest.raises(ValueError):
        clips.clip_records(ROWS, ["x"], step=1, split="test")


def test_worst_takes_the_latest_evaluation_sorted_by_normalised_wer():
    early = clips.clip_records(ROWS, ["x", "x", "x"], step=5, split="validation")
    late = clips.clip_records(ROWS, ["hello world", "one two", ""], step=10, split="validation")
    top = clips.worst(early + late, n=2)
    assert [r["step"] for r in top] == [10, 10]
    assert [r["clip_id"] for r in top] == ["b", "a"]  # ties: the longer reference first
    assert top[0]["wer_normalized"] == pytest.approx(0.5)
    lines = clips.format_worst(early + late, n=1)
    assert "worst 1 of 3 clips at step 10 (validation split)" in lines[0]
    assert lines[2].split() == ["one", "two", "-three", "-four"]
    assert "no per-clip results" in clips.format_worst([])[0]
