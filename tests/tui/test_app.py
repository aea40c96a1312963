"""The app shell: screens on 1-4, the new-run form from anywhere, `?` keys, the command
palette offering every action, the engine-down notice, NO_COLOR, resizing, and a UI that
keeps answering keys while a poll is stuck on a slow disk."""

from __future__ import annotations

import os
import re
import threading

import pytest
from textual.app import App
from textual.widgets import Static

from engine.store import Store
from tui.app import VoxtuneApp
from tui.poller import Poller
from tui.screens.help import HelpScreen
from tui.screens.new_run import NewRunScreen
from tui.screens.runs import RunsScreen
from tui_helpers import sample_workspace, wait_for

SIZE = (80, 24)


def help_text(app) -> str:
    assert isinstance(app.screen, HelpScreen)
    return "\n".join(" ".join(row) for row in app.screen.rows)


def rows_loaded(app, n: int) -> bool:
    return app.screen.query_one("#runs-table").row_count == n


@pytest.mark.asyncio
async def test_number_keys_switch_screens_and_n_opens_the_form_anywhere(ws):
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="home")
        names = {}
        for key in "2341":
            await pilot.press(key)
            await pilot.pause()
            names[key] = type(app.screen).__name__
        assert names == {"2": "ModelsScreen", "3": "DatasetsScreen", "4": "HistoryScreen", "1": "RunsScreen"}
        for key in "31":
            await pilot.press(key)
            await pilot.pause()
            await pilot.press("n")
            await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen), what="form")
            await pilot.press("escape")
            await wait_for(pilot, lambda: not isinstance(app.screen, NewRunScreen), what="form closed")


@pytest.mark.asyncio
async def test_question_mark_shows_the_keys_of_the_current_screen(ws):
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen))
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        text = help_text(app)
        for expected in ("Cancel", "Retry", "Resume", "Clone", "Move up", "Move down", "Pause queue",
                         "Start engine", "New run", "Models", "ctrl+p"):
            assert expected in text, expected
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="help closed")

        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen))
        await pilot.press("f1")  # `?` would be typed into the focused field
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        text = help_text(app)
        assert "Queue run" in text and "Cancel" in text and "Start engine" not in text


@pytest.mark.asyncio
async def test_command_palette_offers_every_screen_action(ws):
    sample_workspace(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: rows_loaded(app, 5))
        titles = {c.title for c in app.get_system_commands(app.screen)}
        for expected in ("Cancel", "Retry", "Resume", "Clone", "Move up", "Move down", "Pause queue",
                         "Start engine", "New run", "Keys", "Go to Models", "Go to History", "Quit"):
            assert expected in titles, expected
        # and they run: pause the queue from the palette
        await pilot.press("ctrl+p")
        await pilot.pause(0.3)
        await pilot.press(*"pause queue")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_for(pilot, lambda: Store(ws).get_meta("queue_paused") is True, what="paused via palette")


@pytest.mark.asyncio
async def test_engine_down_is_said_with_the_key_to_start_it(ws):
    sample_workspace(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: rows_loaded(app, 5))
        bar = app.screen.query_one("#engine-bar")
        assert "engine ○ stopped · press s to start it" in str(bar.render())
        assert bar.has_class("-down")
        said = [n.message for n in app._notifications]
        assert any("engine is not running and 3 run(s) wait" in m and "Press s" in m for m in said), said


@pytest.mark.asyncio
async def test_a_queue_paused_by_recovery_says_why(ws):
    from engine import queue

    sample_workspace(ws)
    queue.pause(ws, reason="paused after a crash: 1 run interrupted")
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: rows_loaded(app, 5))
        assert "PAUSED" in str(app.screen.query_one("#engine-bar").render())
        assert any("paused after a crash" in n.message and "Press p" in n.message for n in app._notifications)


@pytest.mark.asyncio
async def test_usable_after_resizing(ws):
    sample_workspace(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: rows_loaded(app, 5))
        for size in ((60, 16), (132, 40), SIZE):
            await pilot.resize_terminal(*size)
            await pilot.pause(0.2)
            table = app.screen.query_one("#runs-table")
            detail = app.screen.query_one("#run-detail")
            assert table.region.height >= 3 and table.region.width == size[0]
            assert detail.region.bottom <= size[1] - 1  # the footer stays visible
            await pilot.press("j")
        assert table.cursor_row == 3


@pytest.mark.asyncio
async def test_no_color_is_respected(ws, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    sample_workspace(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: rows_loaded(app, 5))
        assert app.no_color
        svg = app.export_screenshot()
    colours = {c.lower() for c in re.findall(r"fill: (#[0-9a-fA-F]{6})", svg)}

    def grey(c: str) -> bool:  # the SVG theme's own foreground is a near-grey
        rgb = [int(c[i:i + 2], 16) for i in (1, 3, 5)]
        return max(rgb) - min(rgb) <= 8

    assert len(colours) > 2 and all(grey(c) for c in colours), sorted(c for c in colours if not grey(c))


class _PollApp(App):
    def __init__(self, fetch, on_error=None):
        super().__init__()
        self.fetch = fetch
        self.on_error = on_error
        self.applied = []
        self.keys = 0

    def compose(self):
        yield Static("x")

    def on_mount(self):
        self.poller = Poller(self, self.fetch, self.applied.append, interval=0.05, on_error=self.on_error).start()

    def on_key(self, event):
        self.keys += 1


@pytest.mark.asyncio
async def test_a_stuck_poll_never_blocks_the_keys():
    release = threading.Event()
    calls = []

    def fetch():
        calls.append(1)
        if len(calls) == 2:
            release.wait(10)  # a disk that hangs on the second read
        return len(calls)

    app = _PollApp(fetch)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: len(calls) == 2, what="second fetch")
        for _ in range(5):
            await pilot.press("x")
        assert app.keys == 5 and app.applied == [1] and len(calls) == 2  # no pile-up of threads
        release.set()
        await app.poller.refresh()
        assert app.applied[:2] == [1, 2]


@pytest.mark.asyncio
async def test_poller_reports_errors_and_keeps_going():
    n = {"calls": 0}
    errors = []

    def fetch():
        n["calls"] += 1
        if n["calls"] == 1:
            raise OSError("disk gone")
        return n["calls"]

    app = _PollApp(fetch, on_error=errors.append)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.applied, what="recovery")
        assert [str(e) for e in errors] == ["disk gone"]


def test_snapshot_help(ws, snap_compare):
    app = VoxtuneApp(ws)

    async def ready(pilot):
        app.sub_title = "~/voxtune"
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen))
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.pause(0.1)

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_snapshot_home_no_color(ws, snap_compare, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    sample_workspace(ws)
    app = VoxtuneApp(ws)

    async def ready(pilot):
        app.sub_title = "~/voxtune"
        await wait_for(pilot, lambda: rows_loaded(app, 5), what="rows")
        await wait_for(pilot, lambda: len(app._notifications) > 0, what="engine-stopped toast")
        app.clear_notifications()  # the toast is tested on its own
        await pilot.pause(0.1)

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


@pytest.mark.asyncio
async def test_palette_has_every_voxtune_action_once_and_no_widget_internals(ws):
    from tui.screens.datasets import DatasetsScreen
    from tui.screens.help import keys_of

    sample_workspace(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: rows_loaded(app, 5))
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert len(titles) == len({t.lower() for t in titles}), titles  # each once
        for expected in ("Export", "Transcribe", "Delete", "Pause queue", "Theme", "Screenshot", "Quit"):
            assert expected in titles, expected
        # no widget internals (a table's cursor keys) and not Textual's own keys panel
        for internal in ("Cursor up", "Cursor down", "Page up", "Up", "Down", "Select", "Maximize"):
            assert internal not in titles, internal
        assert titles.count("Keys") == 1
        # paused, the queue is resumed (p offers what applies)
        await pilot.press("p")
        await wait_for(pilot, lambda: "Resume queue" in [c.title for c in app.get_system_commands(app.screen)],
                       what="resume queue offered")
        assert "Pause queue" not in [c.title for c in app.get_system_commands(app.screen)]
        await pilot.press("p")
        await wait_for(pilot, lambda: Store(ws).get_meta("queue_paused") is False, what="resumed")

        # help: voxtune's keys for the screen first, the table's cursor keys last
        rows = keys_of(app.screen)
        wheres = [w for _, _, w in rows]
        assert wheres[0] == "screen" and rows[0][1] == "Cancel"
        first_widget = next(i for i, w in enumerate(wheres) if w not in ("screen", "app"))
        assert all(w not in ("screen", "app") for w in wheres[first_widget:])

        await pilot.press("3")
        await wait_for(pilot, lambda: isinstance(app.screen, DatasetsScreen))
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for expected in ("Import", "Split", "Pin samples", "Go to Runs"):
            assert expected in titles, expected
        assert len(titles) == len(set(titles))


@pytest.mark.asyncio
async def test_screen_keys_from_a_dashboard_and_the_cursor_after_queueing(ws):
    from engine import queue
    from engine.datasets import ensure_demo
    from tui.screens.dashboard import DashboardScreen
    from tui.screens.history import HistoryScreen
    from tui.screens.models import ModelsScreen
    from tui.widgets.run_list import RunList

    sample_workspace(ws)
    ensure_demo(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: rows_loaded(app, 5))
        await pilot.press("enter")  # the running run's dashboard
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), what="dashboard")
        await pilot.press("1")  # 1 inside a dashboard: Runs
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="1 from the dashboard")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))
        await pilot.press("2")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen))
        await pilot.press("1")  # 2 then 1: Runs, not the dashboard left open
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), what="2 then 1")

        # n in a dashboard is the search's next match, never a new run
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))
        await pilot.press("n")
        await pilot.pause(0.2)
        assert isinstance(app.screen, DashboardScreen)
        assert any("/ searches the log" in n.message for n in app._notifications)
        await pilot.press("escape")

        # esc leaves the History filter: the next keys act on the list again
        await pilot.press("4")
        await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen) and app.screen.loaded)
        await pilot.press("slash", *"lora", "escape")
        assert isinstance(app.focused, RunList) and app.screen.filter_text == "lora"
        await pilot.press("s")  # sorts, is not typed into the filter
        assert app.screen.sort_key == "wer" and app.screen.filter_text == "lora"

        # after queueing from the form, Runs shows the new run under the cursor
        await pilot.press("1", "n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen))
        run_id = queue.add(ws, model="whisper-small", method="lora", dataset="demo", max_steps=5)
        app.screen.dismiss(run_id)
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.selected_run() is not None
                       and app.screen.selected_run()["id"] == run_id, what="cursor on the new run")


@pytest.mark.asyncio
async def test_help_lists_the_command_palette_once_on_one_line(ws):
    """Textual's own ctrl+p binding ("palette") is not listed beside voxtune's row for it, and
    the palette does not offer itself."""
    from tui.screens.help import PALETTE_ROW, keys_of

    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen))
        rows = keys_of(app.screen)
        assert [r for r in rows if r[0] in ("^p", "ctrl+p")] == [PALETTE_ROW]
        assert "palette" not in [c.title for c in app.get_system_commands(app.screen)]
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.pause(0.1)
        from rich.console import Console

        keys = app.screen.query_one("#help-keys")
        console = Console(width=keys.content_region.width, record=True, file=open(os.devnull, "w"))
        console.print(keys.content)  # the rich Table, at the width the box gives it
        palette = [line for line in console.export_text().splitlines() if "Command palette" in line]
        assert len(palette) == 1 and palette[0].split()[-1] == "app", palette  # not wrapped


@pytest.mark.asyncio
async def test_every_screens_footer_fits_80_columns(ws):
    """No key in a footer scrolls off the right edge at 80x24 (the Compare footer did)."""
    from tui.screens.dashboard import DashboardScreen

    sample_workspace(ws)
    app = VoxtuneApp(ws)

    def fits() -> bool:  # the keys end before the `^p palette` docked on the right
        footer = app.screen.query_one("KeysFooter")
        keys = [w for w in footer.children if w.styles.dock != "right"]
        edge = min([w.virtual_region.x for w in footer.children if w.styles.dock == "right"] + [footer.size.width])
        return max(w.virtual_region.right for w in keys) <= edge

    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: rows_loaded(app, 5), what="rows")
        for key in ("1", "2", "3", "4", "1", "n"):
            await pilot.press(key)
            await pilot.pause(0.3)
            assert fits(), (key, type(app.screen).__name__)
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen), what="dashboard")
        await pilot.pause(0.3)
        assert fits()
