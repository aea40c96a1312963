"""Per-clip evaluation results: every clip's prediction and WER at every evaluation.

Each evaluation (training-time or eval-only, on whatever split it scored) appends one record
per clip to runs/<id>/clips.jsonl:

    {"step": 50, "split": "validation", "clip_id": "c007", "reference": "...",
     "prediction": "...", "wer": 0.25, "wer_normalized": 0.2, "ref_words": 12,
     "duration_s": 14.2, "time": 1700000000.0}

`wer` / `wer_normalized` are the clip's own word error rates (engine.metrics definitions:
errors / reference words; an empty reference scores 0 if the prediction is empty too, else 1).
`worst` picks the latest evaluation's clips with the highest normalised WER; `runs show
--clips`, the dashboard's Samples tab and History's run detail show them with word diffs.
Light module (jiwer only): the TUI imports it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from engine import metrics
from engine.runfiles import read_jsonl

CLIPS_FILE = "clips.jsonl"
WORST_N = 5


def clip_records(rows: Sequence[dict], predictions: Sequence[str], step: int, split: str | None,
                 now: float | None = None) -> list[dict]:
    """One record per clip (rows: manifest rows with id/text/duration; predictions: the joined
    transcript of each row, same order). Raises ValueError if the lengths differ."""
    if len(rows) != len(predictions):
        raise ValueError(f"{len(rows)} clips but {len(predictions)} predictions")
    now = time.time() if now is None else now
    out = []
    for row, hyp in zip(rows, predictions):
        ref = row.get("text", "") or ""
        out.append({"step": step, "split": split, "clip_id": str(row["id"]), "reference": ref, "prediction": hyp,
                    "wer": round(metrics.wer([ref], [hyp]), 6),
                    "wer_normalized": round(metrics.wer_normalized([ref], [hyp]), 6),
                    "ref_words": len(ref.split()), "duration_s": row.get("duration"), "time": now})
    return out


def latest(records: Sequence[dict]) -> list[dict]:
    """The records of the last evaluation (the highest step; at equal steps, the later ones)."""
    if not records:
        return []
    last_step = max(r.get("step", 0) for r in records)
    by_id: dict[str, dict] = {}
    for r in records:
        if r.get("step", 0) == last_step:
            by_id[str(r.get("clip_id"))] = r  # a re-evaluation at the same step replaces
    return list(by_id.values())


def worst(records: Sequence[dict], n: int = WORST_N) -> list[dict]:
    """The latest evaluation's `n` clips with the highest normalised WER (ties: more words first)."""
    recs = latest(records)
    return sorted(recs, key=lambda r: (-(r.get("wer_normalized") or 0.0), -(r.get("ref_words") or 0),
                                       str(r.get("clip_id"))))[:n]


def read(run_dir: str | Path) -> list[dict]:
    """Every clip record of a run (empty when it has not evaluated yet)."""
    return read_jsonl(Path(run_dir) / CLIPS_FILE)


def format_worst(records: Sequence[dict], n: int = WORST_N) -> list[str]:
    """Plain-text lines for `runs show --clips`: each clip's WER, then a word diff
    (-word: in the reference, missing from the prediction; +word: not in the reference)."""
    import difflib

    rows = worst(records, n)
    if not rows:
        return ["  (no per-clip results yet: written at each evaluation)"]
    first = rows[0]
    lines = [f"  worst {len(rows)} of {len(latest(records))} clips at step {first.get('step')} "
             f"({first.get('split') or '?'} split), by normalised WER:"]
    for r in rows:
        dur = r.get("duration_s")
        lines.append(f"  {r['clip_id']}  WER {r.get('wer_normalized', 0):.3f} normalised, {r.get('wer', 0):.3f} raw"
                     + (f", {dur:.1f} s" if isinstance(dur, (int, float)) else ""))
        ref, hyp = (r.get("reference") or "").split(), (r.get("prediction") or "").split()
        words = []
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=ref, b=hyp, autojunk=False).get_opcodes():
            if tag == "equal":
                words += ref[i1:i2]
            else:
                words += [f"-{w}" for w in ref[i1:i2]] + [f"+{w}" for w in hyp[j1:j2]]
        lines.append("    " + " ".join(words))
    return lines
