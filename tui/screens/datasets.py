"""Datasets screen (key 3): which datasets exist, what is in them, what was left out.

Left: the datasets. Right: the selected one's stats (the same facts as `voxtune data show`)
and its problems. The shipped `demo` dataset is imported on first view. No torch here.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from rich.text import Text
from textual.widgets import DataTable, Header, Static
from textual.widgets.data_table import ColumnKey
from tui.widgets.footer import KeysFooter


def _bar(count: int, peak: int, width: int = 16) -> str:
    return "█" * max(1, round(width * count / peak)) if count else ""


def stats_text(st: dict) -> str:
    """Rich markup of one dataset's stats, sized for the right-hand panel (~50 columns)."""
    s, h, d = st["splits"], st["split_hours"], st["duration_s"]
    t = st["transcript_words"]

    def fmt_s(x: float) -> str:
        return f"{x:.1f}s" if x < 90 else f"{x / 60:.1f}m"

    lines = [
        f"[b]{st['name']}[/b]  {st['clips_usable']}/{st['clips_total']} clips usable · {st['hours'] * 60:.1f} min",
        f"[dim]splits[/]   train {s['train']} · val {s['validation']} · test {s['test']} (seed {st['split_seed']})",
        f"[dim]minutes[/]  train {h['train'] * 60:.1f} · val {h['validation'] * 60:.1f} · test {h['test'] * 60:.1f}",
        f"[dim]pinned[/]   {', '.join(st['pinned']) or '-'}",
        f"[dim]duration[/] min {fmt_s(d['min'])} · median {fmt_s(d['median'])} · max {fmt_s(d['max'])}",
    ]
    peak = max([b["count"] for b in st["histogram"]] + [1])
    for b in st["histogram"]:
        if b["count"]:
            lines.append(f"  {b['bin']:>6} [cyan]{_bar(b['count'], peak):<16}[/] {b['count']}")
    lines.append(f"[dim]speech[/]   {st['words_per_minute']:.0f} words/min · vocabulary {st['vocabulary']}")
    lines.append(f"[dim]words[/]    per transcript min {t['min']:.0f} · median {t['median']:.0f} · max {t['max']:.0f}")
    f = st.get("fillers")
    if f:
        lines.append(f"[dim]fillers[/]  verbatim {f['verbatim']:.1%} · clean {f['clean']:.1%} ({f['clips']} clips)")
    for n in st.get("notes", []):
        lines.append(f"[dim]note[/]     {n}")
    n_prob = len(st.get("problems", []))
    lines.append("[dim]problems[/] " + (f"[red]{n_prob} clip(s) left out[/] (below)" if n_prob else "[green]none[/]"))
    return "\n".join(lines)


class DatasetsScreen(Screen):
    DEFAULT_CSS = """
    DatasetsScreen #ds-list { width: 26; height: 1fr; }
    DatasetsScreen #ds-right { width: 1fr; }
    DatasetsScreen #ds-stats { height: auto; padding: 0 1; }
    DatasetsScreen #ds-problems { height: auto; max-height: 12; }
    DatasetsScreen #ds-hint { height: 1; padding: 0 1; color: $text-muted; }
    """
    BINDINGS = [
        Binding("i", "import_dataset", "Import"),
        Binding("s", "split", "Split", show=False),
        Binding("P", "pin", "Pin samples", show=False),
        Binding("j", "cursor(1)", "Down", show=False),
        Binding("k", "cursor(-1)", "Up", show=False),
        Binding("r", "refresh", "Refresh"),
        Binding("p", "focus_problems", "Problems"),
        Binding("l", "focus_list", "List", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            yield DataTable(id="ds-list", cursor_type="row", zebra_stripes=False)
            with Vertical(id="ds-right"):
                with VerticalScroll(id="ds-scroll"):
                    yield Static("", id="ds-stats")
                    yield DataTable(id="ds-problems", cursor_type="row")
                yield Static("i imports a folder or manifest · s splits · P pins", id="ds-hint")
        yield KeysFooter()

    def on_mount(self) -> None:
        table = self.query_one("#ds-list", DataTable)
        table.add_columns("dataset", "clips", "min")
        problems = self.query_one("#ds-problems", DataTable)
        problems.add_column("file", key="file")
        problems.add_column("reason", key="reason")
        self.action_refresh()
        table.focus()

    _records: list[dict] = []

    @property
    def _ws(self):
        return self.app.workspace  # type: ignore[attr-defined]

    def action_refresh(self) -> None:
        from engine import datasets

        try:
            datasets.ensure_demo(self._ws)
        except datasets.DatasetError as e:
            self.notify(str(e), severity="warning")
        table = self.query_one("#ds-list", DataTable)
        current = self._selected()
        table.clear()
        recs = datasets.list_all(self._ws)
        self._records = recs
        for rec in recs:
            table.add_row(rec["name"], f"{rec['clips_usable']}/{rec['clips_total']}", f"{rec['hours'] * 60:.1f}",
                          key=rec["name"])
        names = [r["name"] for r in recs]
        if names:
            table.move_cursor(row=names.index(current) if current in names else 0)
            self._show(names[table.cursor_row])
        else:
            self.query_one("#ds-stats", Static).update("No datasets yet.")

    def _selected(self) -> str | None:
        table = self.query_one("#ds-list", DataTable)
        if not table.row_count:
            return None
        try:
            return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        except Exception:
            return None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "ds-list" and event.row_key is not None:
            self._show(str(event.row_key.value))

    def _show(self, name: str) -> None:
        from engine import datasets

        try:
            st = datasets.stats(self._ws, name)
        except datasets.DatasetError as e:
            self.query_one("#ds-stats", Static).update(f"[red]{e}[/]")
            return
        self.query_one("#ds-stats", Static).update(stats_text(st))
        problems = self.query_one("#ds-problems", DataTable)
        problems.clear()
        files = [_short_path(p["file"]) for p in st.get("problems", [])]
        # the reason wraps in the width the file names leave, so it is read whole at 80 columns
        reason_width = max(20, self.query_one("#ds-right").size.width - max([4, *map(len, files)]) - 6)
        problems.columns[ColumnKey("reason")].width = reason_width
        problems.columns[ColumnKey("reason")].auto_width = False
        for f, p in zip(files, st.get("problems", [])):
            problems.add_row(f, Text(p["reason"]), height=None)
        problems.display = bool(st.get("problems"))

    def action_import_dataset(self) -> None:
        """The import form; on closing, the list shows (and selects) what was imported."""
        from tui.screens.import_dataset import ImportDatasetScreen

        def closed(name: str | None) -> None:
            if name:
                self.action_refresh()
                table = self.query_one("#ds-list", DataTable)
                try:
                    table.move_cursor(row=table.get_row_index(name))
                except Exception:  # noqa: BLE001 - the list was changed meanwhile
                    pass

        self.app.push_screen(ImportDatasetScreen(), closed)

    def action_cursor(self, delta: int) -> None:
        """j / k move in whichever list has the focus (the datasets, else the problems)."""
        table = self.focused if isinstance(self.focused, DataTable) else self.query_one("#ds-list", DataTable)
        (table.action_cursor_down if delta > 0 else table.action_cursor_up)()

    def action_split(self) -> None:
        """`voxtune data split NAME --split SPEC`: redraw the train/validation/test splits."""
        from tui.screens.tools import PromptScreen

        name = self._selected()
        if name is None:
            return
        rec = next((r for r in self._records if r["name"] == name), {})

        def go(spec: str | None) -> None:
            if spec is not None:
                self._dataset_op(f"{name}: splits redrawn", "set_splits", name, spec=spec or None)

        self.app.push_screen(PromptScreen(
            f"Redraw the splits of {name} (runs already made keep theirs): train/validation/test",
            placeholder="fractions 0.8/0.1/0.1 or counts 8/1/1", value=rec.get("split_spec") or ""), go)

    def action_pin(self) -> None:
        """`voxtune data pin NAME ID…`: the clips every run records samples of."""
        from tui.screens.tools import PromptScreen

        name = self._selected()
        if name is None:
            return
        rec = next((r for r in self._records if r["name"] == name), {})

        def go(text: str | None) -> None:
            if text is not None:
                self._dataset_op(f"{name}: pinned samples set", "set_pinned", name, ids=text.split() or None)

        self.app.push_screen(PromptScreen(
            f"Pinned samples of {name}: clip ids (empty: the first validation clips)",
            value=" ".join(rec.get("pinned") or [])), go)

    def _dataset_op(self, done: str, fn: str, *args, **kwargs) -> None:
        """An engine.datasets operation in a thread; then the stats show the change."""
        from engine import datasets

        def work() -> None:
            try:
                getattr(datasets, fn)(self._ws, *args, **kwargs)
            except Exception as e:  # noqa: BLE001 - the engine's message is meant for the user
                self.app.call_from_thread(self.app.show_error, e)  # type: ignore[attr-defined]
                return
            self.app.call_from_thread(self.notify, done)
            self.app.call_from_thread(self.action_refresh)

        self.run_worker(work, thread=True, group="dataset-op", exit_on_error=False)

    def action_focus_problems(self) -> None:
        problems = self.query_one("#ds-problems", DataTable)
        if problems.display and problems.row_count:
            problems.focus()

    def action_focus_list(self) -> None:
        self.query_one("#ds-list", DataTable).focus()


def _short_path(path: str, keep: int = 2) -> str:
    """The last folder and file name: the full path rarely fits at 80 columns."""
    parts = path.replace("\\", "/").split("/")
    return "/".join(parts[-keep:])
