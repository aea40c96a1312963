"""The Textual app: four screens (Runs, Models, Datasets, History) as app modes.

Global keys: 1-4 switch screens, n opens the new-run form, ? shows the keys of the
current screen (f1 too, for when a text field has the focus), ctrl+p the command palette, which offers every key-bound action of the
current screen by name (generated from the live bindings, so nothing is palette-only or
key-only). Each screen lives in tui/screens/<name>.py; this module stays import-light.
"""

from __future__ import annotations

from functools import partial
from typing import Iterable

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from engine.workspace import Workspace, open_workspace

SCREENS = Binding.Group("Screens", compact=True)


class VoxtuneApp(App):
    TITLE = "voxtune"
    CSS_PATH = "app.tcss"
    BINDINGS = [
        Binding("1", "go('runs')", "Runs", group=SCREENS),
        Binding("2", "go('models')", "Models", group=SCREENS),
        Binding("3", "go('datasets')", "Datasets", group=SCREENS),
        Binding("4", "go('history')", "History", group=SCREENS),
        Binding("n", "new_run", "New run"),
        Binding("question_mark", "help", "Keys", key_display="?"),
        Binding("f1", "help", "Keys", show=False),  # reachable while typing in a form field
        Binding("q", "quit", "Quit", show=False),
    ]

    def __init__(self, workspace: Workspace | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.workspace = workspace or open_workspace()
        self.sub_title = str(self.workspace.home)

    def get_modes(self):
        from tui.screens.datasets import DatasetsScreen
        from tui.screens.history import HistoryScreen
        from tui.screens.models import ModelsScreen
        from tui.screens.runs import RunsScreen

        return {"runs": RunsScreen, "models": ModelsScreen, "datasets": DatasetsScreen, "history": HistoryScreen}

    # -- the one error handler of the TUI ------------------------------------------------
    def show_error(self, error: BaseException, title: str = "Not done") -> None:
        """A VoxtuneError as a notification (its one line, then the hint); anything else as
        an internal error naming its type, so a bug is never mistaken for bad input."""
        from engine.errors import VoxtuneError

        if isinstance(error, VoxtuneError):
            text = error.one_line() + (f"\n{error.hint}" if error.hint else "")
        else:
            text = f"internal error: {type(error).__name__}: {error}"
        self.notify(text, title=title, severity="error", timeout=10)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Workers run with exit_on_error=False; one whose error nobody handled is shown here."""
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.show_error(event.worker.error)

    def on_mount(self) -> None:
        for name, screen in self.get_modes().items():
            self.add_mode(name, screen)
        self.switch_mode("runs")
        self._warm_history()

    def _warm_history(self) -> None:
        """Summarise the runs for History in a thread while the user looks at Runs."""
        from tui.screens.history import load_summaries

        self.run_worker(lambda: load_summaries(self.workspace), thread=True, group="warm", exit_on_error=False)

    # -- screens ----------------------------------------------------------------------
    async def action_go(self, mode: str) -> None:
        """1-4: that screen itself, from anywhere: a dashboard, form or detail opened on top of
        it is closed (pressing 1 in a run's dashboard shows Runs; 2 then 1 shows Runs, not the
        dashboard left open there)."""
        if self.current_mode != mode:
            await self.switch_mode(mode)
        while len(self.screen_stack) > 1:
            await self.pop_screen()

    # -- new run ----------------------------------------------------------------------
    def open_new_run(self, model: str | None = None, clone_of: str | None = None, method: str | None = None,
                     gpu=None) -> None:
        """The new-run form, optionally for a model and GPU (Models screen) or as a copy of a run."""
        from tui.screens.new_run import NewRunScreen

        async def queued(run_id: str | None) -> None:
            if run_id:  # home, with the cursor on the new run
                await self.action_go("runs")
                select = getattr(self.screen, "select_run", None)
                if select is not None:
                    select(run_id)

        self.push_screen(NewRunScreen(model=model, clone_of=clone_of, method=method, gpu=gpu), queued)

    def action_new_run(self) -> None:
        from tui.screens.new_run import NewRunScreen

        if isinstance(self.screen, NewRunScreen):
            return
        self.open_new_run()

    # -- help -------------------------------------------------------------------------
    def action_help(self) -> None:
        from tui.screens.help import HelpScreen, keys_of

        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss()
            return
        title = getattr(self.screen, "HELP_TITLE", None) or type(self.screen).__name__.removesuffix("Screen")
        self.push_screen(HelpScreen(title, keys_of(self.screen)))

    # -- command palette ----------------------------------------------------------------
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """voxtune's actions for this screen first, each once (the screen's and the app's own
        key bindings; a focused widget's cursor keys are not actions), then Textual's Theme,
        Screenshot and Quit. Textual's own Keys panel and Maximize are left out: `?` is the
        keys panel here."""
        from tui.screens.help import voxtune_bindings

        seen = {"quit"}
        for active, _where in voxtune_bindings(screen):
            binding = active.binding
            if not active.enabled:
                continue
            name = binding.description
            if binding.action.startswith("go("):
                name = f"Go to {binding.description}"
            if name.lower() in seen:
                continue
            seen.add(name.lower())
            shown_key = binding.key_display or self.get_key_display(binding)
            yield SystemCommand(name, f"key: {shown_key}", partial(self.run_action, binding.action, active.node))
        for command in super().get_system_commands(screen):
            if command.title in ("Theme", "Screenshot", "Quit"):
                yield command


def run_app(workspace: Workspace) -> int:
    VoxtuneApp(workspace).run()
    return 0
