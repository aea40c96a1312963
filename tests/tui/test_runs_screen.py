"""The Runs home screen against a real workspace: real TinyDB store, real run files,
real engine.queue operations (the daemon is not needed to change the queue)."""

from __future__ import annotations

import pytest
from rich.text import Text
from textual.widgets.data_table import ColumnKey

from engine.runfiles import RunFiles, append_jsonl
from engine.store import Store
from tui.app import VoxtuneApp
from tui.screens.runs import RunsScreen
from tui.widgets.engine_bar import EngineState, describe
from tui.widgets.run_table import RunTable, build_rows, fmt_duration, progress_bar, queue_order
from tui_helpers import T0, add_run, sample_workspace, wait_for

SIZE = (80, 24)


# -- pure formatting -------------------------------------------------------------------------
def test_queue_order_running_then_queue_order_then_newest_finished():
    runs = [
        {"id": "done-old", "status": "finished", "finished_at": 1},
        {"id": "q-low", "status": "queued", "priority": 0, "seq": 1},
        {"id": "run", "status": "running", "started_at": 5},
        {"id": "q-high", "status": "queued", "priority": 5, "seq": 9},
        {"id": "failed-new", "status": "failed", "finished_at": 9},
    ]
    assert [r["id"] for r in queue_order(runs)] == ["run", "q-high", "q-low", "failed-new", "done-old"]


def test_progress_bar_and_durations():
    assert progress_bar(None, 100) == ""
    assert progress_bar(50, 100, 125, width=4) == "▰▰▱▱  50% 2m"
    assert progress_bar(100, 100, 0, width=4) == "▰▰▰▰ 100%"
    assert [fmt_duration(s) for s in (None, 5, 90, 3 * 3600 + 300)] == ["", "5s", "1m", "3h05"]


def test_rows_show_queue_position_reason_and_scores():
    runs = [
        {"id": "a", "status": "queued", "seq": 1, "status_reason": "waiting: needs 9.8 GB, 7.1 GB free"},
        {"id": "b", "status": "queued", "seq": 2},
        {"id": "c", "status": "finished", "best": {"wer": 0.2}, "metrics": {"wer": 0.25}},
    ]
    rows = build_rows(runs, {"c": {"step": 10, "max_steps": 10, "loss": 0.5}})
    a, b, c = rows
    assert a.cells[0].plain == "… queued #1" and b.cells[0].plain == "… queued #2"
    assert a.cells[2].plain == "waiting: needs 9.8 GB, 7.1 GB free"  # the note where a bar would be
    assert c.cells[2].endswith("100%") and c.cells[3:5] == ("25.0", "20.0")
    assert "loss 0.500" in c.detail and "WER 25.0% (validation)" in c.detail
    paused = build_rows(runs, {}, queue_paused=True)
    assert paused[1].cells[2].plain == "queue paused"


def test_engine_bar_says_when_the_engine_is_down_and_what_to_press():
    down = describe(EngineState(running=False, counts={"queued": 2})).plain
    assert "stopped" in down and "press s" in down and "2 queued" in down
    up = describe(EngineState(running=True, pid=42, queue_paused=True)).plain
    assert "running (pid 42)" in up and "PAUSED" in up


# -- the screen --------------------------------------------------------------------------------
def table_of(app) -> RunTable:
    return app.screen.query_one(RunTable)


def cell(app, run_id: str, column: str) -> str:
    value = table_of(app).get_cell(run_id, column)
    return value.plain if isinstance(value, Text) else str(value)


@pytest.mark.asyncio
async def test_home_shows_every_run_with_progress_scores_and_reasons(ws):
    sample_workspace(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: table_of(app).row_count == 5, what="5 rows")
        assert isinstance(app.screen, RunsScreen)
        assert table_of(app)._order == [
            "1125-0200-whisper-medium-qlora", "1125-0412-whisper-small-lora", "1125-0413-whisper-small-full",
            "1125-0300-whisper-small-full", "1125-0100-voxtral-mini-3b-qlora",
        ]
        running = "1125-0200-whisper-medium-qlora"
        # 40 of 100 steps at 3 s a step: 60 steps * 3 s = 3 minutes left
        assert cell(app, running, "progress") == "▰▰▱▱▱▱  40% 3m"
        assert cell(app, running, "wer") == "31.0"
        assert cell(app, "1125-0412-whisper-small-lora", "progress") == "waiting: needs 9.8 GB, 7.1 GB free"
        assert cell(app, "1125-0300-whisper-small-full", "best") == "11.8"
        assert "out of memory" in cell(app, "1125-0100-voxtral-mini-3b-qlora", "progress")
        bar = str(app.screen.query_one("#engine-bar").render())
        assert "stopped" in bar and "press s" in bar
        detail = str(app.screen.query_one("#run-detail").render())
        assert running in detail and "ETA 3m" in detail
        await pilot.press("j")
        await wait_for(pilot, lambda: "9.8 GB" in str(app.screen.query_one("#run-detail").render()), what="detail")


@pytest.mark.asyncio
async def test_live_run_updates_without_a_keypress(ws):
    """Re-attach: a running run's new metrics show up on their own."""
    run_id = add_run(ws, "1125-0500-whisper-small-lora", "running", steps=10, started_at=T0)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: table_of(app).row_count == 1)
        assert cell(app, run_id, "progress").startswith("▰▱▱▱▱▱  10%")
        files = RunFiles(ws.run_dir(run_id))
        for s in range(11, 61):
            append_jsonl(files.metrics, {"kind": "train", "step": s, "max_steps": 100, "loss": 0.25, "time": T0 + s * 3})
        append_jsonl(files.metrics, {"kind": "eval", "step": 60, "max_steps": 100, "wer": 0.2, "time": T0 + 181})
        await wait_for(pilot, lambda: cell(app, run_id, "progress").startswith("▰▰▰▰▱▱  60%"), what="60%")
        assert cell(app, run_id, "wer") == "20.0"
        assert "loss 0.250" in str(app.screen.query_one("#run-detail").render())


@pytest.mark.asyncio
async def test_queue_actions_go_through_engine_queue(ws):
    sample_workspace(ws)
    store = Store(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: table_of(app).row_count == 5)

        def select(run_id):
            table_of(app).move_cursor(row=table_of(app)._order.index(run_id))

        # move the second queued run up: it becomes #1
        select("1125-0413-whisper-small-full")
        await pilot.press("K")
        await wait_for(pilot, lambda: table_of(app)._order[1] == "1125-0413-whisper-small-full", what="moved up")
        assert cell(app, "1125-0413-whisper-small-full", "status") == "… queued #1"
        await pilot.press("J")
        await wait_for(pilot, lambda: table_of(app)._order[2] == "1125-0413-whisper-small-full", what="moved down")

        # pause and resume the queue
        await pilot.press("p")
        await wait_for(pilot, lambda: store.get_meta("queue_paused") is True, what="paused")
        await wait_for(pilot, lambda: "PAUSED" in str(screen.query_one("#engine-bar").render()))
        assert cell(app, "1125-0412-whisper-small-lora", "progress").startswith("queue paused")
        await pilot.press("p")
        await wait_for(pilot, lambda: store.get_meta("queue_paused") is False, what="unpaused")

        # cancel a queued run
        select("1125-0412-whisper-small-lora")
        await pilot.press("c")
        await wait_for(pilot, lambda: store.get_run("1125-0412-whisper-small-lora")["status"] == "cancelled")

        # resume the failed run: queued again, from its last checkpoint
        select("1125-0100-voxtral-mini-3b-qlora")
        await pilot.press("e")
        await wait_for(pilot, lambda: store.get_run("1125-0100-voxtral-mini-3b-qlora")["status"] == "queued")
        assert store.get_run("1125-0100-voxtral-mini-3b-qlora")["resume"] is True


@pytest.mark.asyncio
async def test_refused_action_is_reported_and_changes_nothing(ws):
    sample_workspace(ws)
    before = Store(ws).get_run("1125-0300-whisper-small-full")
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: table_of(app).row_count == 5)
        table_of(app).move_cursor(row=table_of(app)._order.index("1125-0300-whisper-small-full"))
        await pilot.press("c")
        await wait_for(pilot, lambda: any(n.severity == "error" for n in app._notifications), what="error toast")
        message = next(n.message for n in app._notifications if n.severity == "error")
        assert "finished" in message and "cancel" in message
        await pilot.press("J")  # moving a finished run is refused too
        await pilot.pause(0.2)
    assert Store(ws).get_run("1125-0300-whisper-small-full") == before


@pytest.mark.asyncio
async def test_clone_opens_the_form_prefilled(ws):
    sample_workspace(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: table_of(app).row_count == 5)
        table_of(app).move_cursor(row=table_of(app)._order.index("1125-0300-whisper-small-full"))
        await pilot.press("y")
        from tui.screens.new_run import NewRunScreen

        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen), what="form")
        assert app.screen.clone_of == "1125-0300-whisper-small-full"
        await wait_for(pilot, lambda: app.screen.query_one("#model").value == "whisper-small", what="prefill")
        assert app.screen.query_one("#method").value == "full"


@pytest.mark.asyncio
async def test_enter_opens_the_run_dashboard(ws):
    dashboard = pytest.importorskip("tui.screens.dashboard")
    sample_workspace(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: table_of(app).row_count == 5)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, dashboard.DashboardScreen), what="dashboard")


@pytest.mark.functional
@pytest.mark.asyncio
async def test_start_engine_key_starts_the_daemon(ws):
    from engine import daemon

    add_run(ws, "1125-0600-whisper-small-lora", "queued")
    app = VoxtuneApp(ws)
    try:
        async with app.run_test(size=SIZE) as pilot:
            bar = lambda: str(app.screen.query_one("#engine-bar").render())  # noqa: E731
            await wait_for(pilot, lambda: "stopped" in bar(), what="engine down")
            await pilot.press("s")
            await wait_for(pilot, lambda: "engine ● running" in bar(), timeout=60, what="engine up")
            assert daemon.status(ws)["running"]
    finally:
        daemon.stop(ws)


def test_snapshot_home(ws, snap_compare):
    sample_workspace(ws)
    app = VoxtuneApp(ws)

    async def ready(pilot):
        app.sub_title = "~/voxtune"  # the temp workspace path differs on every run
        await wait_for(pilot, lambda: table_of(app).row_count == 5, what="rows")
        await wait_for(pilot, lambda: len(app._notifications) > 0, what="engine-stopped toast")
        app.clear_notifications()  # the toast is tested on its own
        await pilot.pause(0.1)

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


@pytest.mark.asyncio
async def test_delete_asks_first_and_moves_the_run_to_the_trash(ws):
    from tui.screens.confirm import ConfirmScreen

    sample_workspace(ws)
    store = Store(ws)
    failed = "1125-0100-voxtral-mini-3b-qlora"
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: table_of(app).row_count == 5)
        table_of(app).move_cursor(row=table_of(app)._order.index(failed))
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="question")
        assert failed in str(app.screen.query_one("#confirm-question").render())
        await pilot.press("n")  # no: nothing happens
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen))
        await pilot.pause(0.2)
        assert store.get_run(failed) is not None
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: store.get_run(failed) is None, what="removed")
        assert (ws.engine_dir / "trash" / failed).is_dir() and not ws.run_dir(failed).exists()
        await wait_for(pilot, lambda: failed not in table_of(app)._order, what="row gone")

        # a running run: delete is refused (cancel first); cancel asks before stopping it
        running = "1125-0200-whisper-medium-qlora"
        table_of(app).move_cursor(row=table_of(app)._order.index(running))
        await pilot.press("d")
        await pilot.pause(0.2)
        assert isinstance(app.screen, RunsScreen) and store.get_run(running) is not None
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="cancel question")
        await pilot.press("escape")
        await pilot.pause(0.2)
        assert not store.get_run(running).get("cancel_requested")
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: store.get_run(running).get("cancel_requested"), what="cancel requested")


@pytest.mark.asyncio
async def test_export_and_transcribe_run_the_cli_and_show_what_it_says(ws):
    """x and t run `voxtune runs export ID` / `voxtune transcribe --run ID FILE` in a child
    process (torch stays out of the TUI); the CLI's one-line refusal is shown."""
    from tui.screens.tools import CommandScreen, PromptScreen

    sample_workspace(ws)
    finished = "1125-0300-whisper-small-full"
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: table_of(app).row_count == 5)
        table_of(app).move_cursor(row=table_of(app)._order.index(finished))
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandScreen), what="export")
        cmd = app.screen
        assert cmd.argv[-3:] == ["runs", "export", finished] and str(ws.home) in cmd.argv
        await wait_for(pilot, lambda: cmd.returncode is not None, timeout=60, what="export finished")
        assert cmd.returncode == 2 and any("has no checkpoint" in line for line in cmd.lines)
        assert "failed (exit 2)" in str(cmd.query_one("#command-status").render())
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen))
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, PromptScreen), what="audio prompt")
        await pilot.press(*"/nowhere/a.wav", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandScreen), what="transcribe")
        assert app.screen.argv[-4:] == ["transcribe", "--run", finished, "/nowhere/a.wav"]
        await wait_for(pilot, lambda: app.screen.returncode is not None, timeout=60, what="transcribe finished")
        assert app.screen.returncode == 2


def test_snapshot_delete_question(ws, snap_compare):
    """The confirmation at 80x24: the question and its keys whole."""
    sample_workspace(ws)
    app = VoxtuneApp(ws)

    async def ready(pilot):
        from tui.screens.confirm import ConfirmScreen

        app.sub_title = "~/voxtune"
        await wait_for(pilot, lambda: table_of(app).row_count == 5, what="rows")
        # the engine-stopped toast comes with the first poll; cleared before it shows, it would
        # show over the question in some runs and not in others
        await wait_for(pilot, lambda: len(app._notifications) > 0, what="engine-stopped toast")
        app.clear_notifications()
        table_of(app).move_cursor(row=table_of(app)._order.index("1125-0100-voxtral-mini-3b-qlora"))
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="question")
        app.screen.query_one("#confirm-question").update(
            "Delete run 1125-0100-voxtral-mini-3b-qlora (failed)?\nIts folder moves to ~/voxtune/.voxtune/trash.")
        app.clear_notifications()
        await pilot.pause(0.1)

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


# -- 80 columns: nothing that carries meaning is pushed off or left out ------------------------
def crowded_workspace(ws):
    """The widest columns the table has: an interrupted run (status), a test-split WER (" test"),
    and a failed run whose loss line and reason both go in the detail pane."""
    sample_workspace(ws)
    add_run(ws, "1125-0500-whisper-small-eval", "finished", model="whisper-small", eval_only=True, method=None,
            split="test", metrics={"wer": 0.4}, finished_at=T0 + 500)
    add_run(ws, "1125-0600-whisper-small-lora", "interrupted", steps=30, finished_at=T0 + 600,
            status_reason="engine stopped while running; e resumes from step 30")
    return ws


def test_middle_cut_keeps_both_ends_of_a_run_id():
    from tui.widgets.run_table import MiddleCut

    run_id = MiddleCut("1125-0100-voxtral-mini-3b-qlora")
    assert run_id.cut(40) == str(run_id) == "1125-0100-voxtral-mini-3b-qlora"
    assert run_id.cut(20) == "1125-0100-…-3b-qlora" and len(run_id.cut(20)) == 20


@pytest.mark.asyncio
async def test_at_80_columns_every_column_fits_and_the_detail_shows_the_whole_note(ws):
    crowded_workspace(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        table = table_of(app)
        await wait_for(pilot, lambda: table.row_count == 7, what="7 rows")
        await pilot.pause(0.2)  # fit_columns runs after the refresh that added the rows
        widths = sum(c.get_render_width(table) for c in table.columns.values())
        assert widths <= table.size.width, "best% is pushed off the right edge"
        assert table.columns[ColumnKey("progress")].width >= 16  # a bar with percent and ETA shows whole
        failed = "1125-0100-voxtral-mini-3b-qlora"
        table.move_cursor(row=table._order.index(failed))
        detail = app.screen.query_one("#run-detail")
        await wait_for(pilot, lambda: failed in str(detail.render()), what="the failed run's detail")
        lines = str(detail.render()).splitlines()
        assert lines[:2] == [f"{failed} · failed", "out of memory at step 12 (peak 11.6 GB)"]
        assert "loss 1.880" in lines
        assert detail.content_region.height >= len(lines)  # no line of it is cut off


def test_snapshot_home_crowded(ws, snap_compare):
    crowded_workspace(ws)
    app = VoxtuneApp(ws)

    async def ready(pilot):
        app.sub_title = "~/voxtune"
        await wait_for(pilot, lambda: table_of(app).row_count == 7, what="rows")
        table_of(app).move_cursor(row=table_of(app)._order.index("1125-0100-voxtral-mini-3b-qlora"))
        await wait_for(pilot, lambda: len(app._notifications) > 0, what="engine-stopped toast")
        app.clear_notifications()
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)
