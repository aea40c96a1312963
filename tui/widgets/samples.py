"""Pinned sample outputs: reference vs prediction with word-level differences marked.

The target is a *clean* transcript, so the interesting errors are words the model left in
(fillers, false starts: insertions) and words it dropped (over-cleaning: deletions). Keys
step back through earlier evaluations to see how a sample's output changed.
"""

from __future__ import annotations

import difflib

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

INSERT_STYLE = "bold green underline"
DELETE_STYLE = "red strike"


def word_diff(reference: str, prediction: str) -> list[tuple[str, str]]:
    """[(op, word)] with op in equal | delete (in reference only) | insert (prediction only)."""
    ref, hyp = reference.split(), prediction.split()
    out: list[tuple[str, str]] = []
    matcher = difflib.SequenceMatcher(a=ref, b=hyp, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            out += [("equal", w) for w in ref[i1:i2]]
        else:
            out += [("delete", w) for w in ref[i1:i2]]
            out += [("insert", w) for w in hyp[j1:j2]]
    return out


def diff_text(reference: str, prediction: str) -> Text:
    """One line: deletions struck through in red, insertions underlined in green."""
    t = Text()
    for n, (op, word) in enumerate(word_diff(reference, prediction)):
        if n:
            t.append(" ")
        style = INSERT_STYLE if op == "insert" else DELETE_STYLE if op == "delete" else ""
        # the +/- marks keep the difference readable under NO_COLOR
        t.append(f"+{word}" if op == "insert" else f"-{word}" if op == "delete" else word, style=style)
    return t


class SampleHistory:
    """samples.jsonl grouped by evaluation step; a cursor picks which evaluation to show."""

    def __init__(self) -> None:
        self.by_step: dict[float, dict[str, dict]] = {}
        self.index: int | None = None  # None = follow the latest evaluation

    def add(self, records: list[dict]) -> None:
        for rec in records:
            if rec.get("sample_id") is None:
                continue
            self.by_step.setdefault(rec.get("step", 0), {})[str(rec["sample_id"])] = rec

    @property
    def steps(self) -> list[float]:
        return sorted(self.by_step)

    def current_step(self) -> float | None:
        steps = self.steps
        if not steps:
            return None
        return steps[-1] if self.index is None else steps[min(self.index, len(steps) - 1)]

    def move(self, delta: int) -> None:
        steps = self.steps
        if not steps:
            return
        i = len(steps) - 1 if self.index is None else self.index
        i = max(0, min(len(steps) - 1, i + delta))
        self.index = None if i == len(steps) - 1 else i


def worst_clips_text(records: list[dict], n: int = 5) -> Text:
    """The latest evaluation's worst clips (engine.clips.worst), one WER line and one word diff each."""
    from engine.clips import latest, worst

    rows = worst(records, n)
    t = Text()
    if not rows:
        return t
    t.append(f"worst {len(rows)} of {len(latest(records))} clips at step {rows[0].get('step')} "
             f"({rows[0].get('split') or '?'} split), by normalised WER\n", style="bold")
    for r in rows:
        t.append(f"{r.get('clip_id')}", style="bold")
        t.append(f"  WER {r.get('wer_normalized') or 0:.3f}\n", style="yellow")
        t.append_text(diff_text(r.get("reference", "") or "", r.get("prediction", "") or ""))
        t.append("\n")
    return t


class WorstClips(Static):
    """Every clip's result at the latest evaluation (clips.jsonl) -> its worst few with word
    diffs. Hidden until the run has per-clip results."""

    DEFAULT_CSS = "WorstClips { display: none; }"

    def __init__(self, n: int = 5, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.n = n
        self.records: list[dict] = []

    def add(self, records: list[dict]) -> None:
        if not records:
            return
        last = max(r.get("step", 0) for r in records)
        keep = max([last] + [r.get("step", 0) for r in self.records])
        self.records = [r for r in self.records + records if r.get("step", 0) == keep]  # the latest evaluation only
        self.update(worst_clips_text(self.records, self.n))
        self.display = True


class SamplesPanel(VerticalScroll):
    DEFAULT_CSS = """
    SamplesPanel > Static { margin-bottom: 1; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.history = SampleHistory()

    def compose(self):
        yield WorstClips(id="worst-clips")
        yield Static("no sample outputs yet (written at each evaluation)", id="samples-body")

    def add_clips(self, records: list[dict]) -> None:
        self.query_one(WorstClips).add(records)

    def add(self, records: list[dict]) -> None:
        if records:
            self.history.add(records)
            self.refresh_view()

    def move(self, delta: int) -> None:
        self.history.move(delta)
        self.refresh_view()

    def refresh_view(self) -> None:
        step = self.history.current_step()
        if step is None:
            return
        steps = self.history.steps
        pos = steps.index(step) + 1
        t = Text()
        latest = " (latest)" if self.history.index is None else ""
        t.append(f"evaluation {pos}/{len(steps)} at step {step}{latest}   [ earlier  ] later\n", style="bold")
        t.append("-word", style=DELETE_STYLE)
        t.append(" missing from the prediction   ")
        t.append("+word", style=INSERT_STYLE)
        t.append(" not in the reference\n")
        for sid, rec in sorted(self.history.by_step[step].items()):
            ref, pred = rec.get("reference", "") or "", rec.get("prediction", "") or ""
            t.append(f"\n{sid}\n", style="bold underline")
            t.append("ref  ", style="dim")
            t.append(ref + "\n")
            t.append("pred ", style="dim")
            t.append(pred + "\n")
            t.append("diff ", style="dim")
            t.append_text(diff_text(ref, pred))
            t.append("\n")
        self.query_one("#samples-body", Static).update(t)
