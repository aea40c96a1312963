"""`?`: the keys of the screen you are on, read from its live bindings so it never drifts."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from rich.table import Table


def keys_of(screen: Screen) -> list[tuple[str, str, str]]:
    """(key, what it does, where) for every enabled binding of `screen`, widget keys first."""
    app = screen.app
    rows: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for active in screen.active_bindings.values():
        binding = active.binding
        if not binding.description or binding.system:
            continue
        label = (binding.key_display or app.get_key_display(binding)).strip()
        desc = binding.description
        if (label, desc) in seen:
            continue
        seen.add((label, desc))  # type: ignore[arg-type]
        node = active.node
        where = "app" if node is app else ("screen" if node is screen else type(node).__name__)
        rows.append((label, desc, where))
    order = {"screen": 1, "app": 2}
    rows.sort(key=lambda r: order.get(r[2], 0))
    rows.append(("ctrl+p", "Command palette: every action by name", "app"))
    return rows


class HelpScreen(ModalScreen):
    """Keys of the screen underneath; any of escape, ? or q closes it."""

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("question_mark", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def __init__(self, title: str, rows: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self.title_text = title
        self.rows = rows

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        table.add_column(style="dim")
        for key, desc, where in self.rows:
            table.add_row(key, desc, where)
        with Vertical(id="help-box"):
            yield Static(f"Keys: {self.title_text}", id="help-title")
            with VerticalScroll(id="help-scroll"):
                yield Static(table, id="help-keys")
            yield Static("escape closes", id="help-hint")

    def action_close(self) -> None:
        self.dismiss()
