"""History, run detail and comparison screens against a real workspace, at 80x24."""

from __future__ import annotations

import csv

import pytest
from dashboard_fixtures import T0, make_run
from textual.widgets import DataTable

from tui.app import VoxtuneApp
from tui.screens.dashboard import DashboardScreen
from tui.screens.history import CompareScreen, HistoryScreen, RunDetailScreen
from tui.widgets.run_list import RunList

SIZE = (80, 24)


def three_runs(ws) -> list[str]:
    return [
        make_run(ws, run_id="1125-0412-whisper-small-lora", wer_scale=1.0, t0=T0),
        make_run(ws, run_id="1125-0530-whisper-base-full", model="whisper-base", method="full", wer_scale=1.3, t0=T0 + 3600, lora_rank=8),
        make_run(ws, run_id="1125-0645-distil-large-v3-qlora", model="distil-large-v3", method="qlora", status="failed",
                 wer_scale=0.8, t0=T0 + 7200, dataset="calls"),
    ]


async def open_history(app, pilot) -> HistoryScreen:
    await pilot.press("4")
    screen = app.screen
    assert isinstance(screen, HistoryScreen)
    for _ in range(100):
        if screen.loaded:
            break
        await pilot.pause(0.05)
    await pilot.pause()
    return screen


def shown_ids(screen: HistoryScreen) -> list[str]:
    return [r["id"] for r in screen.query_one(RunList).rows]


@pytest.mark.asyncio
async def test_lists_filters_and_sorts(ws):
    a, b, c = three_runs(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_history(app, pilot)
        assert shown_ids(screen) == [c, b, a]  # newest first
        await pilot.press("s")  # next sort key: WER, best (lowest) first
        assert screen.sort_key == "wer" and shown_ids(screen) == [c, a, b]
        await pilot.press("r")
        assert shown_ids(screen) == [b, a, c]
        await pilot.press("slash")
        await pilot.press(*"model=whisper")
        assert shown_ids(screen) == [b, a]
        assert "2 of 3 runs" in str(screen.query_one("#history-status").render())
        await pilot.press("ctrl+a", "ctrl+k", *"status=failed", "enter")
        assert shown_ids(screen) == [c]
        await pilot.press("slash", "ctrl+a", "ctrl+k", *"dataset=calls method=qlora", "enter")
        assert shown_ids(screen) == [c]
        await pilot.press("slash", "ctrl+a", "ctrl+k", *"speed=fast")
        assert "unknown filter field 'speed'" in str(screen.query_one("#history-status").render())
        await pilot.press("ctrl+a", "ctrl+k", "enter")
        assert len(shown_ids(screen)) == 3


@pytest.mark.asyncio
async def test_sort_by_clicking_a_header(ws):
    a, b, c = three_runs(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_history(app, pilot)
        table = screen.query_one(RunList)
        keys = [col.key for col in table.columns]
        x = sum(col.width + 2 for col in table.columns[: keys.index("best_wer")]) + 2
        await pilot.click(RunList, offset=(x, 0))
        assert screen.sort_key == "best_wer" and shown_ids(screen) == [c, a, b]
        await pilot.click(RunList, offset=(x, 0))
        assert shown_ids(screen) == [b, a, c]
        await pilot.click(RunList, offset=(5, 2))  # a row: moves the cursor there
        assert table.cursor == 1


@pytest.mark.asyncio
async def test_new_runs_appear_when_history_is_shown_again(ws):
    a, b, c = three_runs(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_history(app, pilot)
        make_run(ws, run_id="1125-0900-whisper-tiny-lora", model="whisper-tiny", t0=T0 + 9000)
        await pilot.press("1")
        loaded = screen.loaded
        await pilot.press("4")
        for _ in range(100):
            if screen.loaded > loaded:
                break
            await pilot.pause(0.05)
        await pilot.pause()
        assert shown_ids(screen)[0] == "1125-0900-whisper-tiny-lora"


@pytest.mark.asyncio
async def test_run_detail_shows_config_metrics_memory_samples(ws):
    a, b, c = three_runs(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await open_history(app, pilot)
        await pilot.press("down", "down", "enter")  # the oldest: whisper-small lora
        detail = app.screen
        assert isinstance(detail, RunDetailScreen)
        for _ in range(100):
            if detail.detail is not None:
                break
            await pilot.pause(0.05)
        body = str(detail.query_one("#detail-body").render())
        assert a in body and "measured peak 5.6 GiB" in body and "estimated 6.2 GiB" in body
        assert "estimate over by 11%" in body and "duration 2m00s" in body
        assert "WER        27.0%" in body and "clip03 (step 40)" in body
        assert "lora_rank" in body and "16" in body
        await pilot.press("o")
        assert isinstance(app.screen, DashboardScreen) and app.screen.run_id == a
        await pilot.press("escape", "escape")
        assert isinstance(app.screen, HistoryScreen)


@pytest.mark.asyncio
async def test_compare_and_export(ws):
    a, b, c = three_runs(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_history(app, pilot)
        await pilot.press("c")
        assert isinstance(app.screen, HistoryScreen)  # needs two marked runs: says so instead
        await pilot.press("space")  # marks c, moves down
        await pilot.press("space")  # marks b
        assert screen.marked == {c, b}
        assert "2 marked" in str(screen.query_one("#history-status").render())
        await pilot.press("c")
        cmp = app.screen
        assert isinstance(cmp, CompareScreen)
        for _ in range(100):
            if cmp.comparison is not None:
                break
            await pilot.pause(0.05)
        table = cmp.query_one("#cmp-table", DataTable)
        rows = {str(table.get_row_at(i)[0]): [str(v) for v in table.get_row_at(i)[1:]] for i in range(table.row_count)}
        assert rows["WER"] == ["21.6%", "35.1%"] and rows["Status"] == ["failed", "finished"]
        cfg = cmp.query_one("#cmp-config-table", DataTable)
        assert "lora_rank" in [str(cfg.get_row_at(i)[0]) for i in range(cfg.row_count)]
        assert len(cmp.query_one("#cmp-plot").series) == 2
        await pilot.press("w")
        assert cmp.query_one("TabbedContent").active == "cmp-curves" and cmp.CURVES[cmp.curve][0] == "eval_loss"
        await pilot.press("m", "v")
        md, csv_path = cmp.exported
        assert md.parent == ws.home / "exports" and md.suffix == ".md"
        assert "| WER | 21.6% | 35.1% |" in md.read_text()
        rows = list(csv.DictReader(csv_path.open()))
        assert [r["id"] for r in rows] == [c, b]


@pytest.mark.asyncio
async def test_empty_history(ws):
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_history(app, pilot)
        assert screen.query_one(RunList).row_count == 0
        assert "0 of 0 runs" in str(screen.query_one("#history-status").render())
        assert "No runs yet. n queues one" in str(screen.query_one("#history-current").render())
        await pilot.press("enter", "space", "o")  # nothing selected: nothing happens
        assert app.screen is screen


# -- snapshots ----------------------------------------------------------------------------
def _snap(keys, wait_compare=False):
    async def run_before(pilot):
        screen = await open_history(pilot.app, pilot)
        for k in keys:
            await pilot.press(k)
        if wait_compare:
            for _ in range(100):
                shown = pilot.app.screen
                if getattr(shown, "comparison", None) is not None or getattr(shown, "detail", None) is not None:
                    break
                await pilot.pause(0.05)
        await pilot.pause()
        del screen

    return run_before


@pytest.mark.parametrize(
    "keys,wait",
    [([], False), (["s"], False), (["space", "space", "c"], True), (["space", "space", "c", "w"], True),
     (["space", "space", "c", "s"], True), (["space", "space", "c", "d"], True),
     (["down", "down", "enter"], True)],
    ids=["list", "sorted-wer", "compare-metrics", "compare-curves", "compare-samples", "compare-config", "detail"],
)
def test_history_snapshot(ws, snap_compare, keys, wait):
    three_runs(ws)
    assert snap_compare(VoxtuneApp(ws), terminal_size=SIZE, run_before=_snap(keys, wait))


@pytest.mark.asyncio
async def test_history_keys_in_the_command_palette(ws):
    three_runs(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_history(app, pilot)
        commands = {c.title for c in app.get_system_commands(screen)}
        assert {"Filter", "Sort", "Reverse", "Mark", "Compare", "Log/dashboard"} <= commands


@pytest.mark.asyncio
async def test_delete_from_history_asks_then_moves_to_the_trash(ws):
    from engine.store import Store
    from tui.screens.confirm import ConfirmScreen

    a, b, c = three_runs(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_history(app, pilot)
        assert shown_ids(screen)[0] == c
        await pilot.press("d")
        for _ in range(100):
            if isinstance(app.screen, ConfirmScreen):
                break
            await pilot.pause(0.05)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        for _ in range(200):
            if shown_ids(screen) == [b, a]:
                break
            await pilot.pause(0.05)
        assert shown_ids(screen) == [b, a]
        assert Store(ws).get_run(c) is None and (ws.engine_dir / "trash" / c).is_dir()


@pytest.mark.asyncio
async def test_runs_and_history_agree_on_wer_in_one_unit_and_wer_filters(ws):
    """A finished run whose final evaluation (record) differs from its last periodic eval:
    both screens show the record's WER and best WER, in percent, with the unit labelled."""
    from engine.store import Store
    from tui.widgets.run_table import RunTable
    from tui_helpers import add_run

    add_run(ws, "1125-0900-whisper-small-lora", "finished", steps=10, max_steps=10, wer=0.30, best=0.20,
            finished_at=T0 + 50)
    Store(ws).update_run("1125-0900-whisper-small-lora", metrics={"wer": 0.25})
    add_run(ws, "1125-0901-whisper-base-lora", "finished", steps=10, max_steps=10, wer=0.7, best=0.65,
            finished_at=T0 + 60, model="whisper-base")
    Store(ws).update_run("1125-0901-whisper-base-lora", metrics={"wer": 0.7})
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one(RunTable)
        for _ in range(200):
            if table.row_count == 2:
                break
            await pilot.pause(0.05)
        headings = [str(c.label) for c in table.columns.values()]
        assert "WER%" in headings and "best%" in headings
        rid = "1125-0900-whisper-small-lora"
        assert str(table.get_cell(rid, "wer")) == "25.0" and str(table.get_cell(rid, "best")) == "20.0"
        screen = await open_history(app, pilot)
        row = next(r for r in screen.query_one(RunList).rows if r["id"] == rid)
        assert screen._format_cell("wer", row) == "25.0%" and screen._format_cell("best_wer", row) == "20.0%"

        await pilot.press("slash", *"wer<0.5")
        assert shown_ids(screen) == [rid]
        assert "WER < 50.0%" in str(screen.query_one("#history-status").render())
        await pilot.press("ctrl+a", "ctrl+k", *"wer<50%")
        assert shown_ids(screen) == [rid]
        await pilot.press("ctrl+a", "ctrl+k", *"wer<x")
        assert "e.g. wer<30%" in str(screen.query_one("#history-status").render())


def test_model_column_keeps_what_tells_models_apart():
    from tui.screens.history import MODEL_WIDTH, short_models

    a, b = "/home/user/checkpoints/project-a/whisper-small-ft", "/home/user/checkpoints/project-b/whisper-small-ft"
    short = short_models({a, b, "whisper-small"})
    assert short["whisper-small"] == "whisper-small"
    assert short[a] != short[b] and short[a].startswith("project-a/") and short[b].startswith("project-b/")
    assert all(len(v) <= MODEL_WIDTH for v in short.values())


@pytest.mark.asyncio
async def test_the_highlighted_run_is_spelled_out_under_the_table(ws):
    """At 80 columns the Model column is cut and there is no reason column: the line under the
    table gives the highlighted run's whole model, method, data and split, and why it failed."""
    from engine.store import Store

    a, b, c = three_runs(ws)
    long_model = "/checkpoints/project-alpha/whisper-small-finetuned-calls"
    store = Store(ws)
    store.update_run(c, status_reason="out of memory at step 12 (peak 11.6 GB)", model=long_model)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_history(app, pilot)
        current = lambda: str(screen.query_one("#history-current").render())  # noqa: E731
        assert shown_ids(screen)[0] == c
        assert current() == f"{long_model} · qlora · calls (val) · out of memory at step 12 (peak 11.6 GB)"
        await pilot.press("down")
        assert current().startswith("whisper-base · full · meetings (val)")


@pytest.mark.asyncio
async def test_run_detail_says_when_memory_was_not_measured(ws):
    """A run without a memory figure says so in words, not "- GiB"."""
    from tui_helpers import add_run

    add_run(ws, "1125-0100-whisper-small-lora", "running", steps=3)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await open_history(app, pilot)
        await pilot.press("enter")
        detail = app.screen
        assert isinstance(detail, RunDetailScreen)
        for _ in range(100):
            if detail.detail is not None:
                break
            await pilot.pause(0.05)
        body = str(detail.query_one("#detail-body").render())
        assert "measured peak: none yet" in body and "estimated none (" in body
        assert "- GiB" not in body


@pytest.mark.asyncio
async def test_a_filter_that_matches_nothing_says_so(ws):
    three_runs(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_history(app, pilot)
        await pilot.press("slash", *"zzz-nothing", "enter")
        await pilot.pause()
        assert shown_ids(screen) == []
        assert "No run matches the filter" in str(screen.query_one("#history-current").render())


def footer_fits(app) -> bool:
    """The footer's keys fit the terminal: none under the `^p palette` docked on the right,
    none scrolled off the right edge."""
    footer = app.screen.query_one("KeysFooter")
    keys = [w for w in footer.children if w.styles.dock != "right"]
    edge = min([w.virtual_region.x for w in footer.children if w.styles.dock == "right"] + [footer.size.width])
    return max(w.virtual_region.right for w in keys) <= edge


@pytest.mark.asyncio
async def test_history_detail_and_compare_footers_fit_80_columns(ws):
    three_runs(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await open_history(app, pilot)
        await pilot.pause(0.2)
        assert footer_fits(app)
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert isinstance(app.screen, RunDetailScreen) and footer_fits(app)
        await pilot.press("escape", "space", "space", "c")
        await pilot.pause(0.3)
        assert isinstance(app.screen, CompareScreen) and footer_fits(app)  # was 92 wide: "n New" cut
        await pilot.press("w")
        await pilot.pause(0.2)
        assert footer_fits(app)
