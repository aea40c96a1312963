"""LogView keeps the newest line in view while following, whatever changes its height."""

import pytest
from textual.app import App, ComposeResult
from textual.widgets import Static

from tui.widgets.logview import LogView


class _Shrinking(App):
    def compose(self) -> ComposeResult:
        yield Static("one line", id="above")
        yield LogView(id="log")


async def _fill(app: App, pilot) -> LogView:
    """50 lines into the log (more than fit), laid out."""
    log = app.query_one(LogView)
    log.append([f"line {i}" for i in range(50)])
    await pilot.pause()
    return log


async def _shrink(app: App, pilot) -> None:
    """Three lines above the log instead of one, as the dashboard's summary grows after a poll."""
    app.query_one("#above", Static).update("two\nlines\nnow")
    await pilot.pause()
    await pilot.pause()


@pytest.mark.asyncio
async def test_following_log_keeps_its_last_line_in_view_when_it_gets_shorter():
    app = _Shrinking()
    async with app.run_test(size=(60, 20)) as pilot:
        log = await _fill(app, pilot)
        assert log.scroll_y == log.max_scroll_y > 0
        await _shrink(app, pilot)
        assert log.max_scroll_y > 0
        assert log.scroll_y == log.max_scroll_y, "the newest line scrolled out of view"


@pytest.mark.asyncio
async def test_paused_log_stays_where_it_is_when_it_gets_shorter():
    app = _Shrinking()
    async with app.run_test(size=(60, 20)) as pilot:
        log = await _fill(app, pilot)
        log.follow = False
        log.scroll_to(y=5, animate=False)
        await pilot.pause()
        await _shrink(app, pilot)
        assert log.scroll_y == 5
