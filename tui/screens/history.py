"""(in progress: being written by its owner, see docs/ARCHITECTURE.md)"""

from textual.screen import Screen
from textual.widgets import Footer, Header, Static


class HistoryScreen(Screen):
    def compose(self):
        yield Header()
        yield Static("history")
        yield Footer()
