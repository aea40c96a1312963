"""Scores for "audio -> clean transcript": accuracy against the clean reference, plus two
cleanup measures (fillers left in, words over-cleaned away). Pure, light (jiwer only).

All scores are corpus-level: error counts summed over clips, divided by summed reference
sizes, so long clips weigh by their length (the way jiwer scores a list).

Definitions
-----------
wer            word error rate on the texts as written (case and punctuation count).
cer            character error rate on the texts as written.
wer_normalized WER after `normalize`: lower-case, punctuation removed (apostrophes inside
               words kept: "don't"), whitespace collapsed.
filler_rate    fillers the model left in, per word of output: for each filler in FILLERS,
               occurrences in the normalised prediction beyond those in the normalised
               reference (max(0, pred - ref)), summed over fillers and clips, divided by
               the number of predicted words. 0.0 = clean; 0.05 = one stray filler every 20
               words. Counting only the excess means a legitimate "like" that the clean
               reference keeps is not a filler.
deletion_rate  reference words the prediction dropped (jiwer deletions on normalised
               text), divided by the number of reference words: over-cleaning.
"""

from __future__ import annotations

import unicodedata
from typing import Sequence

import jiwer

# Hesitations and discourse fillers that a clean transcript removes. Phrases are matched as
# whole-word sequences on normalised text.
FILLERS: tuple[str, ...] = (
    "um", "umm", "uh", "uhh", "uhm", "er", "erm", "ah", "eh", "hmm", "mm", "mhm",
    "like", "you know", "i mean",
)

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})


def normalize(text: str) -> str:
    """Lower-case, punctuation removed (in-word apostrophes kept), spaces collapsed."""
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()
    chars = []
    for ch in text:
        if ch == "'" or ch.isalnum() or ch.isspace():
            chars.append(ch)
        elif unicodedata.category(ch).startswith("M"):  # combining accents stay with letters
            chars.append(ch)
        else:
            chars.append(" ")
    words = [w.strip("'") for w in "".join(chars).split()]
    return " ".join(w for w in words if w)


def _clean(text: str) -> str:
    return " ".join(text.split())


def _pairs(references: Sequence[str], predictions: Sequence[str]) -> None:
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} references but {len(predictions)} predictions")


def _word_counts(references: Sequence[str], predictions: Sequence[str]) -> tuple[int, int, int, int, int]:
    """(substitutions, deletions, insertions, reference words, hypothesis words), summed."""
    s = d = i = n_ref = n_hyp = 0
    for ref, hyp in zip(references, predictions):
        rw, hw = ref.split(), hyp.split()
        n_ref += len(rw)
        n_hyp += len(hw)
        if not rw:
            i += len(hw)
            continue
        if not hw:
            d += len(rw)
            continue
        out = jiwer.process_words(" ".join(rw), " ".join(hw))
        s, d, i = s + out.substitutions, d + out.deletions, i + out.insertions
    return s, d, i, n_ref, n_hyp


def _rate(errors: int, total: int, hyp_total: int) -> float:
    """errors/total; with an empty reference, 0 when the prediction is empty too, else 1."""
    if total == 0:
        return 0.0 if hyp_total == 0 else 1.0
    return errors / total


def wer(references: Sequence[str], predictions: Sequence[str]) -> float:
    _pairs(references, predictions)
    s, d, i, n_ref, n_hyp = _word_counts(references, predictions)
    return _rate(s + d + i, n_ref, n_hyp)


def wer_normalized(references: Sequence[str], predictions: Sequence[str]) -> float:
    return wer([normalize(r) for r in references], [normalize(p) for p in predictions])


def cer(references: Sequence[str], predictions: Sequence[str]) -> float:
    _pairs(references, predictions)
    errors = n_ref = n_hyp = 0
    for ref, hyp in zip(references, predictions):
        ref, hyp = _clean(ref), _clean(hyp)
        n_ref, n_hyp = n_ref + len(ref), n_hyp + len(hyp)
        if not ref or not hyp:
            errors += max(len(ref), len(hyp))
            continue
        out = jiwer.process_characters(ref, hyp)
        errors += out.substitutions + out.deletions + out.insertions
    return _rate(errors, n_ref, n_hyp)


def count_fillers(text: str) -> dict[str, int]:
    """Occurrences of each filler in normalised `text` (phrases as whole-word sequences)."""
    words = normalize(text).split()
    counts: dict[str, int] = {}
    for filler in FILLERS:
        f = filler.split()
        n = sum(1 for k in range(len(words) - len(f) + 1) if words[k:k + len(f)] == f)
        if n:
            counts[filler] = n
    return counts


def filler_rate(references: Sequence[str], predictions: Sequence[str]) -> float:
    _pairs(references, predictions)
    extra = n_hyp = 0
    for ref, hyp in zip(references, predictions):
        ref_counts, hyp_counts = count_fillers(ref), count_fillers(hyp)
        extra += sum(max(0, n - ref_counts.get(f, 0)) for f, n in hyp_counts.items())
        n_hyp += len(normalize(hyp).split())
    return extra / n_hyp if n_hyp else 0.0


def deletion_rate(references: Sequence[str], predictions: Sequence[str]) -> float:
    _pairs(references, predictions)
    _, d, _, n_ref, _ = _word_counts([normalize(r) for r in references], [normalize(p) for p in predictions])
    return d / n_ref if n_ref else 0.0


def score(references: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Every metric at once, as written to metrics.jsonl eval records."""
    return {
        "wer": wer(references, predictions),
        "cer": cer(references, predictions),
        "wer_normalized": wer_normalized(references, predictions),
        "filler_rate": filler_rate(references, predictions),
        "deletion_rate": deletion_rate(references, predictions),
    }
