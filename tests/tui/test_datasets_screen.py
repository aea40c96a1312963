"""The Datasets screen against a real workspace: the demo plus an imported folder with problems."""

from __future__ import annotations

import asyncio

from textual.widgets import DataTable, Static

from data_helpers import make_folder_dataset, silent_clip
from engine import datasets as D
from tui.app import VoxtuneApp
from tui.screens.datasets import DatasetsScreen, stats_text
from tui_helpers import wait_for

SIZE = (80, 24)


def _with_problems(ws, tmp_path):
    src = make_folder_dataset(tmp_path / "talks", n=4, seconds=1.0)
    silent_clip(src / "quiet.wav")
    (src / "quiet.txt").write_text("nothing", encoding="utf-8")
    (src / "orphan.wav").write_bytes(b"RIFF nonsense")
    D.import_dataset(ws, src, "talks")
    return ws


def _ready(app) -> bool:
    screen = app.screen
    return isinstance(screen, DatasetsScreen) and "clips usable" in str(screen.query_one("#ds-stats", Static).render())


def test_lists_datasets_shows_stats_and_problems(ws, tmp_path):
    _with_problems(ws, tmp_path)
    asyncio.run(_lists_and_problems(VoxtuneApp(ws)))


async def _lists_and_problems(app):
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        await wait_for(pilot, lambda: _ready(app), what="datasets screen")
        screen = app.screen
        table = screen.query_one("#ds-list", DataTable)
        assert [str(table.get_row_at(i)[0]) for i in range(table.row_count)] == ["demo", "talks"]
        stats = str(screen.query_one("#ds-stats", Static).render())
        assert "demo" in stats and "14/14 clips usable" in stats and "fillers" in stats
        await pilot.press("down")
        await wait_for(pilot, lambda: "talks" in str(screen.query_one("#ds-stats", Static).render()), what="talks")
        stats = str(screen.query_one("#ds-stats", Static).render())
        assert "4/6 clips usable" in stats and "2 clip(s) left out" in stats
        problems = screen.query_one("#ds-problems", DataTable)
        assert problems.display and problems.row_count == 2
        reasons = {str(problems.get_row_at(i)[0]): str(problems.get_row_at(i)[1]) for i in range(2)}
        assert "silence only" in reasons["talks/quiet.wav"]
        assert "missing transcript" in reasons["talks/orphan.wav"]
        await pilot.press("p")
        assert app.focused is problems
        await pilot.press("l")
        assert app.focused is table


def test_refresh_picks_up_a_new_import(ws, tmp_path):
    asyncio.run(_refresh(VoxtuneApp(ws), ws, tmp_path))


async def _refresh(app, ws, tmp_path):
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        await wait_for(pilot, lambda: _ready(app), what="datasets screen")
        table = app.screen.query_one("#ds-list", DataTable)
        assert table.row_count == 1
        D.import_dataset(ws, make_folder_dataset(tmp_path / "more", n=2, seconds=1.0), "more")
        await pilot.press("r")
        await wait_for(pilot, lambda: table.row_count == 2, what="refresh")


def test_stats_text_lines_fit_the_panel(ws):
    text = stats_text(D.stats(ws, "demo"))
    assert max(len(line) for line in text.replace("[dim]", "").replace("[/]", "").replace("[b]", "")
               .replace("[/b]", "").replace("[cyan]", "").replace("[green]", "").splitlines()) <= 52


def test_snapshot_datasets_screen(ws, tmp_path, snap_compare):
    _with_problems(ws, tmp_path)
    app = VoxtuneApp(ws)

    async def run_before(pilot):
        app.sub_title = "~/voxtune"  # the temp workspace path differs on every run
        await pilot.press("3")
        await wait_for(pilot, lambda: _ready(app), what="datasets screen")
        await pilot.press("down")
        await wait_for(pilot, lambda: "talks" in str(app.screen.query_one("#ds-stats", Static).render()), what="talks")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_import_from_the_tui_shows_the_validation_report(ws, tmp_path):
    src = make_folder_dataset(tmp_path / "meetings", n=10, seconds=1.0)
    silent_clip(src / "quiet.wav")
    (src / "quiet.txt").write_text("nothing", encoding="utf-8")
    asyncio.run(_imports(VoxtuneApp(ws), ws, src, tmp_path))


async def _imports(app, ws, src, tmp_path):
    from textual.widgets import Input

    from tui.screens.import_dataset import ImportDatasetScreen

    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        await wait_for(pilot, lambda: _ready(app), what="datasets screen")
        await pilot.press("i")
        await wait_for(pilot, lambda: isinstance(app.screen, ImportDatasetScreen), what="import form")
        form = app.screen

        def report() -> str:
            return str(form.query_one("#import-report-text", Static).render())

        # a path that is not there: named, the field marked, nothing stored
        await pilot.press(*str(tmp_path / "nowhere"), "ctrl+s")
        await wait_for(pilot, lambda: "nowhere" in report() and form.query_one("#path").has_class("-invalid"),
                       what="bad path")
        assert [d["name"] for d in D.list_all(ws)] == ["demo"]
        # a bad split spec names the split field
        form.query_one("#path", Input).value = str(src)
        form.query_one("#split", Input).value = "8-1-1"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: form.query_one("#split").has_class("-invalid"), what="bad split")
        assert "--split" in report()
        # counts; the name defaults to the folder's
        form.query_one("#split", Input).value = "8/1/1"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "clips usable" in report(), what="report")
        text = report()
        assert "meetings: 10 of 11 clips usable" in text
        assert "splits: train 8 / validation 1 / test 1" in text
        assert "1 clip(s) left out" in text and "quiet.wav" in text
        assert [d["name"] for d in D.list_all(ws)] == ["demo", "meetings"]
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, DatasetsScreen), what="back")
        screen = app.screen
        await wait_for(pilot, lambda: "meetings" in str(screen.query_one("#ds-stats", Static).render()),
                       what="new dataset selected")


def test_split_pin_and_j_k_on_the_datasets_screen(ws, tmp_path):
    src = make_folder_dataset(tmp_path / "talks", n=10, seconds=1.0)
    D.import_dataset(ws, src, "talks")
    asyncio.run(_split_pin(VoxtuneApp(ws), ws))


async def _split_pin(app, ws):
    from tui.screens.tools import PromptScreen

    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        await wait_for(pilot, lambda: _ready(app), what="datasets screen")
        screen = app.screen
        stats = lambda: str(screen.query_one("#ds-stats", Static).render())  # noqa: E731
        assert stats().startswith("demo")
        await pilot.press("j")
        await wait_for(pilot, lambda: stats().startswith("talks"), what="j moves down")
        await pilot.press("k")
        await wait_for(pilot, lambda: stats().startswith("demo"), what="k moves up")
        await pilot.press("j", "s")
        await wait_for(pilot, lambda: isinstance(app.screen, PromptScreen), what="split prompt")
        await pilot.press("ctrl+a", "ctrl+k", *"6/2/2", "enter")
        await wait_for(pilot, lambda: D.get(ws, "talks")["split_spec"] == "6/2/2", what="split")
        await wait_for(pilot, lambda: "train 6 · val 2 · test 2" in stats(), what="stats updated")
        ids = [r["id"] for r in D.load_rows(ws, "talks", "test")]
        await pilot.press("P")
        await wait_for(pilot, lambda: isinstance(app.screen, PromptScreen), what="pin prompt")
        await pilot.press("ctrl+a", "ctrl+k", *ids[0], "enter")
        await wait_for(pilot, lambda: D.get(ws, "talks")["pinned"] == [ids[0]], what="pinned")
        # a bad spec: the engine's one line, nothing changed
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, PromptScreen))
        await pilot.press("ctrl+a", "ctrl+k", *"8-1-1", "enter")
        await wait_for(pilot, lambda: any(n.severity == "error" for n in app._notifications), what="error")
        assert D.get(ws, "talks")["split_spec"] == "6/2/2"


def test_snapshot_import_report(ws, tmp_path, snap_compare):
    """The import form at 80x24 after an import with a clip left out: the report whole."""
    from textual.widgets import Input

    from tui.screens.import_dataset import ImportDatasetScreen

    src = make_folder_dataset(tmp_path / "meetings", n=10, seconds=1.0)
    silent_clip(src / "quiet.wav")
    (src / "quiet.txt").write_text("nothing", encoding="utf-8")
    app = VoxtuneApp(ws)

    async def run_before(pilot):
        app.sub_title = "~/voxtune"
        await pilot.press("3")
        await wait_for(pilot, lambda: _ready(app), what="datasets screen")
        await pilot.press("i")
        await wait_for(pilot, lambda: isinstance(app.screen, ImportDatasetScreen), what="import form")
        app.screen.query_one("#path", Input).value = str(src)
        app.screen.query_one("#split", Input).value = "8/1/1"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "clips usable" in str(app.screen.query_one("#import-report-text").render()))
        app.screen.query_one("#path", Input).value = "~/recordings/meetings"  # the temp path differs per run
        for field in app.screen.query(Input):
            field.cursor_blink = False
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
