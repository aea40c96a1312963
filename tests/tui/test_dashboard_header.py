"""The dashboard's header at 80x24: one line per fact, never wrapped (tests/tui/test_dashboard.py
covers the panels)."""

from __future__ import annotations

import pytest

from tui.app import VoxtuneApp
from tui.screens.dashboard import DashboardScreen
from tui_helpers import T0, add_run, wait_for

SIZE = (80, 24)


async def open_dashboard(app, pilot, run_id: str) -> DashboardScreen:
    await pilot.pause(0.2)
    app.push_screen(DashboardScreen(run_id))
    await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen) and app.screen.record, what="dashboard")
    await pilot.pause(0.2)
    return app.screen


@pytest.mark.asyncio
async def test_a_failed_runs_reason_has_a_line_of_its_own(ws):
    run_id = add_run(ws, "1125-0100-voxtral-mini-3b-qlora", "failed", steps=12, model="voxtral-mini-3b",
                     method="qlora", status_reason="out of memory at step 12 (peak 11.6 GB)", finished_at=T0 + 100)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_dashboard(app, pilot, run_id)
        summary = screen.query_one("#dash-summary")
        await wait_for(pilot, lambda: "step 12/100" in str(summary.render()), what="progress")
        lines = str(summary.render()).splitlines()
        assert lines[0] == "failed  voxtral-mini-3b qlora on demo"  # was wrapped by the reason at 80 columns
        assert lines[2] == "out of memory at step 12 (peak 11.6 GB)"
        assert summary.content_region.height == len(lines) == 3  # no line wraps


@pytest.mark.asyncio
async def test_an_eval_only_run_shows_its_recorded_wer(ws):
    """An evaluation's WER comes from its record when metrics.jsonl has no eval line."""
    run_id = add_run(ws, "1125-0500-whisper-small-eval", "finished", eval_only=True, method=None, split="test",
                     metrics={"wer": 0.4}, finished_at=T0 + 500)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_dashboard(app, pilot, run_id)
        summary = screen.query_one("#dash-summary")
        await wait_for(pilot, lambda: "WER 40.0% test" in str(summary.render()), what="recorded WER")
