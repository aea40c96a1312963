"""engine.decoding: loop detection (compression ratio), the repeat collapse, the counts."""

from __future__ import annotations

from engine import decoding


def test_a_loop_compresses_far_better_than_speech():
    loop = "-".join(["me"] * 200)
    speech = "So the meeting moved to Thursday, and I think we should call the supplier before then."
    assert decoding.is_loop(loop) and not decoding.is_loop(speech)
    assert decoding.compression_ratio("") == 0.0


def test_collapse_keeps_two_copies_of_a_looping_unit_and_leaves_speech_alone():
    assert decoding.collapse_repeats("-".join(["me"] * 200)).count("me") <= 3
    assert decoding.collapse_repeats("I think I think I think I think I think that") == "I think I think that"
    for text in ("so so the meeting", "the cat sat on the mat.", "no, no, no."):
        assert decoding.collapse_repeats(text) == text


def test_stats_add_up_into_the_eval_record():
    total = decoding.DecodeStats()
    total.add(decoding.DecodeStats(pieces=3, fallback=1, token_limit=1))
    total.add(decoding.DecodeStats(pieces=2, fallback=1, collapsed=1))
    assert total.as_record() == {"decode_pieces": 5, "decode_fallback": 2, "decode_token_limit": 1,
                                 "decode_collapsed": 1}
