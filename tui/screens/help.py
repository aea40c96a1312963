"""`?`: the keys of the screen you are on, read from its live bindings so it never drifts."""

from __future__ import annotations

from typing import Any

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from rich.table import Table


# Textual's own screen keys (tab / shift+tab focus, copy): listed after voxtune's, not in the palette
TEXTUAL_ACTIONS = {b.action for b in Screen.BINDINGS if isinstance(b, Binding)}
TEXTUAL_KEYS = {(b.key, b.action) for b in App.BINDINGS if isinstance(b, Binding)}  # ctrl+q: Textual's quit
# Textual's ctrl+p binding ("palette"): keys_of lists the palette once, in its own words, and
# the palette does not offer itself
PALETTE_ACTION = "command_palette"
PALETTE_ROW = ("ctrl+p", "Command palette (every action)", "app")  # one line in the 64-wide box


def voxtune_bindings(screen: Screen) -> list[tuple[Any, str]]:
    """(ActiveBinding, where) for the bindings that are voxtune's: the screen's own, then the
    app's (screens, new run, keys). Widget bindings (a table's cursor keys) and Textual's
    system keys are not: `keys_of` lists those after these."""
    app = screen.app
    out: list[tuple[Any, str]] = []
    for active in screen.active_bindings.values():
        b = active.binding
        if not b.description or b.system or active.node not in (screen, app) or b.action in TEXTUAL_ACTIONS \
                or (b.key, b.action) in TEXTUAL_KEYS or b.action == PALETTE_ACTION:
            continue
        out.append((active, "screen" if active.node is screen else "app"))
    # the second binding of a key (p: Pause / Resume queue) is not in active_bindings' map
    for key, b in screen._bindings:
        if not b.description or b.system or b.action in TEXTUAL_ACTIONS or any(a.binding is b for a, _ in out):
            continue
        state = app._check_action_state(b.action, screen)
        if state is not False and all(a.binding.key != key or a.binding.action == b.action for a, _ in out):
            from textual.binding import ActiveBinding

            out.append((ActiveBinding(screen, b, bool(state), b.tooltip), "screen"))
    out.sort(key=lambda a: 0 if a[1] == "screen" else 1)
    return out


def keys_of(screen: Screen) -> list[tuple[str, str, str]]:
    """(key, what it does, where) for every enabled binding of `screen`: voxtune's keys for
    this screen first, then the app's, then the focused widget's (cursor keys and the like)."""
    app = screen.app
    rows: list[tuple[str, str, str]] = []
    seen: set[tuple[str, str]] = set()

    def add(binding: Binding, where: str) -> None:
        label = (binding.key_display or app.get_key_display(binding)).strip()
        if (label, binding.description) in seen:
            return
        seen.add((label, binding.description))
        rows.append((label, binding.description, where))

    for active, where in voxtune_bindings(screen):
        add(active.binding, where)
    rows.append(PALETTE_ROW)
    for active in screen.active_bindings.values():
        b = active.binding
        textual = b.action in TEXTUAL_ACTIONS or (b.key, b.action) in TEXTUAL_KEYS
        if b.description and not b.system and (active.node not in (screen, app) or textual):
            add(b, "textual" if textual else type(active.node).__name__)
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
