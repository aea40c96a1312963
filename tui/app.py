"""The Textual app: four screens (Runs, Models, Datasets, History) as app modes.

Owned by the TUI foundation; each screen lives in tui/screens/<name>.py.
"""

from __future__ import annotations

from textual.app import App
from textual.binding import Binding

from engine.workspace import Workspace, open_workspace


class VoxtuneApp(App):
    TITLE = "voxtune"
    CSS_PATH = "app.tcss"
    BINDINGS = [
        Binding("1", "switch_mode('runs')", "Runs"),
        Binding("2", "switch_mode('models')", "Models"),
        Binding("3", "switch_mode('datasets')", "Datasets"),
        Binding("4", "switch_mode('history')", "History"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, workspace: Workspace | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.workspace = workspace or open_workspace()

    def get_modes(self):
        from tui.screens.datasets import DatasetsScreen
        from tui.screens.history import HistoryScreen
        from tui.screens.models import ModelsScreen
        from tui.screens.runs import RunsScreen

        return {"runs": RunsScreen, "models": ModelsScreen, "datasets": DatasetsScreen, "history": HistoryScreen}

    def on_mount(self) -> None:
        for name, screen in self.get_modes().items():
            self.add_mode(name, screen)
        self.switch_mode("runs")


def run_app(workspace: Workspace) -> int:
    VoxtuneApp(workspace).run()
    return 0
