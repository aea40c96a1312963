"""New run: pick model, method, dataset and hyper-parameters; see whether it fits before queueing.

Two layers of checking as you type: `parse_form` (pure, instant) turns the text fields
into numbers and names the field at fault; then, in a thread, engine.queue.resolve -- the
very validation `voxtune queue add` uses -- checks model, method and dataset, and the
estimator says how much memory the run needs on the chosen GPU. Submitting calls
engine.queue.add (or clone) and starts the engine if it is down.
"""

from __future__ import annotations

import asyncio
from functools import partial
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.suggester import SuggestFromList
from textual.widgets import Button, Checkbox, Header, Input, Label, Select, Static

from engine.config import NUMBER_KINDS, form_options, parse_text
from engine.enums import METHODS
from engine.errors import VoxtuneError
from engine.runfiles import RunFiles, read_json
from engine.store import Store
from engine.workspace import Workspace
from tui.widgets.footer import KeysFooter

# The form's fields are engine.config's RunConfig options (the CLI's flags come from the same
# list); this module only decides which widget shows each one and how they are laid out.
FORM = dict(form_options())
SELECTS = ("dataset",)  # text options the form offers as a choice list (filled from the store)
ADAPTER_FIELDS = tuple(n for n, o in FORM.items() if o.applies == "adapter")
TRAIN_FIELDS = tuple(n for n, o in FORM.items() if o.applies == "train")
EVAL_FIELDS = tuple(n for n, o in FORM.items() if o.applies == "eval")
LABELS = {n: o.label for n, o in FORM.items()} | {"gpu": "GPU"}


def widget_kind(name: str) -> str:
    """select | num | text | check: the widget that edits option `name`."""
    kind = FORM[name].kind
    if kind == "choice" or name in SELECTS:
        return "select"
    if kind in NUMBER_KINDS or kind == "count_or_all":
        return "num"
    return "check" if kind == "bool" else "text"


TEXT_FIELDS = tuple(n for n in FORM if widget_kind(n) in ("num", "text"))
CHECKS = tuple(n for n in FORM if widget_kind(n) == "check")
ROW_WIDTH = {"select": 2, "num": 4, "text": 2, "check": 4}  # fields per row, sized for 80 columns


def layout() -> list[list[str]]:
    """Rows of field names: the model on its own row; what to run (method and dataset; the
    eval split takes the method's place in an eval-only run, the two never show together);
    the GPU to estimate for -- a form-only choice -- on a row of its own, so its label
    ("NVIDIA GeForce RTX 4090 (24 GiB, this machine)") is never cut at 80 columns; the
    numbers; the numerics choices; the other text fields; the switches. Tab follows this order."""
    selects = [n for n in FORM if widget_kind(n) == "select"]
    first = ["method", "dataset", "split", "gpu"]
    rows: list[list[str]] = [["model"], first[:3], first[3:]]
    groups = [[n for n in FORM if n != "model" and widget_kind(n) == "num"],
              [n for n in selects if n not in first],
              [n for n in FORM if n != "model" and widget_kind(n) == "text"],
              [n for n in FORM if widget_kind(n) == "check"]]
    for names, kind in zip(groups, ("num", "select", "text", "check")):
        width = ROW_WIDTH[kind]
        rows += [names[i:i + width] for i in range(0, len(names), width)]
    return rows


def parse_number(text: str, kind: str) -> tuple[Any, str | None]:
    """(value, None) or (None, what is wrong) -- the message fits after the field's label."""
    return parse_text(text, kind)


def applies(name: str, method: str | None, eval_only: bool) -> bool:
    """Does option `name` matter for this method and run kind (else it is disabled)?"""
    where = FORM[name].applies if name in FORM else "always"
    if where == "train":
        return not eval_only
    if where == "adapter":
        return not eval_only and method not in (None, "full")
    if where == "eval":
        return eval_only
    return True


def parse_form(raw: dict[str, str], method: str, eval_only: bool = False) -> tuple[dict, dict[str, str]]:
    """Text fields -> values; fields that do not apply (LoRA fields of a full fine-tune,
    training fields of an eval-only run) are left out. Empty optional fields are None."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in TEXT_FIELDS:
        if name == "model" or not applies(name, method, eval_only):
            continue
        opt = FORM[name]
        value, err = parse_text(raw.get(name, ""), opt.kind, opt.optional)
        if err:
            errors[name] = f"{opt.label}: {err}"
        else:
            values[name] = value
    if not eval_only and values.get("max_steps") is None and values.get("epochs") is None \
            and "max_steps" not in errors and "epochs" not in errors:
        errors["max_steps"] = "Steps: give steps or epochs"
    elif values.get("max_steps") is not None and values.get("epochs") is not None:
        errors["epochs"] = "Epochs: give steps or epochs, not both"
    return values, errors


def fmt_default(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


# -- engine look-ups (run in threads) -----------------------------------------------------
def catalog_choices() -> list[str]:
    """Names the model field suggests; an empty list when the catalog cannot be read."""
    try:
        from engine import catalog

        return [m.name for m in catalog.load_catalog()]
    except Exception:  # noqa: BLE001 - the field still accepts names and local paths
        return []


def gpu_choices() -> list[tuple[str, Any]]:
    """Detected devices first, then presets; (label, Gpu). A CPU-only box lists presets only."""
    from engine import gpus

    out: list[tuple[str, Any]] = []
    try:
        detected = list(gpus.detect())
    except Exception:  # noqa: BLE001 - detection must never stop the form
        detected = []
    for g in detected:
        if getattr(g, "vendor", None) != "cpu" and getattr(g, "total_gb", 0):
            out.append((f"{g.name} ({g.total_gb:g} GiB, this machine)", g))
    for g in gpus.presets():
        out.append((f"{g.name} ({g.total_gb:g} GiB)", g))
    return out


@dataclass(frozen=True)
class Fit:
    """The estimator's answer for one config on one GPU, ready to show."""

    total_gb: float
    gpu: str
    gpu_gb: float
    verdict: str  # fits | tight | no
    max_batch: int
    free_gb: float | None = None
    recommendation: str | None = None
    traced_gb: float | None = None  # `voxtune fit --trace`'s figure for this config, when cached
    note: str | None = None  # where the figure comes from, when that is not the usual


def fit_for(cfg: dict, gpu: Any) -> Fit | str | None:
    """Estimate `cfg` against `gpu`; a string says why there is no estimate."""
    from engine import estimator

    est = estimator.estimate_for_run(cfg)
    if est is None:
        return "the estimator has no parameter counts for this model"
    gpu_gb = float(gpu.total_gb)
    devices = cfg.get("gpus") if isinstance(cfg.get("gpus"), int) else 1
    if devices > 1:  # several cards: what each one holds (DDP, or FSDP when only sharding fits)
        strategy, per = estimator.choose_strategy(estimator.multi_device_terms(est), devices, gpu_gb, est.total_gb)
        fits = per is not None and per <= gpu_gb * (1 - estimator.DEFAULT_MARGIN)
        verdict = ("tight" if per > 0.8 * gpu_gb else "fits") if fits else "no"
        return Fit(total_gb=per, gpu=f"each of {devices} × {gpu.name} ({strategy})", gpu_gb=gpu_gb, verdict=verdict,
                   max_batch=est.max_batch(gpu_gb), free_gb=getattr(gpu, "free_gb", None),
                   recommendation=None if fits else "try a smaller batch, gradient checkpointing, or QLoRA")
    verdict = est.verdict(gpu_gb)
    recommendation = None
    if verdict == "no":
        entry = est._entry
        rec = estimator.recommend(entry, gpu_gb, base=estimator.fit_config_from_run(cfg, entry))
        recommendation = rec.text
    try:
        traced = estimator.traced_for_run(cfg)
    except Exception:  # noqa: BLE001 - a traced figure is extra information, never a reason to fail
        traced = None
    return Fit(total_gb=est.total_gb, gpu=gpu.name, gpu_gb=gpu_gb, verdict=verdict, max_batch=est.max_batch(gpu_gb),
               free_gb=getattr(gpu, "free_gb", None), recommendation=recommendation, traced_gb=traced)


NOT_DOWNLOADED = "analytical, from the catalog's counts: the model is not on this machine"


def check_config(ws: Workspace, options: dict, gpu: Any) -> tuple[dict | None, str | None, str | None, Any]:
    """engine.queue.resolve + estimate: (config, field at fault, message, Fit | reason | None).
    A catalog model whose files are missing (not cached while offline) is refused, but still
    gets the analytical estimate: the estimator needs the catalog's counts, not the weights."""
    from engine import queue

    try:
        cfg = queue.resolve(ws, Store(ws), **options)
    except VoxtuneError as e:  # unknown model, bad option, no dataset...: the field is marked
        return None, e.field, e.one_line(), _estimate_without_files(ws, options, gpu) if e.field == "model" else None
    if gpu is None:
        return cfg, None, None, "no GPU chosen"
    try:
        return cfg, None, None, fit_for(cfg, gpu)
    except Exception as e:  # noqa: BLE001 - no estimate is not a reason to refuse a run
        return cfg, None, None, f"no estimate ({type(e).__name__}: {e})"


def _estimate_without_files(ws: Workspace, options: dict, gpu: Any) -> Fit | str | None:
    """The estimate for a known model whose files this machine lacks (engine.queue.resolve
    with model_files=False); a reason string, or None when the model itself is unknown."""
    from dataclasses import replace

    from engine import queue

    try:
        cfg = queue.resolve(ws, Store(ws), model_files=False, **options)
    except VoxtuneError:
        return None
    if gpu is None:
        return "no GPU chosen"
    try:
        fit = fit_for(cfg, gpu)
    except Exception as e:  # noqa: BLE001 - no estimate is not worth a crash
        return f"no estimate ({type(e).__name__}: {e})"
    return replace(fit, note=NOT_DOWNLOADED) if isinstance(fit, Fit) else fit


def _eval_warning(ws: Workspace, cfg: Any) -> str | None:
    from engine import queue

    try:
        return queue.eval_set_warning(ws, cfg)
    except Exception:  # noqa: BLE001 - a warning must never break the form
        return None


def estimate_text(fit: Fit | str | None, why_none: str | None = None) -> Text:
    """'≈ 7.9 GiB of 12 GiB on RX 7700 XT: fits (largest batch 6)', or a loud warning.
    `why_none`: what keeps the form from having an estimate, when fit is None."""
    if fit is None:
        return Text(f"Estimate: {why_none or 'fill in the form (model, method, dataset).'}", style="dim")
    if isinstance(fit, str):
        return Text(f"Estimate: {fit}", style="yellow")
    text = Text("Estimate: ")
    text.append(f"≈ {fit.total_gb:.1f} GiB of {fit.gpu_gb:g} GiB on {fit.gpu}")
    if fit.traced_gb is not None:
        text.append(f" (traced {fit.traced_gb:.1f} GiB)", style="magenta")
    if fit.verdict == "fits":
        text.append("  ✓ fits", style="bold green")
    elif fit.verdict == "tight":
        text.append("  ~ tight", style="bold yellow")
    else:
        text.append("  ✗ DOES NOT FIT", style="bold red")
    if fit.verdict != "no":
        text.append(f" (largest batch {fit.max_batch})")
        if fit.free_gb is not None and fit.free_gb < fit.total_gb:
            text.append(f"\n  only {fit.free_gb:.1f} GiB free now: the run waits until memory frees up", style="yellow")
    else:
        text.append(f"\n  {fit.recommendation or 'try a smaller batch, qlora, or checkpointing'}", style="red")
        text.append("\n  (you can still queue it; it will wait and never start on this GPU)", style="dim")
    if fit.note:
        text.append(f"\n  ({fit.note})", style="dim")
    return text


def why_no_estimate(errors: dict[str, str], engine_field: str | None = None) -> str:
    """The estimate line's words when there is none: which field stands in the way."""
    field = "model" if "model" in errors else engine_field or next(iter(errors), None)
    if field == "model" and errors.get("model", "").startswith("Model: required"):
        return "give a model first."
    if field == "model":
        return "none for this model (see the message in red below)."
    if field:
        label = LABELS.get(field, field)
        return f"none until {label} is fixed (in red below)."
    return "fill in the form (model, method, dataset)."


def submit(ws: Workspace, options: dict, clone_of: str | None) -> tuple[str, str | None]:
    """Queue the run and make sure the engine runs: (run id, warning about the engine)."""
    from engine import queue

    run_id = queue.clone(ws, clone_of, **options) if clone_of else queue.add(ws, **options)
    try:
        from engine import daemon

        daemon.ensure_running(ws)
    except Exception as e:  # noqa: BLE001 - the run is queued; the user can start the engine later
        return run_id, f"queued, but the engine did not start: {e} (press s on Runs)"
    return run_id, None


class OnOffBox(Checkbox):
    """A checkbox whose mark is a character, not only a colour, so NO_COLOR terminals show the state."""

    @property
    def BUTTON_INNER(self) -> str:  # type: ignore[override]
        return "X" if self.value else " "

    def watch_value(self) -> None:
        super().watch_value()  # sets the -on class and posts Changed: the form must hear it
        self.refresh()


class NewRunScreen(Screen[str | None]):
    """The form. Dismisses with the new run's id, or None when cancelled."""

    HELP_TITLE = "New run"
    BINDINGS = [
        Binding("ctrl+s", "submit", "Queue run"),
        Binding("escape", "cancel", "Cancel"),
        Binding("q", "cancel", "Cancel", show=False),  # outside text fields: leave the form, not the app
    ]
    CHECK_DELAY = 0.25

    def __init__(self, model: str | None = None, clone_of: str | None = None, method: str | None = None,
                 gpu: Any = None) -> None:
        super().__init__()
        self.initial_gpu = gpu  # engine.gpus.Gpu chosen on the Models screen
        self.initial_model = model
        self.initial_method = method
        self.clone_of = clone_of
        self.touched: set[str] = set()
        self.errors: dict[str, str] = {}
        self.engine_error: tuple[str | None, str] | None = None
        self.config: dict | None = None
        self.estimate: Any = None
        self._gpus: list[tuple[str, Any]] = []
        self._check_timer = None
        # widget values the form set itself (compose's initial values included), not user edits
        self._set_by_form: dict[str, Any] = {"priority": "0", "method": "lora", "precision": "auto", "optimizer": "adamw",
                                             "gpus": "1"}
        self._generation = 0
        # the catalog's refusal of the model field ("unknown model …; did you mean …"): while it
        # stands, the fields its defaults would fill are empty, and only the model is at fault
        self.model_error: str | None = None

    @property
    def workspace(self) -> Workspace:
        return self.app.workspace  # type: ignore[attr-defined]

    # -- layout -----------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        title = f"New run (a copy of {self.clone_of})" if self.clone_of else "New run"
        with VerticalScroll(id="new-run-form"):
            yield Static(title, id="form-title")
            for row in layout():
                with Horizontal(classes="form-row"):
                    for name in row:
                        yield from self._field(name)
            yield Static(id="estimate")
            yield Static(id="form-errors")
            with Horizontal(id="form-buttons"):
                yield Button("Queue run (ctrl+s)", id="submit", variant="primary", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)
        yield KeysFooter()

    def _field(self, name: str) -> ComposeResult:
        """One option's label and widget (ids: `label-NAME` and `NAME`)."""
        if name == "gpu":
            yield Label("GPU", classes="form-label", id="label-gpu")
            yield Select([], id="gpu", prompt="(none)", compact=True)
            return
        opt, kind = FORM[name], widget_kind(name)
        tip = opt.help + (f" ({opt.flag})" if opt.flag else "")
        if kind == "check":
            box = OnOffBox(opt.label, id=name, compact=True)
            box.tooltip = tip
            yield box
            return
        yield Label(opt.label, classes="form-label", id=f"label-{name}")
        if kind == "select":
            if name == "dataset":
                widget = Select([], id=name, prompt="(none imported)", compact=True)
            else:
                first = opt.choices[0] if name != "method" else "lora"
                widget = Select([(c, c) for c in opt.choices], id=name, allow_blank=False,
                                value=self._set_by_form.get(name, first), compact=True)
        elif kind == "num":
            widget = Input("0" if name == "priority" else "", id=name, compact=True, classes="num")
        else:
            widget = Input(placeholder=opt.placeholder or "", id=name, compact=True)
        widget.tooltip = tip
        yield widget

    async def on_mount(self) -> None:
        self.query_one("#model", Input).focus()
        names, datasets, self._gpus, prefill = await asyncio.to_thread(self._load_choices)
        if names:
            self.query_one("#model", Input).suggester = SuggestFromList(names, case_sensitive=False)
        ds = self.query_one("#dataset", Select)
        ds.set_options([(d, d) for d in datasets])
        if datasets:  # the user's own data before the bundled demo
            self._set(ds, next((d for d in datasets if d != "demo"), datasets[0]))
        self._update_applicable()  # before any model: the eval split is hidden, as in a training form
        gpu = self.query_one("#gpu", Select)
        gpu.set_options([(label, i) for i, (label, _) in enumerate(self._gpus)])
        if self._gpus:
            self._set(gpu, self._gpu_index(self.initial_gpu))
        if prefill:
            self._fill(prefill, touch=True)
        elif self.initial_model:
            self._fill({"model": self.initial_model, "method": self.initial_method}, touch=True)
        await self._apply_defaults()
        self._schedule_check(0)

    def _gpu_index(self, wanted: Any) -> int:
        """The form's entry for the GPU chosen on Models (added when the form lacks it, e.g. the
        CPU); the first entry when none was chosen."""
        if wanted is None:
            return 0
        from tui.screens.models import gpu_label, same_gpu

        for i, (_, g) in enumerate(self._gpus):
            if same_gpu(g, wanted):
                return i
        self._gpus.append((gpu_label(wanted), wanted))
        self.query_one("#gpu", Select).set_options([(label, i) for i, (label, _) in enumerate(self._gpus)])
        return len(self._gpus) - 1

    def _load_choices(self):
        store = Store(self.workspace)
        from engine.datasets import ensure_demo

        try:  # the bundled demo is always offered, as in `voxtune data ls` and the Datasets screen
            ensure_demo(self.workspace)
        except VoxtuneError:
            pass  # a damaged install: the form still opens; the dataset field says none is imported
        datasets = sorted(d["name"] for d in store.list_datasets())
        try:
            gpus = gpu_choices()
        except Exception:  # noqa: BLE001
            gpus = []
        prefill = None
        if self.clone_of:
            prefill = read_json(RunFiles(self.workspace.run_dir(self.clone_of)).config, None)
            run = store.get_run(self.clone_of)
            if prefill is not None and run is not None:
                prefill["priority"] = run.get("priority", 0)
        return catalog_choices(), datasets, gpus, prefill

    # -- values in and out --------------------------------------------------------------
    def _set(self, widget: Any, value: Any) -> None:
        """Set a widget's value and remember it, so its Changed event is not taken for an edit."""
        self._set_by_form[widget.id] = value
        widget.value = value

    def _is_ours(self, name: str | None, value: Any) -> bool:
        return name in self._set_by_form and self._set_by_form[name] == value

    def _fill(self, values: dict, touch: bool = False) -> None:
        """Put values into the widgets (defaults or a cloned run's config)."""
        for key, value in values.items():
            widgets = self.query(f"#{key}")
            if not widgets:
                continue
            w = widgets.first()
            if isinstance(w, Input):
                self._set(w, fmt_default(value))
            elif isinstance(w, Checkbox):
                self._set(w, bool(value))
            elif isinstance(w, Select) and value is not None:
                if value not in [v for _, v in w._options]:
                    continue
                self._set(w, value)
            else:
                continue
            if touch:
                self.touched.add(key)

    def raw_values(self) -> dict[str, Any]:
        raw: dict[str, Any] = {}
        for name in FORM:
            w = self.query_one(f"#{name}")
            if isinstance(w, Select):
                raw[name] = None if w.value is Select.NULL else w.value
            elif isinstance(w, Checkbox):
                raw[name] = w.value
            else:
                raw[name] = w.value.strip() if name == "model" else w.value
        return raw

    def options(self) -> tuple[dict, dict[str, str]]:
        """The keyword arguments for engine.queue.add, and the fields at fault."""
        raw = self.raw_values()
        method = raw["method"] or "lora"
        eval_only = bool(raw.get("eval_only"))
        values, errors = parse_form(raw, method, eval_only)
        if not raw["model"]:
            errors["model"] = "Model: required (a catalog name, hub id or local folder)"
        elif self.model_error:  # the other fields wait for this model's defaults: not their fault
            errors = {"model": self.model_error}
        if not raw["dataset"]:
            errors["dataset"] = "Dataset: none chosen; import one first (3 opens Datasets)"
        options = dict(values, model=raw["model"], dataset=raw["dataset"])
        for name in FORM:
            if widget_kind(name) in ("select", "check") and name != "dataset" and applies(name, method, eval_only):
                options[name] = raw[name]
        if eval_only:
            options.setdefault("method", None)
        return options, errors

    @property
    def selected_gpu(self) -> tuple[str, Any] | tuple[None, None]:
        v = self.query_one("#gpu", Select).value
        if v is Select.NULL or not isinstance(v, int) or v >= len(self._gpus):
            return None, None
        return self._gpus[v]

    async def _apply_defaults(self) -> None:
        """Defaults for this model and method, into every field the user has not edited."""
        raw = self.raw_values()
        if not raw["model"]:
            self.model_error = None
            return
        try:
            methods, defaults = await asyncio.to_thread(_defaults_for, raw["model"], raw["method"] or "lora",
                                                        self.workspace, raw["dataset"], raw.get("eval_dataset"))
        except VoxtuneError as e:  # unknown model: named with the CLI's words, the field marked
            if raw["model"] == self.raw_values()["model"]:
                self.model_error = f"model: {e.one_line()}"  # as `voxtune queue add` says it
                self._schedule_check()
            return
        except Exception:  # noqa: BLE001 - the engine check below names what is wrong
            return
        self.model_error = None
        method = self.query_one("#method", Select)
        if methods and tuple(methods) != tuple(v for _, v in method._options):
            current = method.value
            method.set_options([(m, m) for m in methods])
            self._set(method, current if current in methods else methods[0])
            if current not in methods:
                defaults = (await asyncio.to_thread(_defaults_for, raw["model"], method.value, self.workspace,
                                                    raw["dataset"], raw.get("eval_dataset")))[1]
        self._fill({k: v for k, v in defaults.items() if k not in self.touched})
        self._update_applicable()
        self._schedule_check()

    def _update_applicable(self) -> None:
        """Fields that do not apply to this method / run kind are disabled (and hidden for an
        eval-only run: its form shows what an evaluation needs)."""
        raw = self.raw_values()
        method, eval_only = raw.get("method"), bool(raw.get("eval_only"))
        for name in FORM:
            if name == "model":
                continue
            on = applies(name, method, eval_only)
            self.query_one(f"#{name}").disabled = not on
            # an evaluation trains nothing: its form hides the training and adapter (LoRA) fields
            hide = (FORM[name].applies in ("train", "adapter") and eval_only) or \
                (FORM[name].applies == "eval" and not eval_only)
            for w in self.query(f"#{name}, #label-{name}"):
                w.display = not hide

    # -- live checking ------------------------------------------------------------------
    @on(Input.Changed)
    @on(Checkbox.Changed)
    def _field_changed(self, event) -> None:
        name = event.control.id
        if self._is_ours(name, event.value):
            self._schedule_check()
            return
        if name:
            self.touched.add(name)
        if name == "model":
            self.model_error = None
            self.run_worker(self._apply_defaults, group="defaults", exclusive=True, exit_on_error=False)
        elif name == "eval_only":
            self._update_applicable()
        elif FORM.get(name) is not None and FORM[name].warning and event.value:
            self.notify(f"{FORM[name].label}: {FORM[name].warning}", severity="warning", timeout=8)
        self._schedule_check()

    @on(Select.Changed)
    def _select_changed(self, event: Select.Changed) -> None:
        name = event.control.id
        if self._is_ours(name, event.value):
            self._schedule_check()
            return
        if name in ("method", "dataset"):  # the schedule follows the model, the method and the data
            self._update_applicable()
            self.run_worker(self._apply_defaults, group="defaults", exclusive=True, exit_on_error=False)
        elif name and name != "gpu":
            self.touched.add(name)
        self._schedule_check()

    def _schedule_check(self, delay: float | None = None) -> None:
        """Show parse errors now; ask the engine after the typing pauses."""
        options, errors = self.options()
        self.errors = {"model": errors["model"]} if "model" in errors else errors
        self._show_errors()
        if self._check_timer is not None:
            self._check_timer.stop()
        self._check_timer = self.set_timer(self.CHECK_DELAY if delay is None else delay, self._start_check)

    def _start_check(self) -> None:
        self.run_worker(self._check, group="check", exclusive=True, exit_on_error=False)

    async def _check(self) -> None:
        options, errors = self.options()
        self._generation += 1
        gen = self._generation
        if errors:
            self.engine_error, self.config = None, None
            self.estimate = None
            self._show_errors()
            return
        label, gpu = self.selected_gpu
        cfg, field, message, est = await asyncio.to_thread(check_config, self.workspace, options, gpu)
        if gen != self._generation:
            return
        self.config = cfg
        self.engine_error = (field, message) if message else None
        self.estimate = est
        self._show_errors()
        text = estimate_text(est, why_no_estimate({}, field) if message else None)
        if cfg is not None and cfg.defaults_note:
            text.append(f"\nDefaults: {cfg.defaults_note}", style="dim")
        warning = await asyncio.to_thread(_eval_warning, self.workspace, cfg) if cfg is not None else None
        if gen != self._generation:
            return
        if warning:
            text.append(f"\n⚠ {warning}", style="bold yellow")
        self.query_one("#estimate", Static).update(text)

    def _show_errors(self) -> None:
        bad = set(self.errors)
        if self.engine_error and self.engine_error[0]:
            bad.add(self.engine_error[0])
        for w in self.query(".form-row Input, .form-row Select"):
            w.set_class(w.id in bad, "-invalid")
        lines = list(self.errors.values())
        if self.engine_error and not self.errors:
            lines.append(self.engine_error[1])
        if len(lines) > 3:
            lines = lines[:2] + [f"(and {len(lines) - 2} more fields in red)"]
        box = self.query_one("#form-errors", Static)
        box.update(Text("\n".join(lines), style="bold red") if lines else "")
        box.display = bool(lines)
        self.query_one("#submit", Button).disabled = bool(lines)
        if self.errors:
            self.query_one("#estimate", Static).update(estimate_text(None, why_no_estimate(self.errors)))

    # -- submit / cancel ---------------------------------------------------------------
    @on(Button.Pressed, "#submit")
    def _submit_pressed(self) -> None:
        self.action_submit()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_submit(self) -> None:
        options, errors = self.options()
        if "model" in errors:  # the other fields wait for the model's defaults: only it is at fault
            errors = {"model": errors["model"]}
        if errors:
            self.errors = errors
            self._show_errors()
            first = next(iter(errors))
            if self.query(f"#{first}"):
                self.query_one(f"#{first}").focus()
            self.notify(errors[first] if len(errors) == 1 else "Fix the fields in red first.", severity="error")
            return
        self.run_worker(partial(self._submit, options), group="submit", exclusive=True, exit_on_error=False)

    async def _submit(self, options: dict) -> None:
        self.query_one("#submit", Button).disabled = True
        try:
            run_id, warning = await asyncio.to_thread(submit, self.workspace, options, self.clone_of)
        except VoxtuneError as e:
            self.query_one("#submit", Button).disabled = False
            self.engine_error = (e.field, e.one_line())
            self._show_errors()
            self.notify(e.one_line() + (f"\n{e.hint}" if e.hint else ""), title="Not queued", severity="error")
            return
        except Exception as e:  # noqa: BLE001
            self.query_one("#submit", Button).disabled = False
            self.notify(f"{type(e).__name__}: {e}", title="Not queued", severity="error")
            return
        if warning:
            self.notify(warning, severity="warning", timeout=8)
        self.notify(f"Queued {run_id}.")
        self.dismiss(run_id)


def _defaults_for(model: str, method: str, ws: Workspace | None = None, dataset: str | None = None,
                  eval_dataset: str | None = None) -> tuple[list[str], dict]:
    """The methods a model supports and engine.config's defaults for it, `method` and the
    training data of `dataset` (its train split's clips and minutes; engine.config.defaults)."""
    from engine import catalog, config, queue

    entry = catalog.get_model(model)
    methods = [m for m in METHODS if m in (entry.methods or METHODS)]
    data = None
    if ws is not None and dataset:
        store = Store(ws)
        try:
            ref = queue.parse_eval_dataset(eval_dataset, dataset) if eval_dataset else None
        except VoxtuneError:
            ref = None
        data = queue._data_size(ws, store, dataset, ref, entry) if store.get_dataset(dataset) else None
    out = config.defaults(entry, method if method in methods else (methods or ["lora"])[0], data=data)
    out.pop("defaults_note", None)  # not a field: the estimate line shows the resolved run's note
    return methods, out
