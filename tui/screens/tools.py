"""Small modal screens the other screens share: a one-line prompt, and the output of a
voxtune CLI command run as a subprocess.

Exporting and transcribing load torch and a model; the TUI process must not (tests/unit/
test_light_imports.py), so the screens run the very CLI command a user would type
(`voxtune --home WS runs export ID`, `voxtune transcribe --run ID FILE`) in a child process
from a thread worker and show its output as it comes.
"""

from __future__ import annotations

import shlex
import subprocess

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Log, Static

from engine.workspace import Workspace


class PromptScreen(ModalScreen[str | None]):
    """One line of text; enter gives it, escape gives None."""

    HELP_TITLE = "Prompt"
    DEFAULT_CSS = """
    PromptScreen { align: center middle; }
    PromptScreen #prompt-box { width: 72; max-width: 100%; height: auto; border: round $primary;
                               padding: 0 1; background: $surface; }
    PromptScreen #prompt-hint { color: $text-muted; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, placeholder: str = "", value: str = "", hint: str = "enter: go · esc: cancel") -> None:
        super().__init__()
        self.question, self.placeholder, self.value, self.hint = question, placeholder, value, hint

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt-box"):
            yield Static(self.question, id="prompt-question")
            yield Input(self.value, placeholder=self.placeholder, id="prompt-input", compact=True)
            yield Static(self.hint, id="prompt-hint")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)


def cli_argv(ws: Workspace, *args: str) -> list[str]:
    """The voxtune command line for `args` in workspace `ws` (this interpreter's install)."""
    from engine.procs import python_module

    return python_module("tui", "--home", str(ws.home), *args)  # -P: voxtune's code, whatever the cwd


class CommandScreen(ModalScreen[int | None]):
    """Runs one voxtune CLI command in a child process and shows its output (stdout and
    stderr, as they come). Escape closes; a command still running goes on in the background."""

    HELP_TITLE = "Command"
    DEFAULT_CSS = """
    CommandScreen { align: center middle; }
    CommandScreen #command-box { width: 100%; height: 100%; border: round $primary; background: $surface; }
    CommandScreen #command-title { height: auto; padding: 0 1; text-style: bold; }
    CommandScreen #command-status { height: 1; padding: 0 1; color: $text-muted; }
    CommandScreen Log { height: 1fr; }
    """
    BINDINGS = [Binding("escape", "close", "Close")]

    def __init__(self, title: str, ws: Workspace, *args: str) -> None:
        super().__init__()
        self.title_text = title
        self.argv = cli_argv(ws, *args)
        self.shown = "voxtune " + shlex.join(args)
        self.returncode: int | None = None
        self.lines: list[str] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="command-box"):
            yield Static(f"{self.title_text}: {self.shown}", id="command-title")
            yield Log(id="command-log", highlight=False)
            yield Static("running… (esc closes; the command goes on)", id="command-status")

    def on_mount(self) -> None:
        self._run()

    @work(thread=True, exclusive=True, group="command", exit_on_error=False)
    def _run(self) -> None:
        from engine.procs import safe_env

        env = safe_env(PYTHONUNBUFFERED="1")
        try:
            proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    stdin=subprocess.DEVNULL, env=env, bufsize=1)
        except OSError as e:
            self.app.call_from_thread(self._finished, None, f"could not start voxtune: {e}")
            return
        assert proc.stdout is not None
        for line in proc.stdout:
            self.app.call_from_thread(self._line, line.rstrip("\n"))
        self.app.call_from_thread(self._finished, proc.wait(), None)

    def _line(self, line: str) -> None:
        self.lines.append(line)
        if self.is_attached:
            self.query_one(Log).write_line(line)

    def _finished(self, code: int | None, problem: str | None) -> None:
        self.returncode = code if code is not None else -1
        if not self.is_attached:
            return
        if problem:
            self.query_one(Log).write_line(problem)
        text = "done" if code == 0 else f"failed (exit {self.returncode})"
        self.query_one("#command-status", Static).update(f"{text} · esc closes")

    def action_close(self) -> None:
        self.dismiss(self.returncode)


def export_run(screen, run_id: str) -> None:
    """`voxtune runs export ID` (the run's best checkpoint as a Hugging Face folder)."""
    screen.app.push_screen(CommandScreen(f"Export {run_id}", screen.app.workspace, "runs", "export", run_id))


def transcribe_with_run(screen, run_id: str) -> None:
    """Ask for audio files, then `voxtune transcribe --run ID FILE…`."""

    def go(text: str | None) -> None:
        if text:
            files = shlex.split(text)
            screen.app.push_screen(CommandScreen(f"Transcribe with {run_id}", screen.app.workspace,
                                                 "transcribe", "--run", run_id, *files))

    screen.app.push_screen(PromptScreen(f"Transcribe with {run_id}'s model: audio file(s)",
                                        placeholder="~/recordings/meeting.m4a (several: separated by spaces)"), go)
