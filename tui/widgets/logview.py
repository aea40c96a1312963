"""The run's log: follows the tail, keeps a bounded window, searches, pauses following.

Textual's Log widget stores plain strings and renders only visible lines, so 5,000 lines
a second stay cheap; this adds a line cap, search highlighting and a follow switch. The
bytes come from the screen's tailer (by byte offset), never from reading the whole file.
"""

from __future__ import annotations

import re
from collections import deque

from rich.highlighter import Highlighter
from rich.text import Text
from textual.widgets import Log

MAX_LINES = 5000
_ALERT = re.compile(r"(Traceback|Error\b|ERROR|CUDA out of memory|OutOfMemory|OOM|Killed|nan\b)")


class _LogHighlighter(Highlighter):
    def __init__(self) -> None:
        self.term: str = ""

    def highlight(self, text: Text) -> None:
        text.highlight_regex(_ALERT, "bold red")
        if self.term:
            text.highlight_regex(re.compile(re.escape(self.term), re.IGNORECASE), "black on yellow")


class LogView(Log):
    """`follow` False keeps the view still while lines keep arriving."""

    def __init__(self, max_lines: int = MAX_LINES, **kwargs) -> None:
        super().__init__(highlight=True, max_lines=max_lines, auto_scroll=True, **kwargs)
        self.highlighter = _LogHighlighter()
        self.match_line: int | None = None
        self.total_lines = 0  # lines received, including those pruned from the window
        # while paused, new lines wait here so the view (and its line numbers) stand still
        self.pending: deque[str] = deque(maxlen=max_lines)
        self.pending_count = 0

    @property
    def follow(self) -> bool:
        return self.auto_scroll

    @follow.setter
    def follow(self, on: bool) -> None:
        self.auto_scroll = on
        if on:
            if self.pending:
                self.write_lines(list(self.pending))
            self.pending.clear()
            self.pending_count = 0
            self.match_line = None
            self.scroll_end(animate=False)

    def on_resize(self) -> None:
        """Keep the tail in view when the widget's own height changes while following.

        The summary above the log grows from one line to two after the first poll; without
        this the view kept the scroll offset of the taller log and hid the newest line.
        """
        if self.auto_scroll:
            self.call_after_refresh(self._keep_tail)

    def _keep_tail(self) -> None:
        if self.auto_scroll:  # following may have been paused since the resize
            self.scroll_end(animate=False, immediate=True, x_axis=False)  # already after the layout

    @property
    def term(self) -> str:
        return self.highlighter.term

    def append(self, lines: list[str]) -> None:
        if not lines:
            return
        self.total_lines += len(lines)
        if self.auto_scroll:
            self.write_lines(lines)
        else:
            self.pending.extend(lines)
            self.pending_count += len(lines)

    def set_term(self, term: str) -> None:
        self.highlighter.term = term
        self._render_line_cache.clear()
        self.match_line = None
        self.refresh()

    def find(self, forward: bool = False) -> int | None:
        """Move to the previous (or next) line containing the term; the newest match first.

        Searching pauses following, or the match would scroll away at once.
        """
        term = self.term.lower()
        if not term:
            return None
        lines = self.lines
        n = len(lines)
        start = self.match_line if self.match_line is not None and self.match_line < n else n
        order = range(start + 1, n) if forward else range(start - 1, -1, -1)
        for y in order:
            if term in lines[y].lower():
                self.match_line = y
                self.auto_scroll = False
                self.scroll_to(y=max(0, y - self.size.height // 2), animate=False)
                return y
        return None
