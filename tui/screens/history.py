"""Which run was best: every run, filtered and sorted, with details and comparisons.

Rows come from the TinyDB records only (loaded in a thread worker), so 10,000 runs open
quickly; a run's files are read only when its detail or a comparison is opened. The
comparison logic and its Markdown/CSV export live in engine.compare, shared with the CLI.
"""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Header, Input, Static, TabbedContent, TabPane

from engine import compare
from engine.compare import COLUMNS, CompareError, fmt_value
from engine.store import Store
from tui.widgets.plot import Plot, Series
from tui.widgets.run_list import Column, RunList
from tui.widgets.samples import diff_text, worst_clips_text
from tui.widgets.footer import KeysFooter

SORT_CYCLE = ["created_at", "wer", "best_wer", "cer", "eval_loss", "final_loss", "duration_s", "peak_gb", "id", "model", "status"]
MARK = "●"
# what matters first at 80 columns: which run, did it finish, how good
FIRST = ["id", "status", "wer", "best_wer", "model", "method", "dataset"]
DISPLAY = FIRST + [k for k, _ in COLUMNS if k not in FIRST]
HEADINGS = dict(COLUMNS)
SHORT_HEADINGS = {"best_wer": "Best"}  # next to WER at 80 columns; the detail says "best WER"
MODEL_WIDTH = 16  # what 80 columns leave after the run id, status, WER and best WER


def short_models(models: set[str], width: int = MODEL_WIDTH) -> dict[str, str]:
    """Each model as it fits `width`, still telling apart models that only differ in their
    folders (`/ckpt/project-a/whisper-ft` and `/ckpt/project-b/whisper-ft` become
    `project-a/whis…ft` and `project-b/whis…ft`): the shortest path tail that is unique, its
    last part shortened in the middle."""
    out: dict[str, str] = {}
    split = {m: [p for p in m.replace("\\", "/").split("/") if p] or [m] for m in models}
    for m, parts in split.items():
        if len(m) <= width:
            out[m] = m
            continue
        k = 1
        while k < len(parts) and sum(1 for o in split.values() if o[-k:] == parts[-k:]) > 1:
            k += 1
        prefix = "/".join(parts[-k:-1]) + ("/" if k > 1 else "")
        last = parts[-1]
        if len(prefix) > width - 5:
            prefix = "…" + prefix[-(width - 6):]
        room = width - len(prefix)
        out[m] = prefix + (last if len(last) <= room else last[: max(1, room - 3)] + "…" + last[-2:])
    return out


def current_line(row: dict | None, records: dict[str, dict]) -> Text:
    """The highlighted run in words, under the table: its whole model (the Model column is
    cut at 80 columns), method, data and scored split, and why it failed or stopped."""
    if row is None:
        return Text("")
    text = Text(f"{row.get('model')} · {row.get('method')} · {row.get('dataset')} "
                f"({compare.split_short(row.get('split'))})", no_wrap=True, overflow="ellipsis")
    reason = (records.get(row.get("id", "")) or {}).get("status_reason")
    if reason:
        text.append(f" · {reason}", style="red" if row.get("status") == "failed" else "yellow")
    return text


# (store path, store stamp) -> (records, summary rows): History's rows are derived from the
# store alone, so they are summarised once per change of the file. The app warms this in a
# thread at start-up, and pressing 4 then only draws.
_SUMMARIES: dict[str, tuple[tuple, list[dict], list[dict]]] = {}


def load_summaries(ws) -> tuple[list[dict], list[dict]]:
    """(run records, compare.summarize rows) of workspace `ws`, cached per store change."""
    store = Store(ws)
    key, stamp = str(store.path), store.stamp()
    hit = _SUMMARIES.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1], hit[2]
    records = store.list_runs()
    rows = [compare.summarize(r) for r in records]
    _SUMMARIES[key] = (stamp, records, rows)
    return records, rows


class HistoryScreen(Screen):
    TITLE = "History"
    DEFAULT_CSS = """
    HistoryScreen #history-filter { height: 1; border: none; padding: 0 1; }
    HistoryScreen #history-status { height: 1; padding: 0 1; color: $text-muted; }
    HistoryScreen #history-current { height: 1; padding: 0 1; border-top: none; }
    """
    BINDINGS = [
        Binding("slash", "focus_filter", "Filter"),
        Binding("s", "cycle_sort", "Sort"),
        Binding("r", "reverse", "Reverse", show=False),
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare"),
        Binding("o", "open_dashboard", "Log/dashboard", show=False),
        Binding("d", "delete_run", "Delete", show=False),
        Binding("x", "export_run", "Export", show=False),
        Binding("t", "transcribe", "Transcribe", show=False),
        Binding("ctrl+r", "reload", "Reload", show=False),
        Binding("escape", "leave_filter", "Leave filter", show=False),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.rows: list[dict] = []  # every run's summary
        self.shown: list[dict] = []  # filtered and sorted
        self.records: dict[str, dict] = {}
        self.marked: set[str] = set()
        self.sort_key = "created_at"
        self.sort_reverse = True  # newest first
        self.filter_text = ""
        self.loaded = 0  # loads finished: tests wait on this
        self._models: dict[str, str] = {}  # model -> as the Model column shows it
        self._stamp: tuple | None = None  # the store version the rows show

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="filter: model=whisper status=finished,failed wer<30% peak_gb<10 or words",
                    id="history-filter")
        yield RunList(self._columns([]), self._format_cell, id="history-table")
        yield Static("", id="history-current")
        yield Static("loading runs…", id="history-status")
        yield KeysFooter()

    @staticmethod
    def _columns(rows: list[dict]) -> list[Column]:
        """Widths from the data for text columns (capped), fixed for numbers."""
        cols = [Column("mark", " ", 1)]
        for key in DISPLAY:
            heading = SHORT_HEADINGS.get(key, HEADINGS[key])
            if key in ("id", "model", "dataset", "status", "method", "split"):
                cap = {"id": 40, "model": MODEL_WIDTH}.get(key, 24)
                width = max([len(heading)] + [len(str(r.get(key, ""))) for r in rows])
                cols.append(Column(key, heading, min(cap, width)))
            elif key == "wer":  # "100.0%", "100.0% test": tagged unless validation (compare.split_tag)
                tagged = any(compare.split_tag(r.get("split")) for r in rows)
                cols.append(Column(key, heading, 11 if tagged else 6))
            elif key == "best_wer":
                cols.append(Column(key, heading, 6))  # "100.0%"
            else:
                cols.append(Column(key, heading, 16 if key == "created_at" else max(8, len(heading))))
        return cols

    def _format_cell(self, key: str, row: dict) -> str:
        if key == "mark":
            return MARK if row["id"] in self.marked else " "
        if key == "model":
            return self._models.get(row["model"], row["model"])
        if key in ("id", "method", "dataset", "status", "split"):
            return str(row.get(key) or "")
        if key == "wer" and row.get(key) is not None:  # the split it was measured on, next to it
            return f"{fmt_value(key, row[key])}{compare.split_tag(row.get('split'))}"
        return fmt_value(key, row.get(key))

    def on_mount(self) -> None:
        table = self.query_one(RunList)
        table.is_marked = lambda row: row["id"] in self.marked
        table.focus()
        self.sub_title = "all runs"
        self.action_reload()

    def on_screen_resume(self) -> None:
        if self.loaded and Store(self.app.workspace).stamp() != self._stamp:
            self.action_reload()

    @work(thread=True, exclusive=True, group="history-load", exit_on_error=False)
    def action_reload(self) -> None:
        stamp = Store(self.app.workspace).stamp()
        records, rows = load_summaries(self.app.workspace)
        self.app.call_from_thread(self._loaded, records, rows, stamp)

    def _loaded(self, records: list[dict], rows: list[dict], stamp: tuple | None = None) -> None:
        self._stamp = stamp
        self.query_one(RunList).columns = self._columns(rows)
        self._models = short_models({r["model"] for r in rows})
        self.records = {r["id"]: r for r in records}
        self.rows = rows
        self.marked &= set(self.records)
        self.loaded += 1
        self.refresh_table()

    def refresh_table(self) -> None:
        try:
            rows = compare.filter_rows(self.rows, self.filter_text)
            problem = None
        except CompareError as e:
            rows, problem = self.rows, str(e)
        self.shown = compare.sort_rows(rows, self.sort_key, self.sort_reverse)
        self.query_one(RunList).set_rows(self.shown, keep_id=self.current_id())
        self.update_status(problem)

    def update_status(self, problem: str | None = None) -> None:
        """How many runs show, the sort order, how many are marked; or what is wrong with the filter."""
        if problem:
            status = Text(problem, style="bold red")
        else:
            arrow = "↓" if self.sort_reverse else "↑"
            status = Text(f"{len(self.shown)} of {len(self.rows)} runs · sorted by {HEADINGS[self.sort_key]} {arrow}")
            if self.marked:
                status.append(f" · {len(self.marked)} marked (c: compare)")
            try:
                read = compare.describe_comparisons(compare.parse_filter(self.filter_text))
            except CompareError:
                read = ""
            if read:
                status.append(f" · {read}", style="cyan")
        self.query_one("#history-status", Static).update(status)

    def on_run_list_highlighted(self, event: RunList.Highlighted) -> None:
        line = current_line(event.row, self.records)
        if event.row is None and self.loaded:  # an empty list says why
            line = Text("No run matches the filter (/ edits it)." if self.rows else
                        "No runs yet. n queues one; every run, running or ended, is listed here.", style="dim")
        self.query_one("#history-current", Static).update(line)

    def current_id(self) -> str | None:
        row = self.query_one(RunList).current()
        return row["id"] if row else None

    # -- actions -----------------------------------------------------------------------------
    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "history-filter":
            self.filter_text = event.value
            self.refresh_table()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "history-filter":
            self.query_one(RunList).focus()

    def on_run_list_header_clicked(self, event: RunList.HeaderClicked) -> None:
        key = event.key
        if key in HEADINGS:  # not the mark column
            # same column again flips the order; a new column starts at its best (lowest) value
            self.sort_by(key, not self.sort_reverse if key == self.sort_key else key == "created_at")

    def on_run_list_selected(self, event: RunList.Selected) -> None:
        self.action_detail()

    def sort_by(self, key: str, reverse: bool = False) -> None:
        self.sort_key, self.sort_reverse = key, reverse
        self.refresh_table()

    def action_focus_filter(self) -> None:
        self.query_one("#history-filter", Input).focus()

    def action_leave_filter(self) -> None:
        """esc in the filter: back to the list (the filter stays; / edits it again)."""
        self.query_one(RunList).focus()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "leave_filter":
            return self.focused is not None and self.focused.id == "history-filter"
        return True

    def action_cycle_sort(self) -> None:
        i = SORT_CYCLE.index(self.sort_key) if self.sort_key in SORT_CYCLE else -1
        key = SORT_CYCLE[(i + 1) % len(SORT_CYCLE)]
        self.sort_by(key, key == "created_at")  # newest first; lowest metric (best) first

    def action_reverse(self) -> None:
        self.sort_by(self.sort_key, not self.sort_reverse)

    def action_mark(self) -> None:
        run_id = self.current_id()
        if run_id is None:
            return
        self.marked ^= {run_id}
        self.query_one(RunList).action_move(1)
        self.update_status()

    def action_detail(self) -> None:
        run_id = self.current_id()
        if run_id is not None:
            self.app.push_screen(RunDetailScreen(self.records[run_id]))

    def action_open_dashboard(self) -> None:
        run_id = self.current_id()
        if run_id is not None:
            from tui.screens.dashboard import DashboardScreen

            self.app.push_screen(DashboardScreen(run_id))

    def action_export_run(self) -> None:
        from tui.screens.tools import export_run

        run_id = self.current_id()
        if run_id is not None:
            export_run(self, run_id)

    def action_transcribe(self) -> None:
        from tui.screens.tools import transcribe_with_run

        run_id = self.current_id()
        if run_id is not None:
            transcribe_with_run(self, run_id)

    def action_delete_run(self) -> None:
        """As `voxtune runs rm`, after a yes: the folder moves to the trash."""
        from tui.screens.runs import confirm_delete

        run_id = self.current_id()
        if run_id is not None:
            confirm_delete(self, self.records[run_id], self._do)

    def _do(self, done: str, fn, *args) -> None:
        """An engine.queue operation in a thread; its outcome as a notification; then reload."""

        def work() -> None:
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - the engine's message is meant for the user
                self.app.call_from_thread(self.app.show_error, e)  # type: ignore[attr-defined]
                return
            self.app.call_from_thread(self.notify, done)
            self.app.call_from_thread(self.action_reload)

        self.run_worker(work, thread=True, group="history-action", exit_on_error=False)

    def action_compare(self) -> None:
        ids = [r["id"] for r in self.shown if r["id"] in self.marked]
        ids += sorted(self.marked - set(ids))  # marked but filtered out still count
        if len(ids) < 2:
            self.notify("mark at least two runs with space, then press c", severity="warning")
            return
        self.app.push_screen(CompareScreen([self.records[i] for i in ids]))


class RunDetailScreen(Screen):
    """Configuration, final metrics, samples, measured vs estimated memory, duration."""

    TITLE = "Run detail"
    DEFAULT_CSS = """
    RunDetailScreen #detail-body { height: auto; padding: 0 1; }
    RunDetailScreen #detail-plots { height: 14; }
    RunDetailScreen #detail-plots Plot { width: 1fr; }
    """
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("o", "open_dashboard", "Log/dashboard")]

    def __init__(self, record: dict, **kwargs) -> None:
        super().__init__(**kwargs)
        self.record = record
        self.detail: dict | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll():
            yield Static(f"{self.record['id']}: reading run files…", id="detail-body")
            with Horizontal(id="detail-plots"):
                yield Plot("loss", id="detail-loss")
                yield Plot("WER", percent=True, id="detail-wer")
        yield KeysFooter()

    def on_mount(self) -> None:
        self.sub_title = self.record["id"]
        self._load()

    @work(thread=True, exit_on_error=False)
    def _load(self) -> None:
        detail = compare.run_detail(self.app.workspace, self.record)
        self.app.call_from_thread(self._show, detail)

    def _show(self, d: dict) -> None:
        self.detail = d
        row, rec = d["row"], d["record"]
        t = Text()
        t.append(f"{rec['id']}\n", style="bold")
        for problem in d["problems"]:
            t.append(problem + "\n", style="bold red")
        what = "evaluation only" if row.get("eval_only") else row["method"]
        t.append(f"{row['model']} · {what} · {row['dataset']} ({row['split']} split) · {row['status']}")
        if rec.get("status_reason"):
            t.append(f" ({rec['status_reason']})", style="dim")
        t.append(f"\nduration {fmt_value('duration_s', row['duration_s'])}")
        if d["result"].get("train_samples_per_s"):
            t.append(f" · {d['result']['train_samples_per_s']:.2f} samples/s")
        t.append("\n\nMemory\n", style="bold underline")
        peak = d["peak_memory"]
        live = row["status"] in ("queued", "running")
        t.append("measured peak" + (f" {fmt_value('peak_gb', row['peak_gb'])} GiB" if row["peak_gb"] is not None
                                     else ": none yet" if live else ": not recorded"))
        if peak:
            t.append(f" (allocated {fmt_value('peak_gb', peak.get('allocated_gb'))}, reserved {fmt_value('peak_gb', peak.get('reserved_gb'))}, "
                     f"process RSS {fmt_value('peak_gb', peak.get('rss_gb'))} on {peak.get('device', '?')})")
        t.append("\nestimated " + (f"{fmt_value('estimate_gb', row['estimate_gb'])} GiB" if row["estimate_gb"] is not None
                                   else "none (no parameter counts for this model when it was queued)"))
        if row["peak_gb"] is not None and row["estimate_gb"]:
            err = (row["estimate_gb"] - row["peak_gb"]) / row["peak_gb"] * 100
            t.append(f"  (estimate {'over' if err >= 0 else 'under'} by {abs(err):.0f}%)", style="yellow" if err < 0 else "")
        if d["result"].get("oom"):
            t.append(f"\nOUT OF MEMORY at step {d['result'].get('oom_step')}", style="bold red")
        t.append(f"\n\nMetrics (final evaluation, {row['split']} split)\n", style="bold underline")
        for key, heading in compare.METRIC_COLUMNS[:8]:
            t.append(f"{heading:<11}{fmt_value(key, row.get(key))}\n")
        if (d["result"].get("best") or rec.get("best")):
            best = rec.get("best") or d["result"]["best"]
            t.append(f"best WER {fmt_value('wer', best.get('wer'))} at step {best.get('step')} ({best.get('checkpoint')})\n")
        if d["result"].get("error_tail"):
            t.append("\nLast log lines\n", style="bold underline")
            t.append("\n".join(d["result"]["error_tail"][-10:]) + "\n", style="red")
        t.append("\nFinal samples\n", style="bold underline")
        if not d["samples"]:
            t.append("(none)\n", style="dim")
        for sid, s in sorted(d["samples"].items()):
            t.append(f"{sid} (step {s.get('step')})\n", style="bold")
            t.append_text(diff_text(s.get("reference", "") or "", s.get("prediction", "") or ""))
            t.append("\n")
        if d.get("clips"):
            t.append("\nWorst clips\n", style="bold underline")
            t.append_text(worst_clips_text(d["clips"]))
        t.append("\nConfiguration\n", style="bold underline")
        for k, v in sorted(d["config"].items()):
            if k != "versions":
                t.append(f"{k:<24}", style="dim")
                t.append(f"{v}\n")
        self.query_one("#detail-body", Static).update(t)
        self.query_one("#detail-loss", Plot).set_series([Series("train loss", d["curves"]["loss"]), Series("eval loss", d["curves"]["eval_loss"])])
        self.query_one("#detail-wer", Plot).set_series([Series("WER", d["curves"]["wer"], "green3")])

    def action_open_dashboard(self) -> None:
        from tui.screens.dashboard import DashboardScreen

        self.app.push_screen(DashboardScreen(self.record["id"]))


class CompareScreen(Screen):
    """Two or more runs side by side; m / v export Markdown / CSV into <home>/exports/."""

    TITLE = "Compare"
    DEFAULT_CSS = """
    CompareScreen #compare-tabs { height: 1fr; }
    CompareScreen TabPane { padding: 0; height: 1fr; }
    CompareScreen DataTable { height: 1fr; }
    """
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("t", "tab('cmp-metrics')", "Table", show=False),  # the tabs show these four
        Binding("p", "tab('cmp-curves')", "Plot", show=False),
        Binding("s", "tab('cmp-samples')", "Samples", show=False),
        Binding("d", "tab('cmp-config')", "Config diff", show=False),
        # the Curves tab's title names w; shown, it pushed the footer past 80 columns
        Binding("w", "curve", "Next curve", show=False),
        Binding("m", "export('md')", "Export .md"),
        Binding("v", "export('csv')", "Export .csv"),
    ]
    CURVES = [("wer", "WER"), ("eval_loss", "eval loss"), ("loss", "train loss")]

    def __init__(self, records: list[dict], **kwargs) -> None:
        super().__init__(**kwargs)
        self.records = records
        self.comparison: compare.Comparison | None = None
        self.curve = 0
        self.exported: list = []

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="compare-tabs"):
            with TabPane("Metrics", id="cmp-metrics"):
                yield DataTable(id="cmp-table", cursor_type="row", zebra_stripes=True)
            with TabPane("Curves", id="cmp-curves"):
                yield Plot("", id="cmp-plot")
            with TabPane("Samples", id="cmp-samples"):
                with VerticalScroll():
                    yield Static("", id="cmp-samples-body")
            with TabPane("Config", id="cmp-config"):
                yield DataTable(id="cmp-config-table", cursor_type="row")
        yield KeysFooter()

    def on_mount(self) -> None:
        self.sub_title = f"{len(self.records)} runs"
        self._load()

    @work(thread=True, exit_on_error=False)
    def _load(self) -> None:
        comp = compare.load_comparison(self.app.workspace, self.records)
        self.app.call_from_thread(self._show, comp)

    def _show(self, comp: compare.Comparison) -> None:
        self.comparison = comp
        ids = comp.run_ids
        table = self.query_one("#cmp-table", DataTable)
        rows = comp.metric_table()
        first = max([len(h) for h, _ in rows] + [1])
        width = self._run_width(first, len(ids))
        models = short_models({v for h, vals in rows if h == "Model" for v in vals}, width)
        table.header_height = 2
        table.add_column("", width=first)
        for i, rid in enumerate(ids):
            table.add_column(_run_heading(rid, width, _colour(i)), width=width)
        table.add_rows([[h, *[_fit(models.get(v, v) if h == "Model" else v, width) for v in vals]] for h, vals in rows])
        cfg = self.query_one("#cmp-config-table", DataTable)
        diffs = comp.config_differences()
        first = max([len(k) for k, _ in diffs] + [len("(identical)")])
        width = self._run_width(first, len(ids))
        cfg.header_height = 2
        cfg.add_column("differs", width=first)
        for i, rid in enumerate(ids):
            cfg.add_column(_run_heading(rid, width, _colour(i)), width=width)
        cfg.add_rows([[k, *[_fit(str(x), width) for x in v]] for k, v in diffs] or [["(identical)", *[""] * len(ids)]])
        t = Text()
        for sid, ref, preds in comp.sample_table():
            t.append(f"{sid}\n", style="bold underline")
            t.append("reference  ", style="dim")
            t.append(ref + "\n")
            for i, (rid, pred) in enumerate(zip(ids, preds)):
                t.append(f"{rid}\n", style=_colour(i))
                t.append_text(diff_text(ref, pred))
                t.append("\n")
            t.append("\n")
        self.query_one("#cmp-samples-body", Static).update(t or "no sample outputs in these runs")
        self._plot()

    def _run_width(self, first: int, n: int) -> int:
        """Each run's column width: the screen shared out (at least 12; more runs scroll)."""
        usable = self.size.width - (first + 2) - 2 * n - 1
        return max(12, usable // max(1, n))

    def _plot(self) -> None:
        if self.comparison is None:
            return
        key, name = self.CURVES[self.curve]
        plot = self.query_one("#cmp-plot", Plot)
        plot.title = f"{name} against step (w: next curve)"
        plot.empty = f"none of these runs recorded {name} (w: next curve)"
        plot.percent = key == "wer"
        plot.set_series([Series(d["record"]["id"], d["curves"][key], _colour(i)) for i, d in enumerate(self.comparison.details)])

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_curve(self) -> None:
        self.curve = (self.curve + 1) % len(self.CURVES)
        self.query_one(TabbedContent).active = "cmp-curves"
        self._plot()

    def action_export(self, fmt: str) -> None:
        if self.comparison is None:
            self.notify("still reading the runs; try again in a moment", severity="warning")
            return
        try:
            path = compare.export(self.app.workspace, self.comparison, fmt)
        except (OSError, CompareError) as e:
            self.notify(f"export failed: {e}", severity="error")
            return
        self.exported.append(path)
        self.notify(f"comparison written to {path}", title="exported", timeout=10)


def _run_heading(run_id: str, width: int, style: str) -> Text:
    """A run id on two header lines (date-time, then model-method), each fitted to `width`."""
    head, sep, rest = run_id.partition("-")
    head2, sep2, rest2 = rest.partition("-")
    top, bottom = (f"{head}-{head2}", rest2) if sep and sep2 else (run_id, "")
    return Text(f"{_fit(top, width)}\n{_fit(bottom, width)}".rstrip("\n"), style=style)


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _colour(i: int) -> str:
    from tui.widgets.plot import PALETTE

    return PALETTE[i % len(PALETTE)]
