"""A virtual table for thousands of runs: renders only the visible rows.

Textual's DataTable measures every cell whenever rows change, which takes seconds for
10,000 runs x 20 columns; History re-sorts and re-filters on every key press. This table
keeps a list of row dicts and formats a row only when it is drawn, so sorting and
filtering cost a list operation. A sticky header row; click a heading to sort by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.events import Click
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip


@dataclass
class Column:
    key: str
    heading: str
    width: int


class RunList(ScrollView, can_focus=True):
    DEFAULT_CSS = """
    RunList { height: 1fr; }
    RunList > .run-list--header { text-style: bold; background: $panel; }
    RunList > .run-list--cursor { background: $block-cursor-background; color: $block-cursor-foreground; }
    RunList:blur > .run-list--cursor { background: $block-cursor-blurred-background; }
    RunList > .run-list--marked { color: $accent; text-style: bold; }
    """
    COMPONENT_CLASSES = {"run-list--header", "run-list--cursor", "run-list--marked"}
    BINDINGS = [
        Binding("up", "move(-1)", "Up", show=False),
        Binding("down", "move(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "First", show=False),
        Binding("end", "jump(-1)", "Last", show=False),
        Binding("left", "scroll_left", "Left", show=False),
        Binding("right", "scroll_right", "Right", show=False),
        Binding("enter", "select", "Open", show=False),
    ]

    cursor: reactive[int] = reactive(0, always_update=True)

    class Selected(Message):
        def __init__(self, row: dict) -> None:
            super().__init__()
            self.row = row

    class Highlighted(Message):
        """The cursor is on `row` (None: the list is empty)."""

        def __init__(self, row: dict | None) -> None:
            super().__init__()
            self.row = row

    class HeaderClicked(Message):
        def __init__(self, key: str) -> None:
            super().__init__()
            self.key = key

    def __init__(self, columns: list[Column], format_cell: Callable[[str, dict], str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.columns = columns
        self.format_cell = format_cell
        self.rows: list[dict] = []
        self.is_marked: Callable[[dict], bool] = lambda row: False

    # -- data ---------------------------------------------------------------------------
    @property
    def row_count(self) -> int:
        return len(self.rows)

    @property
    def total_width(self) -> int:
        return sum(c.width + 2 for c in self.columns)

    def set_rows(self, rows: list[dict], keep_id: str | None = None) -> None:
        self.rows = rows
        self.virtual_size = Size(self.total_width, len(rows) + 1)
        idx = next((i for i, r in enumerate(rows) if r.get("id") == keep_id), 0) if keep_id else 0
        self.cursor = min(idx, max(0, len(rows) - 1))
        self._show_cursor()
        self.refresh()

    def current(self) -> dict | None:
        return self.rows[self.cursor] if 0 <= self.cursor < len(self.rows) else None

    # -- drawing ----------------------------------------------------------------------------
    def _cells(self, values: list[str], style: Style) -> Strip:
        text = Text(no_wrap=True, overflow="crop", style=style)
        for col, value in zip(self.columns, values):
            cell = value if len(value) <= col.width else value[: col.width - 1] + "…"
            text.append(" " + cell.ljust(col.width) + " ")
        return Strip(list(text.render(self.app.console)), text.cell_len)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        base = self.rich_style
        if y == 0:
            strip = self._cells([c.heading for c in self.columns], base + self.get_component_rich_style("run-list--header"))
        else:
            index = scroll_y + y - 1
            if index >= len(self.rows):
                return Strip.blank(width, base)
            row = self.rows[index]
            style = base
            if self.is_marked(row):
                style += self.get_component_rich_style("run-list--marked")
            if index == self.cursor:
                style += self.get_component_rich_style("run-list--cursor")
            strip = self._cells([self.format_cell(c.key, row) for c in self.columns], style)
        return strip.crop_extend(scroll_x, scroll_x + width, base)

    # -- cursor and keys ------------------------------------------------------------------------
    def watch_cursor(self) -> None:
        self.refresh()
        self.post_message(self.Highlighted(self.current()))

    def _show_cursor(self) -> None:
        # line 0 is the header: row i sits on virtual line i + 1
        visible = max(1, self.size.height - 1)
        top = self.scroll_offset.y
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + visible:
            self.scroll_to(y=self.cursor - visible + 1, animate=False)

    def action_move(self, delta: int) -> None:
        if self.rows:
            self.cursor = max(0, min(len(self.rows) - 1, self.cursor + delta))
            self._show_cursor()

    def action_page(self, direction: int) -> None:
        self.action_move(direction * max(1, self.size.height - 2))

    def action_jump(self, where: int) -> None:
        if self.rows:
            self.cursor = where % len(self.rows)
            self._show_cursor()

    def action_select(self) -> None:
        row = self.current()
        if row is not None:
            self.post_message(self.Selected(row))

    def on_click(self, event: Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        if offset.y == 0:
            x, left = offset.x + self.scroll_offset.x, 0
            for col in self.columns:
                if left <= x < left + col.width + 2:
                    self.post_message(self.HeaderClicked(col.key))
                    return
                left += col.width + 2
            return
        index = self.scroll_offset.y + offset.y - 1
        if 0 <= index < len(self.rows):
            if index == self.cursor and event.chain >= 2:
                self.action_select()
            self.cursor = index
