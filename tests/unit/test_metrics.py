"""Metric definitions checked against hand-computed values."""

import pytest

from engine import metrics


def test_normalize_lowercases_and_strips_punctuation_but_keeps_inner_apostrophes():
    assert metrics.normalize("Hello, World! Don't   STOP... 'quoted'") == "hello world don't stop quoted"
    assert metrics.normalize("well\u2019s end-to-end") == "well's end to end"


def test_wer_counts_case_and_punctuation_but_normalized_does_not():
    refs = ["The cat sat.", "hello world"]
    hyps = ["the cat sat", "hello world"]
    # "The"->"the", "sat."->"sat": 2 substitutions over 5 reference words
    assert metrics.wer(refs, hyps) == pytest.approx(2 / 5)
    assert metrics.wer_normalized(refs, hyps) == 0.0


def test_wer_is_corpus_level():
    # clip 1: 1 deletion of 4 words; clip 2: 1 substitution of 1 word -> 2/5, not mean(0.25, 1)
    assert metrics.wer(["a b c d", "x"], ["a b c", "y"]) == pytest.approx(2 / 5)


def test_cer_hand_computed():
    # "abcd" vs "abxd": 1 substitution over 4 characters
    assert metrics.cer(["abcd"], ["abxd"]) == pytest.approx(0.25)
    # empty prediction: every reference character is an error
    assert metrics.cer(["ab", "cd"], ["ab", ""]) == pytest.approx(2 / 4)


def test_empty_reference_and_prediction():
    assert metrics.wer([""], [""]) == 0.0
    assert metrics.wer([""], ["words"]) == 1.0
    assert metrics.wer(["two words"], [""]) == 1.0
    assert metrics.filler_rate([""], [""]) == 0.0


def test_filler_rate_counts_only_fillers_beyond_the_reference():
    ref = "I like this plan and we should start"
    hyp = "um I like this plan and you know we uh should start"
    # fillers in hyp: um, uh, "you know" (3); "like" also in the reference -> not counted.
    # normalised hyp has 12 words -> 3/12
    assert metrics.count_fillers(hyp) == {"um": 1, "uh": 1, "like": 1, "you know": 1}
    assert metrics.filler_rate([ref], [hyp]) == pytest.approx(3 / 12)
    assert metrics.filler_rate([ref], [ref]) == 0.0


def test_filler_rate_phrases_are_whole_words():
    # "humming" and "mean" alone are not fillers; "I mean," is.
    assert metrics.count_fillers("Humming, I mean, what they mean") == {"i mean": 1}


def test_deletion_rate_is_share_of_reference_words_dropped():
    ref = "we will meet on Monday at noon"  # 7 words
    hyp = "we meet Monday at noon"  # drops "will" and "on"
    assert metrics.deletion_rate([ref], [hyp]) == pytest.approx(2 / 7)
    # insertions and substitutions are not deletions
    assert metrics.deletion_rate(["a b"], ["a c d"]) == 0.0


def test_score_has_every_metric_and_checks_lengths():
    out = metrics.score(["Hello there."], ["hello there"])
    assert set(out) == {"wer", "cer", "wer_normalized", "filler_rate", "deletion_rate"}
    assert out["wer_normalized"] == 0.0 and out["wer"] == 1.0
    with pytest.raises(ValueError, match="2 references but 1 predictions"):
        metrics.wer(["a", "b"], ["a"])
