"""The run dashboard against a real workspace: TinyDB records via Store, run files written
the way the worker writes them, the app driven by Pilot at 80x24."""

from __future__ import annotations

import threading
import time

import pytest
from dashboard_fixtures import T0, make_run

from engine.runfiles import RunFiles, append_jsonl
from engine.store import Store
from tui.app import VoxtuneApp
from tui.screens.dashboard import CHUNK, DashboardScreen, RunTail
from tui.widgets.gpu import GpuPanel
from tui.widgets.logview import MAX_LINES, LogView
from tui.widgets.plot import Plot, Series, render_braille
from tui.widgets.samples import SamplesPanel, word_diff

SIZE = (80, 24)


async def open_dashboard(app, pilot, run_id) -> DashboardScreen:
    screen = DashboardScreen(run_id)
    await app.push_screen(screen)
    await screen.poller.refresh()
    await pilot.pause()
    return screen


def text_of(widget) -> str:
    return str(widget.render())


# -- pure parts ------------------------------------------------------------------------
def test_word_diff_marks_insertions_and_deletions():
    ops = word_diff("so the meeting moved to thursday", "so um the meeting moved thursday")
    assert ("insert", "um") in ops and ("delete", "to") in ops
    assert [w for op, w in ops if op != "insert"] == "so the meeting moved to thursday".split()
    assert word_diff("same words", "same words") == [("equal", "same"), ("equal", "words")]


def test_braille_plot_draws_a_line_between_points():
    grid = render_braille([Series("a", [(0, 0.0), (10, 1.0)])], width=10, height=4, box=(0, 10, 0, 1))
    assert grid[3][0][0] != " " and grid[0][9][0] != " "  # bottom-left to top-right
    assert all(any(ch != " " for ch, _ in row) for row in grid)  # joined, no gaps
    assert {idx for row in grid for ch, idx in row if ch != " "} == {0}


def test_braille_plot_thins_long_series_but_keeps_the_newest_point():
    pts = [(i, 1.0) for i in range(100_000)] + [(100_000, 0.0)]
    grid = render_braille([Series("loss", pts)], width=20, height=4, box=(0, 100_000, 0, 1))
    assert grid[3][19][0] != " "  # the last point (bottom right) survives thinning
    assert grid[0][0][0] != " "


def test_run_tail_attaches_to_a_huge_log_by_its_tail(ws):
    rid = make_run(ws, log_lines=0)
    log = RunFiles(ws.run_dir(rid)).log
    with open(log, "w") as f:
        for i in range(200_000):
            f.write(f"line {i} {'x' * 40}\n")
    tail = RunTail(ws, rid)
    batch = tail.poll()
    assert len(batch.log) == MAX_LINES and batch.log[-1].startswith("line 199999 ")
    assert tail.offsets["log"] == log.stat().st_size
    assert len(batch.metrics) == 10 and len(batch.samples) == 4 and len(batch.telemetry) == 10
    # a burst bigger than one read: jump to the newest lines and say how much was skipped
    with open(log, "a") as f:
        f.write(("y" * 99 + "\n") * (CHUNK // 100 + 5000))
        f.write("last line\n")
    batch = tail.poll()
    assert batch.log[-1] == "last line" and batch.skipped_bytes > CHUNK // 2
    assert tail.poll().log == []  # nothing new, nothing repeated


def test_run_tail_keeps_partial_lines_for_the_next_poll(ws):
    rid = make_run(ws, log_lines=1)
    rf = RunFiles(ws.run_dir(rid))
    tail = RunTail(ws, rid)
    tail.poll()
    with open(rf.log, "a") as f:
        f.write("half a li")
    with open(rf.metrics, "a") as f:
        f.write('{"kind": "train", "step": 41, "lo')
    batch = tail.poll()
    assert batch.log == [] and batch.metrics == []
    with open(rf.log, "a") as f:
        f.write("ne\n")
    with open(rf.metrics, "a") as f:
        f.write('ss": 0.4, "max_steps": 50}\n')
    batch = tail.poll()
    assert batch.log == ["half a line"] and batch.metrics[0]["step"] == 41


# -- the screen ------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_finished_run_shows_its_whole_history(ws):
    rid = make_run(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_dashboard(app, pilot, rid)
        summary = text_of(screen.query_one("#dash-summary"))
        assert "finished" in summary and "step 40/40" in summary and "best 27.0%" in summary
        log = screen.query_one(LogView)
        assert log.line_count == 30 and log.lines[-1].endswith("batch 29 of 30")
        loss = screen.query_one("#plot-loss", Plot).series
        assert [s.name for s in loss] == ["train loss", "eval loss"] and len(loss[0].points) == 8
        assert screen.query_one("#plot-wer", Plot).series[0].points == [(20, 0.42), (40, 0.27)]
        await pilot.press("g")
        gauge = text_of(screen.query_one("#gpu-gauge"))
        assert "RX 7700 XT" in gauge and "6.8/12.0 GiB" in gauge
        assert len(screen.query_one(GpuPanel).records) == 10
        await pilot.press("s")
        panel = screen.query_one(SamplesPanel)
        assert panel.history.steps == [20, 40]
        body = text_of(panel.query_one("#samples-body"))
        assert "evaluation 2/2 at step 40 (latest)" in body and "-the" in body
        await pilot.press("escape")
        assert not isinstance(app.screen, DashboardScreen)


@pytest.mark.asyncio
async def test_step_back_through_evaluations(ws):
    rid = make_run(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_dashboard(app, pilot, rid)
        panel = screen.query_one(SamplesPanel)
        await pilot.press("left_square_bracket")
        body = text_of(panel.query_one("#samples-body"))
        assert screen.query_one("TabbedContent").active == "samples"
        assert "evaluation 1/2 at step 20" in body and "+um" in body and "+uh" in body
        await pilot.press("left_square_bracket")  # already at the first: stays
        assert panel.history.current_step() == 20
        await pilot.press("right_square_bracket")
        assert panel.history.index is None and panel.history.current_step() == 40


@pytest.mark.asyncio
async def test_search_pause_and_follow(ws):
    rid = make_run(ws, status="running", log_lines=50)
    rf = RunFiles(ws.run_dir(rid))
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_dashboard(app, pilot, rid)
        log = screen.query_one(LogView)
        await pilot.press("slash")
        await pilot.press(*"batch 12 ")
        await pilot.press("enter")
        assert log.term == "batch 12" and log.match_line == 12 and not log.follow
        assert "at line 13" in text_of(screen.query_one("#log-status"))
        # n: the previous match (there is none before line 12), N the next: none either
        await pilot.press("n")
        assert log.match_line == 12
        # while paused, new lines wait instead of moving the view
        with open(rf.log, "a") as f:
            f.writelines(f"new line {i}\n" for i in range(7))
        await screen.poller.refresh()
        assert log.line_count == 50 and log.pending_count == 7
        assert "paused: 7 new lines" in text_of(screen.query_one("#log-status"))
        await pilot.press("f")
        assert log.follow and log.line_count == 57 and log.lines[-1] == "new line 6"
        await pilot.press("slash")
        await pilot.press(*"no such text", "enter")
        assert log.match_line is None


@pytest.mark.asyncio
async def test_cpu_only_run_shows_ram_and_cpu(ws):
    rid = make_run(ws, gpu=False)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_dashboard(app, pilot, rid)
        await pilot.press("g")
        assert "RAM" in text_of(screen.query_one("#gpu-gauge")) and "9.0/32.0 GiB" in text_of(screen.query_one("#gpu-gauge"))
        assert "CPU-only" in text_of(screen.query_one("#gpu-load"))


@pytest.mark.asyncio
async def test_run_without_files_yet(ws):
    rid = Store(ws).add_run({"model": "whisper-tiny", "method": "lora", "dataset": "d"})
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_dashboard(app, pilot, rid)
        assert "queued" in text_of(screen.query_one("#dash-summary"))
        assert screen.query_one(LogView).line_count == 0
        assert "no data yet" in text_of(screen.query_one("#plot-wer"))


@pytest.mark.asyncio
async def test_live_run_panels_update_while_a_writer_appends(ws):
    """A background thread plays the worker: log lines, train/eval metrics, samples, telemetry."""
    rid = make_run(ws, status="running", steps=40, log_lines=10)
    rf = RunFiles(ws.run_dir(rid))
    done = threading.Event()

    def worker():
        for step in range(45, 81, 5):
            with open(rf.log, "a") as f:
                f.writelines(f"step {step} part {i}\n" for i in range(20))
            append_jsonl(rf.metrics, {"kind": "train", "step": step, "max_steps": 80, "loss": 0.3, "time": T0 + step * 3})
            append_jsonl(rf.telemetry, {"time": T0 + step, "gpu": {"name": "g", "used_gb": 7.0, "total_gb": 12.0, "util_percent": 99}})
            time.sleep(0.02)
        append_jsonl(rf.metrics, {"kind": "eval", "step": 80, "max_steps": 80, "wer": 0.11, "eval_loss": 0.9, "time": T0 + 240})
        append_jsonl(rf.samples, {"step": 80, "sample_id": "clip03", "prediction": "so the meeting", "reference": "so the meeting", "time": T0})
        done.set()

    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_dashboard(app, pilot, rid)
        log = screen.query_one(LogView)
        assert log.line_count == 10
        thread = threading.Thread(target=worker)
        thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            await screen.poller.refresh()
            wer = screen.query_one("#plot-wer", Plot).series
            if (done.is_set() and log.line_count == 10 + 8 * 20 and wer and wer[0].points[-1:] == [(80, 0.11)]
                    and screen.query_one(SamplesPanel).history.current_step() == 80):
                break  # every file read to its end (a poll may read metrics before the last eval line)
        thread.join()
        await pilot.pause()
        assert log.line_count == 170 and log.lines[-1] == "step 80 part 19"
        assert screen.query_one("#plot-wer", Plot).series[0].points[-1] == (80, 0.11)
        assert screen.query_one("#plot-loss", Plot).series[0].points[-1] == (80, 0.3)
        assert "step 80/80" in text_of(screen.query_one("#dash-summary"))
        assert "best 11.0%" in text_of(screen.query_one("#dash-summary"))
        assert screen.query_one(GpuPanel).records[-1]["gpu"]["used_gb"] == 7.0
        # the run ends: the record and result.json are picked up
        Store(ws).set_status(rid, "finished")
        screen._tail._record_at = 0  # don't wait for the 2 s record interval
        await screen.poller.refresh()
        assert screen.record["status"] == "finished"


@pytest.mark.asyncio
async def test_enter_on_runs_screen_opens_the_dashboard(ws):
    make_run(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        runs = app.screen
        if getattr(runs, "poller", None) is not None:
            await runs.poller.refresh()
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        if not isinstance(app.screen, DashboardScreen):
            pytest.skip("the Runs screen did not open a dashboard on enter (owned by SHELL)")
        await app.screen.poller.refresh()
        assert app.screen.query_one(LogView).line_count == 30


# -- snapshots (deterministic content: fixed ids, times and log) --------------------------
def _snap_app(ws):
    make_run(ws, run_id="1125-0412-whisper-small-lora")
    return VoxtuneApp(ws)


def _snap_before(keys):
    async def run_before(pilot):
        screen = await open_dashboard(pilot.app, pilot, "1125-0412-whisper-small-lora")
        for k in keys:
            await pilot.press(k)
        await screen.poller.refresh()  # every file read to its end before the picture is taken
        await pilot.wait_for_scheduled_animations()
        await pilot.pause()
        del screen

    return run_before


@pytest.mark.parametrize("keys", [[], ["p"], ["g"], ["s"], ["left_square_bracket"]],
                         ids=["log", "plot", "memory", "samples", "samples-earlier"])
def test_dashboard_snapshot(ws, snap_compare, keys):
    assert snap_compare(_snap_app(ws), terminal_size=SIZE, run_before=_snap_before(keys))


@pytest.mark.asyncio
async def test_keys_are_listed_for_help_and_palette(ws):
    rid = make_run(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_dashboard(app, pilot, rid)
        from tui.screens.help import keys_of

        described = {desc for _, desc, _ in keys_of(screen)}
        assert {"Search", "Follow", "Earlier eval", "Later eval", "Plot", "Memory", "Samples", "Log"} <= described
        assert {"Prev match", "Next match"} <= described  # n / N: search matches only, as in less
        commands = {c.title for c in app.get_system_commands(screen)}
        assert {"Search", "Follow", "Earlier eval"} <= commands


@pytest.mark.functional
@pytest.mark.asyncio
async def test_dashboard_follows_a_run_of_the_real_engine(ws, monkeypatch):
    """A real detached daemon runs a real worker process (the engine's fast test job);
    the dashboard attached mid-run follows it to the end."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.engine_helpers import add_dataset, add_step_run, cleanup, use_step_job, wait_for

    from engine import daemon

    use_step_job(monkeypatch, step_s=0.1)
    add_dataset(ws)
    rid = add_step_run(ws, max_steps=30, save_every=10)
    try:
        daemon.start(ws)
        wait_for(lambda: (Store(ws).get_run(rid) or {}).get("status") == "running", 60, what="the run to start")
        app = VoxtuneApp(ws)
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_dashboard(app, pilot, rid)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                await screen.poller.refresh()
                screen._tail._record_at = 0
                if screen.record and screen.record.get("status") == "finished" and screen.progress.get("step") == 30:
                    break
            await pilot.pause()
            assert screen.record["status"] == "finished"
            assert "step 30/30" in text_of(screen.query_one("#dash-summary"))
            assert screen.query_one("#plot-loss", Plot).series[0].points[-1] == (30, 1 / 30)
            assert screen.query_one("#plot-wer", Plot).series[0].points == [(30, 0.5)]
            assert screen.result["status"] == "finished"
    finally:
        cleanup(ws)


@pytest.mark.asyncio
async def test_wide_terminal_shows_curves_and_memory_beside_the_log(ws):
    rid = make_run(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=(160, 45)) as pilot:
        screen = await open_dashboard(app, pilot, rid)
        assert screen.has_class("-wide") and screen.query_one("#log-side").display
        assert screen.query_one("#side-wer", Plot).series[0].points == [(20, 0.42), (40, 0.27)]
        assert "6.8/12.0 GiB" in text_of(screen.query_one("#side-gpu"))
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert not screen.has_class("-wide") and not screen.query_one("#log-side").display


def test_dashboard_wide_snapshot(ws, snap_compare):
    assert snap_compare(_snap_app(ws), terminal_size=(160, 45), run_before=_snap_before([]))


@pytest.mark.asyncio
async def test_header_names_the_slurm_job(ws):
    store = Store(ws)
    rid = store.add_run({"model": "whisper-tiny", "method": "lora", "dataset": "d"})
    store.update_run(rid, status="cancelled", slurm_job_id="4711", status_reason="cancelled at step 3")
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_dashboard(app, pilot, rid)
        summary = text_of(screen.query_one("#dash-summary"))
        assert "slurm job 4711" in summary and "whisper-tiny lora on d" in summary
