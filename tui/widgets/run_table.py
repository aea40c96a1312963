"""The runs table of the home screen: one row per run, in the order the queue will run them.

The formatting is pure (run record + progress dict -> cells) so it is tested without a
terminal; the widget only diffs rows so a 1,000-run table is not rebuilt every second.
Statuses carry a glyph as well as a colour so they read the same under NO_COLOR.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey

from engine.compare import scored_split, split_tag
from engine.enums import FINAL, RunStatus

STATUS_GLYPH = {
    "running": ("▶", "bold green"),
    "queued": ("…", "yellow"),
    "finished": ("✓", "green"),
    "failed": ("✗", "bold red"),
    "cancelled": ("■", "magenta"),
    "interrupted": ("!", "bold yellow"),
}
# Widths None = fit the content. The progress column shows the bar of a running or finished
# run and the note (why it waits, why it failed) of the others; it and the run column share
# the width the other columns leave, so at 80 columns every column shows (RunTable.fit_columns).
# The detail pane under the table shows the highlighted run's note in full, its whole id and
# the train loss (the dashboard plots it).
COLUMNS = (("status", "status", None), ("run", "run", None), ("progress", "progress · note", None),
           ("wer", "WER%", None), ("best", "best%", None))
NOTE_STYLE = {"queued": "yellow", "failed": "red", "interrupted": "yellow", "cancelled": "magenta", "finished": "dim"}
MIN_PROGRESS = 16  # the bar, percent and ETA ("▰▰▱▱▱▱  40% 1h05")
MIN_RUN = 20  # a run id cut shorter than this no longer tells runs apart
BAR_WIDTH = 6


@dataclass(frozen=True)
class MiddleCut:
    """A cell that, when its column is narrower than the text, keeps both ends and drops the
    middle ("1125-0600-whisper…-small-lora"): a run id's date and its method both stay
    readable. str() is the whole text."""

    text: str
    style: str = ""

    def __str__(self) -> str:
        return self.text

    def cut(self, width: int) -> str:
        if len(self.text) <= width:
            return self.text
        if width <= 1:
            return "…"[:width]
        tail = (width - 1) // 2
        return self.text[: width - 1 - tail] + "…" + (self.text[-tail:] if tail else "")

    def __rich_console__(self, console, options):
        yield Text(self.cut(options.max_width), style=self.style, no_wrap=True, end="")

    def __rich_measure__(self, console, options):
        from rich.measure import Measurement

        return Measurement(min(len(self.text), 1), len(self.text))


@dataclass(frozen=True)
class RunRow:
    """What the table shows for one run; `key` is the run id."""

    key: str
    status: str
    cells: tuple
    detail: str


def queue_order(runs: Iterable[dict]) -> list[dict]:
    """Running first, then queued in the order they will start, then the rest, newest first."""
    runs = list(runs)
    running = sorted((r for r in runs if r.get("status") == RunStatus.RUNNING), key=lambda r: r.get("started_at") or 0)
    queued = sorted(
        (r for r in runs if r.get("status") == RunStatus.QUEUED),
        key=lambda r: (-(r.get("priority") or 0), r.get("seq") or 0),
    )
    rest = sorted(
        (r for r in runs if r.get("status") not in (RunStatus.RUNNING, RunStatus.QUEUED)),
        key=lambda r: r.get("finished_at") or r.get("created_at") or 0,
        reverse=True,
    )
    return running + queued + rest


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 100 * 3600:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}"
    return f"{seconds // 86400}d"


def progress_bar(step: int | None, max_steps: int | None, eta_s: float | None = None, width: int = BAR_WIDTH) -> str:
    """'▰▰▰▱▱▱▱▱  38% 12m' -- text, so it survives NO_COLOR and copy-paste."""
    if not step or not max_steps or max_steps <= 0:
        return ""
    frac = max(0.0, min(1.0, step / max_steps))
    filled = int(round(frac * width))
    text = "▰" * filled + "▱" * (width - filled) + f" {int(frac * 100):3d}%"
    eta = fmt_duration(eta_s) if frac < 1 else ""
    return f"{text} {eta}".rstrip()


def fmt_wer(wer: Any) -> str:
    """WER is a fraction in metrics.jsonl; voxtune shows it as a percentage everywhere (the
    column headings say `%`)."""
    if not isinstance(wer, (int, float)):
        return ""
    return f"{wer * 100:.1f}" if wer < 10 else "≥1k"


def fmt_loss(loss: Any) -> str:
    if not isinstance(loss, (int, float)):
        return ""
    return f"{loss:.3f}" if loss < 100 else f"{loss:.0f}"


def status_text(status: str, position: int | None = None) -> Text:
    glyph, style = STATUS_GLYPH.get(status, ("?", ""))
    label = f"{glyph} {status}" + (f" #{position}" if position else "")
    return Text(label, style=style)


def note_for(run: dict, queue_paused: bool = False) -> str:
    """The one line that explains the state: why a queued run waits, why one failed."""
    reason = run.get("status_reason") or ""
    job = run.get("slurm_job_id")
    if job and f"slurm job {job}" not in reason.lower():  # where to look on the cluster
        reason = f"slurm job {job}" + (f" · {reason}" if reason else "")
    if run.get("status") == RunStatus.QUEUED:
        if queue_paused:
            return "queue paused" + (f"; {reason}" if reason else "")
        return reason or "waiting for the engine"
    if run.get("cancel_requested") and run.get("status") == RunStatus.RUNNING:
        return "cancelling: saving a checkpoint"
    return reason


def best_wer(run: dict, progress: dict) -> Any:
    """The run record's best (the checkpoint the run kept) wins over the best eval seen so far."""
    recorded = (run.get("best") or {}).get("wer")
    return recorded if recorded is not None else progress.get("best_wer")


def run_row(run: dict, progress: dict | None, position: int | None = None, queue_paused: bool = False) -> RunRow:
    progress = progress or {}
    status = run.get("status", "?")
    step, max_steps = progress.get("step"), progress.get("max_steps")
    if status == RunStatus.FINISHED and max_steps and not step:
        step = max_steps
    # an ended run's WER is its record's (the final evaluation), as History and `runs ls` show
    # it; a live run's is its latest evaluation
    recorded = (run.get("metrics") or {}).get("wer")
    wer = recorded if status in FINAL and recorded is not None else progress.get("wer")
    if wer is None:
        wer = recorded
    note = note_for(run, queue_paused)
    split = scored_split(run)
    eval_only = bool(run.get("eval_only"))
    bar = "evaluation" if eval_only else \
        progress_bar(step, max_steps, progress.get("eta_s") if status == RunStatus.RUNNING else None)
    if note and (status != RunStatus.RUNNING or run.get("cancel_requested")):  # a finished bar says nothing new
        shown: Any = Text(note, style=NOTE_STYLE.get(status, "yellow"), no_wrap=True, overflow="ellipsis")
    else:
        shown = bar
    cells = (
        status_text(status, position),
        MiddleCut(run.get("id", "")),
        shown,
        fmt_wer(wer) + (split_tag(split) if fmt_wer(wer) else ""),  # tagged unless validation
        fmt_wer(best_wer(run, progress)),
    )
    loss = fmt_loss(progress.get("loss"))
    if eval_only:  # it trains nothing: no method, no steps
        what = f"{run.get('model', '?')} · evaluation only · {run.get('dataset', '?')} ({split} split)"
    else:
        what = f"{run.get('model', '?')} · {run.get('method', '?')} · {run.get('dataset', '?')}"
    if step and max_steps and not eval_only:
        what += f" · step {step}/{max_steps}"
        if status == RunStatus.RUNNING and progress.get("eta_s") is not None:
            what += f" · ETA {fmt_duration(progress['eta_s'])}"
    scores = " · ".join(
        f"{name} {value}" for name, value in
        (("loss", loss), ("WER", fmt_wer(wer) and f"{fmt_wer(wer)}% ({split})"),
         ("best WER", cells[4] and cells[4] + "%")) if value
    )
    # the note (why it waits, why it failed) second: the pane shows four lines and the table
    # cuts the note at 80 columns, so here it must never be the line that is left out
    lines = [f"{run.get('id', '')} · {status}", note, what, scores]
    detail = "\n".join(line for line in lines if line)
    return RunRow(key=run.get("id", ""), status=status, cells=cells, detail=detail)


def build_rows(runs: Iterable[dict], progress: dict[str, dict], queue_paused: bool = False,
               cache: dict | None = None) -> list[RunRow]:
    """Rows in queue order. `cache` (kept by the caller between polls) holds the rows of ended
    runs, which do not change until their record does: a poll of 10,000 runs formats only the
    live ones."""
    rows, position = [], 0
    used: dict = {}
    for run in queue_order(runs):
        pos = None
        status = run.get("status")
        if status == RunStatus.QUEUED:
            position += 1
            pos = position
        key = None
        prog = progress.get(run.get("id", ""))
        if cache is not None and (status in FINAL or (status == RunStatus.QUEUED and not prog)):
            best = run.get("best") or {}
            key = (run.get("id"), status, run.get("finished_at"), run.get("status_reason"), best.get("step"),
                   best.get("wer"), pos, queue_paused, bool(run.get("cancel_requested")))
            hit = cache.get(key)
            if hit is not None:
                rows.append(hit)
                used[key] = hit
                continue
        row = run_row(run, prog, pos, queue_paused)
        if key is not None:
            used[key] = row
        rows.append(row)
    if cache is not None:  # keep what this poll used: the cache never outgrows the table
        cache.clear()
        cache.update(used)
    return rows


class RunTable(DataTable):
    """DataTable that keeps the cursor on the same run and only touches changed cells."""

    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._rows: dict[str, RunRow] = {}
        self._order: list[str] = []

    def on_mount(self) -> None:
        for key, label, width in COLUMNS:
            self.add_column(label, key=key, width=width)

    def on_resize(self) -> None:
        self.fit_columns()

    def fit_columns(self) -> None:
        """Status and scores keep their content's width; the run and progress · note columns
        share the rest of the table's width, so no column is pushed off the right edge. The
        run column gets its longest id unless that leaves the progress column under
        MIN_PROGRESS; then the ids lose their middle (MiddleCut), down to MIN_RUN. A long
        note ends in …; the detail pane shows it whole."""
        run, prog = self.columns.get(ColumnKey("run")), self.columns.get(ColumnKey("progress"))
        if run is None or prog is None or not self.size.width:
            return
        pad = 2 * self.cell_padding
        others = sum(c.get_render_width(self) for k, c in self.columns.items() if k.value not in ("progress", "run"))
        share = self.size.width - others - 2 * pad - 1  # 1: the vertical scrollbar, when it shows
        progress = max(share - run.content_width, min(MIN_PROGRESS, share - MIN_RUN), 1)
        widths = ((run, max(1, share - progress)), (prog, progress))
        if any(col.width != width or col.auto_width for col, width in widths):
            for col, width in widths:
                col.width, col.auto_width = width, False
            self._require_update_dimensions = True
            self.refresh()

    @property
    def current_key(self) -> str | None:
        if not self._order or self.cursor_row < 0 or self.cursor_row >= len(self._order):
            return None
        return self._order[self.cursor_row]

    def row_for(self, key: str | None) -> RunRow | None:
        return self._rows.get(key) if key else None

    def show(self, rows: list[RunRow]) -> None:
        order = [r.key for r in rows]
        if order == self._order:
            for row in rows:
                old = self._rows.get(row.key)
                if old is None or old.cells == row.cells:
                    continue
                for (col, _, _), new, prev in zip(COLUMNS, row.cells, old.cells):
                    if new != prev:
                        self.update_cell(row.key, col, new, update_width=True)
            self._rows = {r.key: r for r in rows}
            self.call_after_refresh(self.fit_columns)  # a wider WER (" test") or id narrows the rest
            return
        keep = self.current_key
        self.call_after_refresh(self.fit_columns)
        self.clear()
        self._rows = {r.key: r for r in rows}
        self._order = order
        for row in rows:
            self.add_row(*row.cells, key=row.key)
        if keep in self._rows:
            self.move_cursor(row=order.index(keep), animate=False, scroll=False)
