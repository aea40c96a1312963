"""One run, live or finished: log, metrics plot, memory, sample outputs.

tui.poller.Poller runs RunTail.poll in a thread, reading the run files by byte offset, and
hands each batch of new records to the UI thread, so the screen re-attaches to a run with its whole metric history
and keeps up with a chatty log without ever reading a large file whole.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Header, Input, Static, TabbedContent, TabPane

from engine.compare import curves, fmt_duration, scored_split, split_short
from engine.progress import read_progress
from engine.runfiles import RunFiles, read_json, read_jsonl_from, read_lines_from, tail_lines
from engine.enums import FINAL
from engine.store import Store
from engine.workspace import Workspace
from tui.poller import Poller
from tui.widgets.gpu import KEEP as TELEMETRY_KEEP
from tui.widgets.gpu import GpuPanel
from tui.widgets.logview import MAX_LINES, LogView
from tui.widgets.plot import Plot, Series
from tui.widgets.samples import SamplesPanel
from engine.enums import RunStatus
from tui.widgets.footer import KeysFooter

POLL_S = 0.5
RECORD_POLL_S = 2.0
FINAL_RECORD_POLL_S = 10.0  # an ended run changes only if someone resumes or retries it
CHUNK = 4 * 1024 * 1024  # most log bytes read per poll; beyond that, jump to the tail


@dataclass
class Batch:
    """What appeared in the run files since the previous poll."""

    log: list[str] = field(default_factory=list)
    skipped_bytes: int = 0
    metrics: list[dict] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)
    clips: list[dict] = field(default_factory=list)
    telemetry: list[dict] = field(default_factory=list)
    record: dict | None = None
    result: dict | None = None
    progress: dict = field(default_factory=dict)


class RunTail:
    """Byte offsets into one run's files. Not thread-safe: one poll at a time."""

    def __init__(self, ws: Workspace, run_id: str, log_lines: int = MAX_LINES) -> None:
        self.ws, self.run_id = ws, run_id
        self.files = RunFiles(ws.run_dir(run_id))
        self.log_lines = log_lines
        self.offsets: dict[str, int] | None = None
        self._record_at = 0.0
        self._store: Store | None = None
        self.record_final = False

    def _jsonl(self, name: str) -> list[dict]:
        path = getattr(self.files, name)
        recs, self.offsets[name] = read_jsonl_from(path, self.offsets[name], CHUNK)
        return recs

    def _log(self, batch: Batch) -> None:
        path = self.files.log
        try:
            size = os.path.getsize(path)
        except FileNotFoundError:
            return
        off = self.offsets["log"]
        if size < off:  # truncated or replaced: start again
            off = 0
        if size - off > CHUNK:
            # far behind (a burst, or a huge log): show the newest lines, say what was skipped
            lines, end = tail_lines(path, self.log_lines)
            batch.skipped_bytes = max(0, end - off - sum(len(line) + 1 for line in lines))
            batch.log, self.offsets["log"] = lines, end
            return
        batch.log, self.offsets["log"] = read_lines_from(path, off, CHUNK)

    def poll(self, now: float | None = None) -> Batch:
        now = time.monotonic() if now is None else now
        batch = Batch()
        if self.offsets is None:
            # attach: the newest log lines only, but the whole metric and sample history
            lines, end = tail_lines(self.files.log, self.log_lines)
            batch.log = lines
            self.offsets = {"log": end, "metrics": 0, "samples": 0, "clips": 0, "telemetry": 0}
            try:
                tsize = os.path.getsize(self.files.telemetry)
            except FileNotFoundError:
                tsize = 0
            if tsize > CHUNK:  # hours of telemetry: the panel keeps ten minutes anyway
                tail, self.offsets["telemetry"] = tail_lines(self.files.telemetry, TELEMETRY_KEEP)
                batch.telemetry = _parse(tail)
        else:
            self._log(batch)
        while True:  # metrics and samples are small per record: read all that is there
            recs = self._jsonl("metrics")
            batch.metrics += recs
            if not recs:
                break
        batch.progress = read_progress(self.files)  # incremental and cached by engine.progress
        batch.samples = self._jsonl("samples")
        batch.clips = self._jsonl("clips")
        batch.telemetry += self._jsonl("telemetry")
        every = FINAL_RECORD_POLL_S if self.record_final else RECORD_POLL_S
        if now - self._record_at >= every or not self._record_at:
            self._record_at = now
            self._store = self._store or Store(self.ws)
            batch.record = self._store.get_run(self.run_id)
            self.record_final = bool(batch.record and batch.record.get("status") in FINAL)
            # small; the daemon completes it (exit code, error tail) after the worker wrote it
            batch.result = read_json(self.files.result)
        return batch


def _parse(lines: list[str]) -> list[dict]:
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


class DashboardScreen(Screen):
    TITLE = "Run"
    DEFAULT_CSS = """
    DashboardScreen #dash-summary { height: auto; padding: 0 1; background: $boost;
                                    text-wrap: nowrap; text-overflow: ellipsis; }
    DashboardScreen #log-search { display: none; }
    DashboardScreen #log-search.visible { display: block; }
    DashboardScreen #log-status { height: 1; color: $text-muted; }
    DashboardScreen #plots { height: 1fr; }
    DashboardScreen #plots Plot { width: 1fr; }
    DashboardScreen #dash-tabs { height: 1fr; }
    DashboardScreen TabPane { padding: 0; height: 1fr; }
    DashboardScreen #log-view { height: 1fr; }
    DashboardScreen #log-side { display: none; width: 50; padding-left: 1; }
    DashboardScreen.-wide #log-side { display: block; }
    DashboardScreen #side-gpu { height: auto; }
    """
    BINDINGS = [
        Binding("escape", "close", "Back"),
        Binding("l", "tab('log')", "Log"),
        Binding("p", "tab('metrics')", "Plot"),
        Binding("g", "tab('gpu')", "Memory", show=False),
        Binding("s", "tab('samples')", "Samples"),
        Binding("slash", "search", "Search"),
        # n / N move between search matches, as in less; a new run starts from Runs (esc, then n)
        Binding("n", "find(False)", "Prev match", show=False),
        Binding("N", "find(True)", "Next match", show=False),
        Binding("f", "toggle_follow", "Follow", show=False),
        Binding("left_square_bracket", "samples(-1)", "Earlier eval", show=False),
        Binding("right_square_bracket", "samples(1)", "Later eval", show=False),
    ]

    def __init__(self, run_id: str, workspace: Workspace | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.run_id = run_id
        self._workspace = workspace
        self.progress: dict = {}
        self.curves: dict[str, list[tuple[float, float]]] = {"loss": [], "eval_loss": [], "wer": []}
        self.record: dict | None = None
        self.result: dict | None = None
        self.skipped_bytes = 0
        self.polls = 0  # batches applied: tests wait on this
        self._tail: RunTail | None = None
        self.poller: Poller | None = None

    @property
    def workspace(self) -> Workspace:
        return self._workspace or self.app.workspace

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(self.run_id, id="dash-summary")
        with TabbedContent(initial="log", id="dash-tabs"):
            with TabPane("Log", id="log"):
                with Horizontal():
                    with Vertical():
                        yield Input(placeholder="search the log (enter; n/N: previous/next match; esc: close)", id="log-search")
                        yield Static("", id="log-status")
                        yield LogView(id="log-view")
                    # on a wide terminal the log tab doubles as an overview: curves and memory beside it
                    with Vertical(id="log-side"):
                        yield Plot("loss", id="side-loss")
                        yield Plot("WER", percent=True, id="side-wer")
                        yield Static("", id="side-gpu")
            with TabPane("Metrics", id="metrics"):
                with Horizontal(id="plots"):
                    yield Plot("loss", id="plot-loss")
                    yield Plot("WER", percent=True, id="plot-wer")
            with TabPane("Memory", id="gpu"):
                yield GpuPanel(id="gpu-panel")
            with TabPane("Samples", id="samples"):
                yield SamplesPanel(id="samples-panel")
        yield KeysFooter()

    def on_screen_resume(self) -> None:
        """Hidden screens do not poll (tui.poller); catch up at once when shown again."""
        if self.poller is not None:
            self.poller.poke()

    def on_mount(self) -> None:
        self.sub_title = self.run_id
        self._tail = RunTail(self.workspace, self.run_id)
        self.poller = Poller(self, self._tail.poll, self._apply, interval=POLL_S, on_error=self._read_failed, name="dashboard-tail")
        self.poller.start()

    def _read_failed(self, error: BaseException) -> None:
        # a bad file must not kill the screen: say so in the log and keep polling
        self.query_one(LogView).append([f"[voxtune] could not read {self._tail.files.root}: {error}"])

    def _apply(self, batch: Batch) -> None:
        self.polls += 1
        log = self.query_one(LogView)
        if batch.skipped_bytes:
            self.skipped_bytes += batch.skipped_bytes
            log.append([f"[voxtune] … {batch.skipped_bytes:,} bytes of log skipped to keep up (full log: {self._tail.files.log})"])
        log.append(batch.log)
        if batch.metrics:
            for key, points in curves(batch.metrics).items():  # incremental: long runs stay cheap
                self.curves[key] += points
            self._update_plots()
        self.progress = batch.progress or self.progress
        if batch.samples:
            self.query_one(SamplesPanel).add(batch.samples)
        if batch.clips:
            self.query_one(SamplesPanel).add_clips(batch.clips)
        if batch.telemetry:
            self.query_one(GpuPanel).add(batch.telemetry)
            self.query_one("#side-gpu", Static).update(self.query_one("#gpu-gauge", Static).render())
        if batch.record is not None:
            self.record = batch.record
        if batch.result is not None:
            self.result = batch.result
        self._update_summary()
        self._update_log_status()

    # -- rendering -------------------------------------------------------------------------
    def _update_plots(self) -> None:
        c = self.curves
        for prefix in ("plot", "side"):
            self.query_one(f"#{prefix}-loss", Plot).set_series([Series("train loss", c["loss"]), Series("eval loss", c["eval_loss"])])
            self.query_one(f"#{prefix}-wer", Plot).set_series([Series("WER", c["wer"], "green3")])

    def _update_summary(self) -> None:
        rec = self.record or {}
        status = rec.get("status") or ("finished" if self.result else "?")
        p = self.progress
        step, max_steps = p.get("step") or 0, p.get("max_steps")
        t = Text()
        colour = {"running": "green", "failed": "red", "finished": "cyan", "queued": "yellow"}.get(status, "")
        t.append(f"{status}", style=f"bold {colour}")
        split = scored_split(rec)
        eval_only = bool(rec.get("eval_only"))
        what = "evaluation" if eval_only else rec.get("method", "")
        t.append(f"  {rec.get('model', '')} {what} on {rec.get('dataset', '')}" + (f" ({split})" if eval_only else ""))
        if rec.get("slurm_job_id"):
            t.append(f" · slurm job {rec['slurm_job_id']}", style="bold")
        t.append("\n")
        if eval_only:  # no training steps: scoring the split
            t.append("scoring" if status == RunStatus.RUNNING else "evaluation only")
        elif max_steps:
            frac, bar = min(1.0, step / max_steps), 10  # the line fits 80 columns with WER and best
            t.append("█" * round(frac * bar) + "░" * (bar - round(frac * bar)), style="green")
            t.append(f" step {step}/{max_steps}")
        else:
            t.append(f"step {step}")
        if status == RunStatus.RUNNING and p.get("eta_s") is not None:
            t.append(f"  ETA {fmt_duration(p['eta_s'])}")
        if p.get("loss") is not None:
            t.append(f"  loss {p['loss']:.4g}")
        wer = p.get("wer") if p.get("wer") is not None else (rec.get("metrics") or {}).get("wer")
        if wer is not None:  # the latest evaluation, else the record's final one
            t.append(f"  WER {wer * 100:.1f}% {split_short(split)}")
        if p.get("best_wer") is not None:
            t.append(f"  best {p['best_wer'] * 100:.1f}% @{p.get('best_step')}")
        if self.result and self.result.get("oom"):
            t.append(f"  out of memory at step {self.result.get('oom_step')}", style="bold red")
        if rec.get("status_reason"):  # a line of its own: at 80 columns it wrapped the first line
            t.append(f"\n{rec['status_reason']}", style="red" if status == RunStatus.FAILED else "yellow")
        for line in t.split("\n"):  # each line on its own row, cut with … rather than wrapped
            line.no_wrap, line.overflow = True, "ellipsis"
        t = Text("\n").join(t.split("\n"))
        t.no_wrap, t.overflow = True, "ellipsis"
        self.query_one("#dash-summary", Static).update(t)

    def _update_log_status(self) -> None:
        log = self.query_one(LogView)
        parts = ["following" if log.follow else f"paused: {log.pending_count:,} new lines (f: follow)"]
        if log.term:
            parts.append(f"search {log.term!r}" + (f" at line {log.match_line + 1}" if log.match_line is not None else ": no match"))
        parts.append(f"{log.total_lines:,} lines read" if log.total_lines else "no log lines yet")
        self.query_one("#log-status", Static).update(" · ".join(parts))

    # -- actions ---------------------------------------------------------------------------
    def on_resize(self) -> None:
        self.set_class(self.size.width >= 140 and self.size.height >= 30, "-wide")
        # the log keeps its own tail in view when its height changes (LogView.on_resize)


    def action_close(self) -> None:
        search = self.query_one("#log-search", Input)
        if search.has_class("visible"):
            search.remove_class("visible")
            self.query_one(LogView).focus()
            return
        self.app.pop_screen()

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_search(self) -> None:
        self.action_tab("log")
        search = self.query_one("#log-search", Input)
        search.add_class("visible")
        search.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "log-search":
            return
        event.stop()
        log = self.query_one(LogView)
        log.set_term(event.value.strip())
        event.input.remove_class("visible")
        log.focus()
        if log.term and log.find() is None:
            self.notify(f"{log.term!r} is not in the last {len(log.lines):,} lines", severity="warning")
        self._update_log_status()

    def action_find(self, forward: bool) -> None:
        log = self.query_one(LogView)
        if not log.term:
            self.notify("no search yet: / searches the log, then n / N move between matches")
            return
        if log.find(forward) is None:
            self.notify(f"no {'later' if forward else 'earlier'} match for {log.term!r}")
        self._update_log_status()

    def action_toggle_follow(self) -> None:
        log = self.query_one(LogView)
        log.follow = not log.follow
        self._update_log_status()

    def action_samples(self, delta: int) -> None:
        self.action_tab("samples")
        self.query_one(SamplesPanel).move(delta)
