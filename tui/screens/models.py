"""Models screen (key 2): which candidate fits the chosen GPU under which method, and why.

Top: GPU picker (detected devices first), batch size, audio seconds, filter. Middle: one row
per catalog model with a fit mark and GiB (2**30 bytes) per method. Bottom: the highlighted model's estimate
term by term for every method, measured peaks where runs recorded them, and the recommended
set-up. Estimates are pure arithmetic (engine.estimator) over the shipped parameter counts,
so every keystroke updates them live. No torch here.
"""

from __future__ import annotations

from dataclasses import replace

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Header, Input, Label, Select, Static

from engine import calibration
from engine.catalog import WHOLE_5_MIN_S, ModelEntry, load_catalog, matches
from engine.estimator import FitConfig, estimate, max_batch, recommend, traced_gb
from engine.gpus import Gpu, detect, presets
from tui.widgets.footer import KeysFooter

METHODS = ("full", "lora", "qlora", "lora8")
MARK = {"fits": ("✓", "green"), "tight": ("~", "yellow"), "no": ("✗", "red")}
DEFAULT_PRESET = "rx-7700-xt"
TERMS = ("weights", "gradients", "optimizer", "activations", "logits", "overhead")


def this_machine_cpu() -> Gpu:
    """"this machine (CPU)": training on the CPU holds the run in RAM, so the estimate is held
    against the machine's physical memory (os.sysconf; 0 where the platform does not say)."""
    import os

    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        total = 0.0
    return Gpu(name="this machine (CPU)", vendor="cpu", index=None, total_gb=round(total, 1), detected=True,
               key="cpu", source="sysconf")


VENDOR_PREFIXES = ("NVIDIA GeForce ", "NVIDIA ", "AMD Radeon ", "AMD ")


def short_gpu_name(name: str) -> str:
    """'NVIDIA GeForce RTX 3060 12GB' -> 'RTX 3060 12GB': the model number tells cards apart."""
    for prefix in VENDOR_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def gpu_label(g: Gpu) -> str:
    """The picker's words, short enough for its 32 columns with the memory whole (the estimate
    uses it): detected devices by index, the CPU with its RAM, presets marked `preset` (they
    are not this machine). The vendor is left out; the free memory is in the detail."""
    if g.vendor == "cpu":
        return f"{g.name}, {g.total_gb:g} GiB RAM"
    if g.detected:
        return f"#{g.index} {short_gpu_name(g.name)} ({g.total_gb:.1f} GiB)"
    return f"{short_gpu_name(g.name)} ({g.total_gb:g} GiB) preset"


def same_gpu(a: Gpu, b: Gpu) -> bool:
    """One device in two lists (Models' picker and the new-run form's)."""
    if a.key and b.key:
        return a.key == b.key
    return (a.name, a.vendor, a.index, a.detected) == (b.name, b.vendor, b.index, b.detected)


def past_peaks(measurements: list[dict], entry: ModelEntry, limit: int = 3) -> list[dict]:
    """This model's measured peaks from past runs, newest first, whatever their set-up (the
    `measured` row above only shows a run of exactly the set-up on screen)."""
    mine = [m for m in measurements if m.get("model") in (entry.name, entry.hub_id) and calibration.measured_gb(m)]
    return sorted(mine, key=lambda m: m.get("time") or 0, reverse=True)[:limit]


def fmt_params(n: int | None) -> str:
    if n is None:
        return "?"
    if n == 0:
        return "0"
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def fit_cell(entry: ModelEntry, method: str, cfg: FitConfig, gpu_gb: float) -> Text:
    """'✓ 5.1' in green, '~ 10.8' in yellow, '✗ 22.4' in red; dim '-' where voxtune
    cannot train that way."""
    if not entry.params:
        return Text("?", style="dim")
    est = estimate(entry, replace(cfg, method=method))
    mark, colour = MARK[est.verdict(gpu_gb)]
    style = colour if (entry.trainable and method in entry.methods) else f"dim {colour}"
    return Text(f"{mark} {est.total_gb:.1f}", style=style)


def detail_text(entry: ModelEntry, cfg: FitConfig, gpu_gb: float, measurements: list[dict], home=None) -> Text:
    """The highlighted model: recommendation (or why it cannot be trained), terms x methods,
    traced peaks (`voxtune fit --trace`, cached in the workspace `home`), measured peaks. GiB throughout."""
    t = Text()
    p = entry.params or {}
    src = "" if p.get("source") == "computed" else f" ({p.get('source', 'no counts')})"
    t.append(f"{entry.name}", style="bold")
    t.append(f"  {fmt_params(p.get('total'))}{src}: audio {fmt_params(p.get('audio_encoder'))}, "
             f"LM/decoder {fmt_params(p.get('decoder'))}, other {fmt_params(p.get('other'))} · "
             f"{entry.long_audio} ≤{entry.window_s:g}s\n", style="dim")
    if not p:
        t.append("no parameter counts for this model\n", style="red")
        return t
    # the verdict first: at 80x24 the pane shows its top, the terms below scroll
    if not entry.trainable:
        t.append(f"* estimates only, not trainable: {entry.reason}\n", style="yellow")
    else:
        t.append(recommend(entry, gpu_gb, cfg).text + "\n", style="bold green")
    ests = {m: estimate(entry, replace(cfg, method=m)) for m in METHODS}
    t.append(f"{'GiB':<12}" + "".join(f"{m:>9}" for m in METHODS) + "\n", style="bold")
    for term in TERMS:
        t.append(f"{term:<12}" + "".join(f"{ests[m].breakdown[term]:>9.2f}" for m in METHODS) + "\n")
    t.append(f"{'total':<12}", style="bold")
    for m in METHODS:
        mark, colour = MARK[ests[m].verdict(gpu_gb)]
        t.append(f"{ests[m].total_gb:>7.1f} {mark}", style=colour)
    t.append("\n")
    t.append(f"{'max batch':<12}" + "".join(f"{max_batch(entry, replace(cfg, method=m), gpu_gb):>9}" for m in METHODS)
             + "\n", style="dim")
    traced = {m: traced_gb(entry, replace(cfg, method=m), home) for m in METHODS}
    if any(v is not None for v in traced.values()):
        t.append(f"{'traced':<12}", style="magenta")
        for m in METHODS:
            t.append(f"{traced[m]:>9.1f}" if traced[m] is not None else f"{'-':>9}", style="magenta")
        t.append("\n")
    measured = [(m, calibration.compare(ests[m], measurements, entry, replace(cfg, method=m))) for m in METHODS]
    if any(c for _, c in measured):
        t.append(f"{'measured':<12}", style="cyan")
        for _, c in measured:
            t.append(f"{c['measured_gb']:>9.1f}" if c else f"{'-':>9}", style="cyan")
        t.append("\n")
    for m in past_peaks(measurements, entry):
        t.append(f"past run {m.get('run_id') or '?'}: {calibration.measured_gb(m):.1f} GiB measured "
                 f"({m.get('method')}, batch {m.get('batch')}, {float(m.get('audio_seconds') or 0):g} s audio"
                 f"{', OOM' if m.get('oom') else ''} on {m.get('device') or '?'})\n", style="cyan")
    t.append("can rewrite text" if entry.can_rewrite else "CTC, monotonic: can drop fillers, cannot rewrite",
             style="dim")
    t.append(f" · takes {_whole(entry)} whole\n", style="dim")
    t.rstrip()
    return t


def _whole(entry: ModelEntry) -> str:
    s = entry.whole_audio_s
    if s == float("inf"):
        return "any length (as several items)"
    return f"up to {s / 60:g} min" if s >= 60 else f"up to {s:g} s"


class ModelsScreen(Screen):
    HELP_TITLE = "Models"
    DEFAULT_CSS = """
    ModelsScreen #models-controls { height: 1; }
    ModelsScreen #models-controls Label { padding: 0 1 0 1; }
    ModelsScreen #gpu-select { width: 34; }
    ModelsScreen #batch-input { width: 6; }
    ModelsScreen #audio-input { width: 7; }
    ModelsScreen #filter-input { width: 1fr; }
    ModelsScreen #models-table { height: 1fr; }
    ModelsScreen #models-table { min-height: 5; }
    ModelsScreen #models-detail-scroll { height: auto; max-height: 45%; border-top: solid $primary-darken-2; }
    ModelsScreen #models-detail { height: auto; padding: 0 1; }
    """
    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("g", "pick_gpu", "GPU"),
        Binding("b", "edit_batch", "Batch"),
        Binding("a", "edit_audio", "Audio s", show=False),
        Binding("w", "toggle_whole", "5-min whole"),
        Binding("o", "cycle_output", "Rewrite/delete", show=False),
        Binding("enter", "new_run", "New run for model", show=False),
        Binding("r", "refresh", "Refresh", show=False),
        Binding("escape", "focus_table", "Table", show=False),
    ]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.entries = load_catalog()
        self.gpus: list[Gpu] = []
        self.gpu_gb = 12.0
        self.cfg = FitConfig(method="lora", batch=1, audio_seconds=30.0)
        self.filter = ""
        self.whole_s: float | None = None  # w: only models that take WHOLE_5_MIN_S of audio whole
        self.output: str | None = None  # o: None -> "rewrite" -> "delete" -> None
        self.measurements: list[dict] = []

    # -- layout -----------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        detected = list(detect())
        self.gpus = [*detected, this_machine_cpu(), *presets()]
        default = 0 if detected else next(i for i, g in enumerate(self.gpus) if g.key == DEFAULT_PRESET)
        self.gpu_gb = self.gpus[default].total_gb
        self.no_gpu = not detected
        yield Header()
        with Horizontal(id="models-controls"):
            yield Label("GPU", id="gpu-label")
            yield Select([(gpu_label(g), i) for i, g in enumerate(self.gpus)], value=default, allow_blank=False,
                         compact=True, id="gpu-select")
            yield Label("batch")
            yield Input("1", type="integer", compact=True, id="batch-input")
            yield Label("audio s")
            yield Input("30", type="number", compact=True, id="audio-input")
            yield Label("/")
            yield Input("", placeholder="filter", compact=True, id="filter-input")
        yield DataTable(id="models-table", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="models-detail-scroll", can_focus=False):  # long reasons scroll, never cut
            yield Static("", id="models-detail")
        yield KeysFooter()

    def on_mount(self) -> None:
        table = self.query_one("#models-table", DataTable)
        table.add_column("model", key="model", width=max(len(e.name) + 1 for e in self.entries))  # + the * mark
        table.add_column("params", key="params")
        table.add_column("win", key="win")
        for m in METHODS:
            table.add_column(m, key=m, width=7)
        self._load_measurements()
        self.rebuild()
        self._show_gpu_kind()
        # the open list as wide as its longest entry (a device name can outgrow the box)
        from textual.widgets._select import SelectOverlay

        longest = max(len(gpu_label(g)) for g in self.gpus)
        self.query_one("#gpu-select", Select).query_one(SelectOverlay).styles.width = max(34, longest + 4)
        table.focus()

    def on_screen_resume(self) -> None:
        """Runs that ended while another screen showed add measured peaks."""
        self._load_measurements()
        self.update_detail()

    @property
    def gpu(self) -> Gpu:
        value = self.query_one("#gpu-select", Select).value
        return self.gpus[value] if isinstance(value, int) else self.gpus[0]

    def _show_gpu_kind(self) -> None:
        """`GPU` before a device of this machine; `preset` (and no GPU detected) otherwise."""
        g = self.gpu
        label = "CPU" if g.vendor == "cpu" else ("GPU" if g.detected else "preset")
        self.query_one("#gpu-label", Label).update(label)
        if self.no_gpu and not self.sub_title:
            self.sub_title = "no GPU detected: estimates for a preset"

    def _load_measurements(self) -> None:
        ws = getattr(self.app, "workspace", None)
        self.measurements = []
        if ws is not None and ws.db_path.exists():
            from engine.store import Store

            try:
                self.measurements = Store(ws).list_measurements()
            except Exception as e:  # a broken DB must not take the catalog down with it
                self.notify(f"measurements unavailable: {e}", severity="warning")

    # -- data -------------------------------------------------------------------------------
    def visible(self) -> list[ModelEntry]:
        f = self.filter.lower().strip()
        return [e for e in self.entries
                if (not f or f in e.name.lower() or f in e.hub_id.lower() or f in e.family or f in e.recipe)
                and matches(e, self.whole_s, self.output)]

    def filter_text(self) -> str:
        """What the w / o keys filter on, shown in the header ("" when nothing)."""
        parts = [f"takes {self.whole_s / 60:g}-min audio whole"] if self.whole_s else []
        parts += {"rewrite": ["can rewrite"], "delete": ["can only delete (CTC)"]}.get(self.output or "", [])
        return "filter: " + ", ".join(parts) if parts else ""

    def current(self) -> ModelEntry | None:
        table = self.query_one("#models-table", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((e for e in self.entries if e.name == key), None)

    def rebuild(self) -> None:
        """Refill the table (keeping the highlighted model) and the detail pane."""
        table = self.query_one("#models-table", DataTable)
        keep = self.current()
        table.clear()
        for e in self.visible():
            name = Text(e.name if e.trainable else f"{e.name}*", style="" if e.trainable else "dim")
            table.add_row(name, fmt_params(e.params_total), f"{e.window_s:g}s",
                          *(fit_cell(e, m, self.cfg, self.gpu_gb) for m in METHODS), key=e.name)
        if keep is not None and keep.name in [e.name for e in self.visible()]:
            table.move_cursor(row=table.get_row_index(keep.name), animate=False)
        self.update_detail()

    def update_detail(self) -> None:
        e = self.current()
        detail = self.query_one("#models-detail", Static)
        if e is None:
            what = " and ".join(x for x in (repr(self.filter) if self.filter else "", self.filter_text()) if x)
            detail.update(Text(f"no model matches {what} (/ changes the text filter, w and o the others)", style="dim"))
        else:
            ws = getattr(self.app, "workspace", None)
            detail.update(detail_text(e, self.cfg, self.gpu_gb, self.measurements, getattr(ws, "home", None)))

    # -- events -----------------------------------------------------------------------------
    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.update_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_new_run()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "gpu-select" and isinstance(event.value, int):
            self.gpu_gb = self.gpus[event.value].total_gb
            self._show_gpu_kind()
            self.rebuild()

    def on_input_changed(self, event: Input.Changed) -> None:
        value = event.value.strip()
        if event.input.id == "filter-input":
            self.filter = value
            self.rebuild()
            return
        try:
            if event.input.id == "batch-input":
                n = int(value)
                if n < 1:
                    raise ValueError
                self.cfg = replace(self.cfg, batch=n)
            elif event.input.id == "audio-input":
                x = float(value)
                if x <= 0:
                    raise ValueError
                self.cfg = replace(self.cfg, audio_seconds=x)
            else:
                return
        except ValueError:
            return  # half-typed value: keep the last valid one
        self.rebuild()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_focus_table()

    # -- actions ----------------------------------------------------------------------------
    def action_cursor_down(self) -> None:
        self.query_one("#models-table", DataTable).action_cursor_down()

    def action_cursor_up(self) -> None:
        self.query_one("#models-table", DataTable).action_cursor_up()

    def action_filter(self) -> None:
        self.query_one("#filter-input", Input).focus()

    def action_pick_gpu(self) -> None:
        select = self.query_one("#gpu-select", Select)
        select.focus()
        select.action_show_overlay()

    def action_edit_batch(self) -> None:
        self.query_one("#batch-input", Input).focus()

    def action_edit_audio(self) -> None:
        self.query_one("#audio-input", Input).focus()

    def action_toggle_whole(self) -> None:
        self.whole_s = None if self.whole_s else WHOLE_5_MIN_S
        self._filters_changed()

    def action_cycle_output(self) -> None:
        self.output = {None: "rewrite", "rewrite": "delete"}.get(self.output)
        self._filters_changed()

    def _filters_changed(self) -> None:
        self.sub_title = self.filter_text() or ("no GPU detected: estimates for a preset" if self.no_gpu else "")
        self.rebuild()

    def action_focus_table(self) -> None:
        self.query_one("#models-table", DataTable).focus()

    def action_refresh(self) -> None:
        self._load_measurements()
        self.rebuild()

    def action_new_run(self) -> None:
        """Open the new-run form for the highlighted model with its recommended method."""
        e = self.current()
        if e is None:
            return
        if not e.trainable:
            self.notify(f"{e.name}: {e.reason}", severity="warning")
            return
        rec = recommend(e, self.gpu_gb, self.cfg)
        opener = getattr(self.app, "open_new_run", None)
        if opener is None:
            self.notify("the new-run form is not available in this build", severity="warning")
            return
        opener(model=e.name, method=rec.method, gpu=self.gpu)
