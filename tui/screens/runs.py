"""(in progress: being written by its owner, see docs/ARCHITECTURE.md)"""

from textual.screen import Screen
from textual.widgets import Footer, Header, Static


class RunsScreen(Screen):
    def compose(self):
        yield Header()
        yield Static("runs")
        yield Footer()
