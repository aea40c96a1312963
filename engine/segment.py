"""Long recordings versus model windows: nothing is ever silently truncated.

A model's catalog entry says how it takes audio longer than its window (`long_audio`):

- `segment` (Whisper, Distil-Whisper, SeamlessM4T, w2v-BERT CTC): the clip is cut into
  pieces of at most `window_s`, at pauses, and each piece gets the slice of the *clean*
  transcript spoken in it. To know which clean word is spoken when, we need word times:
    1. `verbatim_timestamps`: the manifest's `verbatim_segments` ([{start, end, text}], e.g.
       one per sentence); word times are spread inside each segment by word length;
    2. `model_timestamps`: the recipe's `words_fn(audio) -> [(word, start_s, end_s)]`
       (the base model transcribing with timestamps);
    3. `pause_fallback` when neither is usable: clean words are spread over the *voiced*
       frames in proportion to their length (good enough for cuts at long pauses).
  In 1 and 2 the clean words are aligned to the timed words by word-level edit distance
  (rapidfuzz Indel, i.e. a longest common subsequence: only exact matches anchor times), so
  fillers and false starts in the timed words are skipped, and clean words without a match
  are placed between their neighbours. Cuts fall between words, at the longest audio pause
  near the boundary (preferring boundaries whose both words were matched), so joining the
  segments' texts with single spaces gives back the clean transcript exactly.
- `multi_item` (Qwen2-Audio): the whole clip as several <= window_s audio items (cut at
  pauses) in one prompt, with the whole clean transcript as target.
- `native` (Voxtral, Qwen2.5-Omni, Granite): the whole clip as one item; a clip longer than
  the model's own maximum (`window_s`) is segmented instead, and `plan` says so.

Prepared segments are cached per (dataset, model) under <workspace>/.voxtune/cache/segments/
with their provenance (method per clip, model, manifest hash), so later runs reuse them and
never need the base model again for the same data.

Evaluating a long clip: transcribe every example, then `join_by_clip(examples, predictions)`
gives one hypothesis per clip (segments in order, joined by spaces) to score against the
row's whole clean `text`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from engine.audio import FRAME_S, SILENCE_DBFS, TARGET_SR, frame_db, is_silent, load_audio, pauses, voiced_seconds

WordTime = tuple[str, float, float]
WordsFn = Callable[[np.ndarray], Sequence[WordTime]]
DEFAULT_WINDOW_S = 30.0
CACHE_VERSION = 1
MIN_MATCH = 0.3  # below this share of clean words matched, model timestamps are not usable
_NORM_RE = re.compile(r"[^\w']+")


def norm(word: str) -> str:
    return _NORM_RE.sub("", word.lower())


# -- word times ------------------------------------------------------------------------------
def words_from_segments(segments: Sequence[dict]) -> list[WordTime]:
    """Timed phrases ([{start, end, text}]) -> timed words, spread by word length."""
    out: list[WordTime] = []
    for seg in segments:
        toks = str(seg["text"]).split()
        if not toks:
            continue
        start, end = float(seg["start"]), float(seg["end"])
        weights = np.array([len(t) + 1 for t in toks], dtype=float)
        edges = start + (end - start) * np.concatenate([[0], np.cumsum(weights)]) / weights.sum()
        out += [(t, float(edges[i]), float(edges[i + 1])) for i, t in enumerate(toks)]
    return out


def align(clean_words: Sequence[str], timed: Sequence[WordTime]) -> tuple[list[tuple[float, float]], float]:
    spans, share, _ = align_detail(clean_words, timed)
    return spans, share


def align_detail(clean_words: Sequence[str], timed: Sequence[WordTime]
                 ) -> tuple[list[tuple[float, float]], float, list[bool]]:
    """Time span of every clean word, and the share of clean words matched to a timed word.

    Word-level edit distance: words matched exactly take the timed word's span; timed words
    the clean text lacks (fillers, false starts) are skipped; clean words without an exact
    match (misheard, missing, or a hallucinating stretch) are spread between their neighbours.
    """
    from rapidfuzz.distance import Indel

    spans: list[tuple[float, float] | None] = [None] * len(clean_words)
    sure = [False] * len(clean_words)  # matched exactly (its time is not interpolated)
    if not clean_words:
        return [], 0.0, []
    # words squeezed into no time are a decoder looping or hallucinating, not speech
    timed = [w for w in timed if w[2] - w[1] >= 0.02 and norm(w[0])]
    if not timed:
        return [], 0.0, []
    # Aligned back to front: among equally cheap alignments this matches a repeated word to
    # its *last* occurrence, the restart after a false start ("we, uh, we went" -> 2nd "we").
    src = [norm(w) for w in reversed(clean_words)]
    dst = [norm(w) for w, _, _ in reversed(timed)]
    n, m = len(src), len(dst)
    matched = 0
    for op in Indel.opcodes(src, dst):
        if op.tag == "equal":
            matched += op.src_end - op.src_start
        if op.tag == "equal":  # only exact matches anchor times; the rest is interpolated
            for k in range(op.src_end - op.src_start):
                j = m - 1 - (op.dest_start + k)
                spans[n - 1 - (op.src_start + k)] = (timed[j][1], timed[j][2])
                sure[n - 1 - (op.src_start + k)] = True
    return _interpolate(spans, timed[0][1], timed[-1][2], clean_words), matched / len(clean_words), sure


SECONDS_PER_CHAR = 0.07  # ~14 characters a second: ordinary speech


def _interpolate(spans: list[tuple[float, float] | None], t_first: float, t_last: float,
                 words: Sequence[str] = ()) -> list[tuple[float, float]]:
    """Place unmatched words right after the previous matched word at a speaking pace
    (squeezed if the gap is short), so a pause or a false start after them stays a gap
    between words instead of being smeared over them; keep times monotonic."""
    out: list[tuple[float, float]] = []
    n = len(spans)
    i = 0
    prev_end = t_first
    while i < n:
        if spans[i] is not None:
            s, e = spans[i]  # type: ignore[misc]
            s = max(s, prev_end if out else s)
            e = max(e, s)
            out.append((s, e))
            prev_end = e
            i += 1
            continue
        j = i
        while j < n and spans[j] is None:
            j += 1
        nxt = spans[j][0] if j < n else max(t_last, prev_end)  # type: ignore[index]
        nxt = max(nxt, prev_end)
        lengths = [SECONDS_PER_CHAR * (len(words[k]) + 1) if words else 0.0 for k in range(i, j)]
        natural = sum(lengths)
        if natural <= 0 or natural > nxt - prev_end:  # no room: spread evenly over the gap
            lengths = [(nxt - prev_end) / (j - i)] * (j - i)
        t = prev_end
        for d in lengths:
            out.append((t, t + d))
            t += d
        prev_end = max(t, prev_end)
        i = j
    return out


def spread_over_voice(clean_words: Sequence[str], audio: np.ndarray, sr: int) -> list[tuple[float, float]]:
    """Fallback word times: words take voiced time in proportion to their length."""
    voiced = voiced_seconds(audio, sr)
    if voiced.sum() == 0:
        voiced = np.ones_like(voiced)
    cum = np.concatenate([[0.0], np.cumsum(voiced)])  # voiced frames before frame i
    weights = np.array([len(w) + 1 for w in clean_words], dtype=float)
    edges = np.concatenate([[0.0], np.cumsum(weights)]) / weights.sum() * cum[-1]
    # voiced amount -> time: first frame where the cumulative voiced count reaches it
    frame_idx = np.searchsorted(cum, edges, side="left")
    times = np.clip(frame_idx * FRAME_S, 0, len(audio) / sr)
    return [(float(times[i]), float(max(times[i + 1], times[i]))) for i in range(len(clean_words))]


# -- cutting ---------------------------------------------------------------------------------
def _pause_near(pause_list: list[tuple[float, float]], a: float, b: float, tol: float = 0.3) -> tuple[float, float] | None:
    best = None
    for ps, pe in pause_list:
        if pe >= a - tol and ps <= b + tol and (best is None or pe - ps > best[1] - best[0]):
            best = (ps, pe)
    return best


def cut(word_spans: Sequence[tuple[float, float]], duration: float, window_s: float,
        pause_list: list[tuple[float, float]], sure: Sequence[bool] | None = None
        ) -> list[tuple[float, float, int, int]]:
    """Segments as (start_s, end_s, first_word, end_word) covering the clip and every word.

    Greedy from the start: the next cut is the best-scoring word boundary in the second half
    of the window (score: length of the audio pause there), else any boundary in the window,
    else a hard cut at the window's end (only if one word spans the whole window).
    A boundary between two words whose times were measured (`sure`), at a pause, is preferred
    over one next to a word whose time was guessed.
    """
    n = len(word_spans)
    boundaries = []  # (cut_time, score, words_before)
    for i in range(n - 1):
        a, b = word_spans[i][1], word_spans[i + 1][0]
        certain = sure is None or (sure[i] and sure[i + 1])
        tol, weight = 0.3, 2.0
        p = _pause_near(pause_list, a, b, tol)
        if p is not None:  # a pause that only grazes this gap scores less than one inside it
            dist = max(0.0, p[0] - max(a, b), min(a, b) - p[1])
            t = (max(p[0], min(a, b) - tol) + min(p[1], max(a, b) + tol)) / 2
            score = (p[1] - p[0]) - weight * dist
        else:
            t, score = (a + b) / 2, max(0.0, b - a) * 0.5
        if certain and p is not None:  # both words' times measured, not guessed: trust this cut
            score += 1.0
        boundaries.append((t, score, i + 1))
    out = []
    start, first = 0.0, 0
    while duration - start > window_s:
        limit = start + window_s
        ok = [c for c in boundaries if start + 0.5 < c[0] <= limit and c[2] > first]
        late = [c for c in ok if c[0] >= start + window_s / 2]
        pool = late or ok
        if pool:
            t, _, k = max(pool, key=lambda c: (round(c[1], 3), c[0]))
        else:  # no word boundary inside the window: hard cut, words go by their middle
            t = limit
            k = first
            while k < n and (word_spans[k][0] + word_spans[k][1]) / 2 < t:
                k += 1
        out.append((start, t, first, k))
        start, first = t, k
    out.append((start, duration, first, n))
    return out


def segment_clip(row: dict, audio: np.ndarray, window_s: float = DEFAULT_WINDOW_S,
                 words_fn: WordsFn | None = None, sr: int = TARGET_SR) -> tuple[list[dict], dict]:
    """Segments of one clip ({start, end, text}) and how they were made ({method, matched})."""
    duration = len(audio) / sr
    tokens = row["text"].split()
    if duration <= window_s:
        return [{"start": 0.0, "end": round(duration, 3), "text": " ".join(tokens)}], {"method": "whole"}
    spans, info, sure = None, {}, None
    if row.get("verbatim_segments"):
        spans, share, sure = align_detail(tokens, words_from_segments(row["verbatim_segments"]))
        if spans and share >= MIN_MATCH:
            info = {"method": "verbatim_timestamps", "matched": round(share, 3)}
        else:
            spans = None
    if spans is None and words_fn is not None:
        try:
            timed = [(str(w), float(s), float(e)) for w, s, e in words_fn(audio)]
        except Exception as e:  # a model without timestamp support must not stop training
            timed, info = [], {"model_timestamps_error": f"{type(e).__name__}: {e}"[:300]}
        spans, share, sure = align_detail(tokens, timed)
        if spans and share >= MIN_MATCH:
            info = {"method": "model_timestamps", "matched": round(share, 3)}
        else:
            spans, info = None, {**info, "rejected_model_timestamps": round(share, 3)}
    if spans is None:
        spans, sure = spread_over_voice(tokens, audio, sr), [False] * len(tokens)
        info = {**info, "method": "pause_fallback"}
    pieces = cut(spans, duration, window_s, pauses(audio, sr), sure)
    segs = [{"start": round(s, 3), "end": round(e, 3), "text": " ".join(tokens[a:b])} for s, e, a, b in pieces]
    return segs, info


def audio_pieces(audio: np.ndarray, window_s: float = DEFAULT_WINDOW_S, sr: int = TARGET_SR) -> list[tuple[float, float]]:
    """(start, end) pieces of at most window_s, cut at the longest pauses (no text needed)."""
    duration = len(audio) / sr
    if duration <= window_s:
        return [(0.0, duration)]
    pause_list = pauses(audio, sr)
    # every pause is a candidate boundary: fake one-word-per-gap spans around them
    marks = sorted({0.0, *[p for ps, pe in pause_list for p in (ps, pe)], duration})
    spans = list(zip(marks[:-1], marks[1:]))
    return [(s, e) for s, e, _, _ in cut(spans, duration, window_s, pause_list)]


MIN_SILENCE_S = 1.0  # a stretch this long below the import threshold is not sent to the model
SILENCE_MARGIN_S = 0.2  # kept on each side of speech, so soft onsets and endings are heard


def silent_stretches(audio: np.ndarray, sr: int = TARGET_SR, min_silence_s: float = MIN_SILENCE_S,
                     threshold_db: float = SILENCE_DBFS) -> list[tuple[float, float]]:
    """(start_s, end_s) of stretches of at least `min_silence_s` whose every 30 ms frame is
    below the import's silence threshold (SILENCE_DBFS, -50 dBFS): digital silence, room tone."""
    db = frame_db(audio, sr)
    quiet = np.append(db < threshold_db, False)
    out, start = [], None
    for i, q in enumerate(quiet):
        if q and start is None:
            start = i
        elif not q and start is not None:
            if (i - start) * FRAME_S >= min_silence_s:
                out.append((start * FRAME_S, min(i * FRAME_S, len(audio) / sr)))
            start = None
    return out


def speech_pieces(audio: np.ndarray, window_s: float = DEFAULT_WINDOW_S, sr: int = TARGET_SR
                  ) -> list[tuple[float, float]]:
    """The (start_s, end_s) pieces of a recording to decode: its silent stretches (see
    `silent_stretches`) are left out -- a model fed silence or room tone invents words -- and
    each stretch of sound between them is cut at pauses into pieces of at most `window_s`.
    An all-silent recording gives no piece at all."""
    duration = len(audio) / sr
    edges = [0.0]
    for s, e in silent_stretches(audio, sr):
        edges += [s + SILENCE_MARGIN_S if s > 0 else 0.0, e - SILENCE_MARGIN_S if e < duration else duration]
    edges.append(duration)
    out: list[tuple[float, float]] = []
    for a, b in zip(edges[::2], edges[1::2]):
        if b - a <= FRAME_S or is_silent(audio[int(a * sr): int(b * sr)], sr):
            continue
        out += [(a + s, a + e) for s, e in audio_pieces(audio[int(round(a * sr)): int(round(b * sr))], window_s, sr)]
    return out


def whisper_words_fn(model, processor, device: Any = None, batch_size: int = 1) -> WordsFn:
    """A `words_fn` from a Whisper-family model (base model, before fine-tuning): word
    timestamps from cross-attention (the checkpoint's generation config needs
    `alignment_heads`, as OpenAI's releases have), over 30 s chunks of the whole clip."""
    from transformers import pipeline

    asr = pipeline("automatic-speech-recognition", model=model, tokenizer=processor.tokenizer,
                   feature_extractor=processor.feature_extractor, chunk_length_s=30, device=device)

    def words_fn(audio: np.ndarray) -> list[WordTime]:
        out = asr({"raw": audio, "sampling_rate": TARGET_SR}, return_timestamps="word", batch_size=batch_size)
        words = []
        for chunk in out.get("chunks") or []:
            start, end = chunk["timestamp"]
            if start is None:
                continue
            words.append((chunk["text"].strip(), float(start), float(end if end is not None else start)))
        return words

    return words_fn


# -- cache -----------------------------------------------------------------------------------
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:80] or "model"


def cache_path(ws, dataset: str, model: str) -> Path:
    return Path(ws.cache_dir) / "segments" / f"{_slug(dataset)}__{_slug(model)}.json"


def _row_key(row: dict, window_s: float) -> str:
    basis = json.dumps([row.get("sha256"), row["text"], row.get("verbatim_segments"), window_s], sort_keys=True)
    return hashlib.sha256(basis.encode()).hexdigest()[:16]


def prepare(ws, dataset: str, model: str, rows: Sequence[dict], window_s: float = DEFAULT_WINDOW_S,
            words_fn: WordsFn | None = None, manifest_hash: str | None = None,
            refresh: bool = False) -> dict[str, list[dict]]:
    """Segments for every row ({clip_id: [{start, end, text}]}), from the cache when the clip,
    its transcript and the window are unchanged; `words_fn` is only called for clips that
    need it (longer than the window, no verbatim timestamps, not cached)."""
    from engine.runfiles import atomic_write_json, read_json

    path = cache_path(ws, dataset, model)
    cached = {} if refresh else (read_json(path, {}) or {}).get("clips", {})
    clips: dict[str, dict] = {}
    out: dict[str, list[dict]] = {}
    for row in rows:
        key = _row_key(row, window_s)
        hit = cached.get(row["id"])
        if hit and hit.get("key") == key:
            clips[row["id"]] = hit
        else:
            audio = load_audio(row["audio"])
            segs, info = segment_clip(row, audio, window_s, words_fn)
            clips[row["id"]] = {"key": key, **info, "segments": segs}
        out[row["id"]] = clips[row["id"]]["segments"]
    methods: dict[str, int] = {}
    for c in clips.values():
        methods[c["method"]] = methods.get(c["method"], 0) + 1
    if clips != {k: v for k, v in cached.items() if k in clips} or set(cached) - set(clips):
        merged = {**cached, **clips}
        atomic_write_json(path, {
            "version": CACHE_VERSION,
            "provenance": {"dataset": dataset, "model": model, "window_s": window_s,
                           "manifest_hash": manifest_hash, "methods": methods, "created_at": time.time()},
            "clips": merged,
        })
    return out


def provenance(ws, dataset: str, model: str) -> dict | None:
    from engine.runfiles import read_json

    data = read_json(cache_path(ws, dataset, model))
    return data.get("provenance") if data else None


# -- examples for recipes --------------------------------------------------------------------
def _slice(audio: np.ndarray, start: float, end: float, sr: int = TARGET_SR) -> np.ndarray:
    return audio[int(round(start * sr)): int(round(end * sr))]


def segment_examples(ws, dataset: str, model: str, rows: Sequence[dict], window_s: float = DEFAULT_WINDOW_S,
                     words_fn: WordsFn | None = None, manifest_hash: str | None = None) -> list:
    """One Example per segment (a short clip is one segment), audio at 16 kHz."""
    from engine.recipes.base import Example

    segs = prepare(ws, dataset, model, rows, window_s, words_fn, manifest_hash)
    out = []
    for row in rows:
        audio = load_audio(row["audio"])
        for k, s in enumerate(segs[row["id"]]):
            out.append(Example(clip_id=row["id"], audio=_slice(audio, s["start"], s["end"]), text=s["text"],
                               segment=k, start_s=s["start"], end_s=s["end"],
                               meta={"segments": len(segs[row["id"]])}))
    return out


def multi_item_example(row: dict, item_s: float = DEFAULT_WINDOW_S):
    """Qwen2-Audio style: the whole clip as several <= item_s audio items, whole target."""
    from engine.recipes.base import Example

    audio = load_audio(row["audio"])
    pieces = audio_pieces(audio, item_s)
    items = [_slice(audio, s, e) for s, e in pieces]
    return Example(clip_id=row["id"], audio=items, text=row["text"], start_s=0.0, end_s=len(audio) / TARGET_SR,
                   meta={"items": len(items), "item_bounds": pieces})


def native_example(row: dict):
    """The whole clip as one audio item (long-window models)."""
    from engine.recipes.base import Example

    audio = load_audio(row["audio"])
    return Example(clip_id=row["id"], audio=audio, text=row["text"], start_s=0.0, end_s=len(audio) / TARGET_SR)


def _entry_fields(entry: Any) -> tuple[str, float, str]:
    get = entry.get if isinstance(entry, dict) else lambda k, d=None: getattr(entry, k, d)
    return (str(get("name", "model")), float(get("window_s", DEFAULT_WINDOW_S) or DEFAULT_WINDOW_S),
            str(get("long_audio", "segment") or "segment"))


def examples(ws, dataset: str, entry: Any, rows: Sequence[dict], words_fn: WordsFn | None = None,
             manifest_hash: str | None = None) -> list:
    """Rows -> Examples following the catalog entry's `long_audio` strategy (see module doc)."""
    name, window_s, how = _entry_fields(entry)
    if how == "multi_item":
        return [multi_item_example(r, window_s) for r in rows]
    if how == "native":
        short = [r for r in rows if r["duration"] <= window_s]
        long = [r for r in rows if r["duration"] > window_s]
        out = [native_example(r) for r in short]
        if long:
            out += segment_examples(ws, dataset, name, long, window_s, words_fn, manifest_hash)
        order = {r["id"]: i for i, r in enumerate(rows)}
        return sorted(out, key=lambda ex: (order[ex.clip_id], ex.segment))
    return segment_examples(ws, dataset, name, rows, window_s, words_fn, manifest_hash)


def join_by_clip(examples_: Iterable, predictions: Sequence[str]) -> dict[str, str]:
    """{clip_id: hypothesis}: a clip's segment predictions in segment order, space-joined.

    The driver scores each against the row's whole `text` (never against segment targets),
    so long and short clips count the same way.
    """
    parts: dict[str, list[tuple[int, str]]] = {}
    for ex, pred in zip(examples_, predictions):
        parts.setdefault(ex.clip_id, []).append((ex.segment, pred.strip()))
    return {cid: " ".join(p for _, p in sorted(ps) if p) for cid, ps in parts.items()}


# -- plan (voxtune data show NAME --model M) -------------------------------------------------
def plan(rows: Sequence[dict], entry: Any) -> dict:
    """How each clip longer than the model's window will be handled (nothing truncated)."""
    name, window_s, how = _entry_fields(entry)
    long = [r for r in rows if r["duration"] > window_s]
    handling = []
    for r in long:
        pieces = math.ceil(r["duration"] / window_s)
        if how == "multi_item":
            text = f"whole clip as ~{pieces} audio items of <= {window_s:.0f} s in one prompt"
        else:
            src = ("verbatim timestamps" if r.get("verbatim_segments")
                   else "base-model word timestamps when the recipe supplies them, else pause-based placement")
            note = " (longer than the model's maximum)" if how == "native" else ""
            text = f"segmented{note} into >= {pieces} pieces of <= {window_s:.0f} s at pauses, text cut using {src}"
        handling.append({"id": r["id"], "duration": r["duration"], "pieces": pieces, "how": text})
    if how == "native":
        summary = (f"{name} takes whole clips up to {window_s / 60:.0f} min: "
                   f"{len(rows) - len(long)} clip(s) as one item, {len(long)} over that limit segmented")
    elif how == "multi_item":
        summary = f"{name} hears {window_s:.0f} s per audio item: {len(long)} of {len(rows)} clip(s) become several items"
    else:
        summary = (f"{name} hears {window_s:.0f} s at a time: {len(long)} of {len(rows)} clip(s) are longer "
                   "and are segmented for training; evaluation joins their segments and scores the whole clip")
    return {"model": name, "window_s": window_s, "long_audio": how, "clips": len(rows),
            "over_window": len(long), "handling": handling, "summary": summary}
