"""Import a dataset from the TUI (key i on Datasets): the same engine.datasets.import_dataset
that `voxtune data import PATH --name NAME [--split SPEC]` calls, run in a thread worker, with
the same validation report (usable clips, splits, notes, the clips left out and why).

Nothing here imports torch: reading and checking audio is soundfile/numpy (engine.audio).
Dismisses with the imported dataset's name, or None.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

PROBLEMS_SHOWN = 20  # as `voxtune data import` prints; the Datasets screen lists all of them


def report_text(report: dict) -> Text:
    """The import report as `voxtune data import` words it, problems in red."""
    from engine.datasets import summary_lines  # loaded already: the import ran in this process

    t = Text()
    for i, line in enumerate(summary_lines(report)):
        t.append(line + "\n", style="bold" if i == 0 else "yellow" if line.startswith("note: ") else "")
    problems = report.get("problems") or []
    if problems:
        verdict = "nothing imported" if not report["clips_usable"] else "left out"
        t.append(f"{len(problems)} clip(s) {verdict}:\n", style="bold red")
        for p in problems[:PROBLEMS_SHOWN]:
            t.append(f"  {Path(p['file']).name}: {p['reason']}\n", style="red")
        if len(problems) > PROBLEMS_SHOWN:
            t.append(f"  … and {len(problems) - PROBLEMS_SHOWN} more (listed on the Datasets screen)\n", style="red")
    elif report.get("stored"):
        t.append("no problems\n", style="green")
    return t


class ImportDatasetScreen(ModalScreen[str | None]):
    HELP_TITLE = "Import dataset"
    DEFAULT_CSS = """
    ImportDatasetScreen { align: center middle; }
    ImportDatasetScreen #import-box { width: 76; max-width: 100%; height: auto; max-height: 100%;
                                     border: round $primary; padding: 0 1; background: $surface; }
    ImportDatasetScreen .import-row { height: 1; }
    ImportDatasetScreen .import-row Label { width: 7; color: $text-muted; }
    ImportDatasetScreen .import-row Input { width: 1fr; }
    ImportDatasetScreen .-invalid { background: $error 30%; }
    ImportDatasetScreen #import-report { height: auto; max-height: 12; }
    ImportDatasetScreen #import-buttons { height: 1; margin-top: 1; }
    ImportDatasetScreen #import-buttons Button { margin-right: 2; }
    """
    BINDINGS = [
        Binding("ctrl+s", "run_import", "Import"),
        Binding("escape", "close", "Close"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.report: dict | None = None
        self.imported: str | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="import-box"):
            yield Static("Import a dataset (as `voxtune data import`)", id="import-title")
            with Horizontal(classes="import-row"):
                yield Label("Path", id="label-path")
                yield Input(placeholder="folder of clip.wav + clip.txt, or a manifest .jsonl/.csv", id="path", compact=True)
            with Horizontal(classes="import-row"):
                yield Label("Name", id="label-name")
                yield Input(placeholder="(the folder's name)", id="name", compact=True)
            with Horizontal(classes="import-row"):
                yield Label("Split", id="label-split")
                yield Input(placeholder="train/val/test: 0.8/0.1/0.1 (default) or counts 8/1/1", id="split", compact=True)
            with VerticalScroll(id="import-report"):
                yield Static("", id="import-report-text")
            with Horizontal(id="import-buttons"):
                yield Button("Import (ctrl+s)", id="import", variant="primary", compact=True)
                yield Button("Close (esc)", id="close", compact=True)

    def on_mount(self) -> None:
        self.query_one("#path", Input).focus()

    def values(self) -> dict:
        path = self.query_one("#path", Input).value.strip()
        name = self.query_one("#name", Input).value.strip()
        if not name and path:
            name = Path(path).expanduser().name
        split = self.query_one("#split", Input).value.strip() or None
        return {"path": path, "name": name, "split": split}

    def _say(self, text: Text | str, field: str | None = None) -> None:
        for w in self.query(Input):
            w.set_class(w.id == field, "-invalid")
        self.query_one("#import-report-text", Static).update(text)

    @on(Input.Submitted)
    @on(Button.Pressed, "#import")
    def action_run_import(self) -> None:
        v = self.values()
        if not v["path"]:
            self._say(Text("Path: required (a folder of recordings or a manifest)", style="bold red"), "path")
            self.query_one("#path", Input).focus()
            return
        self.query_one("#import", Button).disabled = True
        self._say(Text(f"importing {v['path']} as {v['name']}… (reading and checking every clip)", style="dim"))
        self._import(v)

    @work(thread=True, exclusive=True, group="import", exit_on_error=False)
    def _import(self, v: dict) -> None:
        from engine import datasets
        from engine.errors import VoxtuneError

        try:
            report = datasets.import_dataset(self.app.workspace, v["path"], v["name"], split=v["split"])  # type: ignore[attr-defined]
        except VoxtuneError as e:
            msg = e.one_line()
            field = "split" if msg.startswith("--split") else ("name" if msg.startswith("dataset name") else "path")
            self.app.call_from_thread(self._failed, e, field)
            return
        except OSError as e:
            self.app.call_from_thread(self._failed, e, "path")
            return
        self.app.call_from_thread(self._done, report)

    def _failed(self, e: BaseException, field: str) -> None:
        self.query_one("#import", Button).disabled = False
        msg = e.one_line() if hasattr(e, "one_line") else str(e)  # type: ignore[attr-defined]
        hint = getattr(e, "hint", None)
        self._say(Text(f"{field.capitalize()}: {msg}" + (f"\n{hint}" if hint else ""), style="bold red"), field)

    def _done(self, report: dict) -> None:
        self.report = report
        self.query_one("#import", Button).disabled = False
        if report.get("stored"):
            self.imported = report["name"]
        self._say(report_text(report), None if report.get("stored") else "path")

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(self.imported)
