"""Textual's Footer, recomposed only when the keys it shows change.

Textual rebuilds the footer (one widget per key, each styled) on every bindings signal: each
focus change and action refresh. Opening History fired it seven times, which was over half
of the time the screen took to open. Here a signal that leaves the shown keys unchanged
does nothing.
"""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer


class KeysFooter(Footer):
    """Compact (one space between keys), so a screen's keys and `^p palette` fit 80 columns;
    the other keys are in `?` and the palette."""

    DEFAULT_CSS = """
    KeysFooter.-compact FooterLabel { margin-right: 1; }
    """

    _shown: tuple | None = None

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("compact", True)
        super().__init__(*args, **kwargs)

    def _signature(self, screen: Screen) -> tuple:
        return tuple((b.key, b.description, b.action, enabled, tooltip)
                     for (_, b, enabled, tooltip) in screen.active_bindings.values() if b.show)

    def bindings_changed(self, screen: Screen) -> None:
        if not screen.app.app_focus or not (self.is_attached and screen is self.screen):
            return super().bindings_changed(screen)
        shown = self._signature(screen)
        if shown == self._shown and self._bindings_ready:
            return
        self._shown = shown
        super().bindings_changed(screen)
