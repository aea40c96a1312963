"""Worst clips with word diffs: the dashboard's Samples tab and History's run detail read
clips.jsonl (every clip's prediction and WER at every evaluation)."""

from __future__ import annotations

import json

import pytest
from dashboard_fixtures import make_run

from engine import clips
from engine.runfiles import RunFiles
from tui.app import VoxtuneApp
from tui.screens.dashboard import DashboardScreen
from tui.screens.history import RunDetailScreen
from tui.widgets.samples import SamplesPanel, WorstClips

SIZE = (80, 24)
ROWS = [{"id": "clip01", "text": "so the meeting moved to thursday"}, {"id": "clip02", "text": "call me back"},
        {"id": "clip03", "text": "see you"}]


def write_clips(ws, rid: str) -> None:
    early = clips.clip_records(ROWS, ["x", "x", "x"], step=20, split="validation", now=1.0)
    late = clips.clip_records(ROWS, ["so um the meeting moved thursday", "call me back", "see you see you see you"],
                              step=40, split="validation", now=2.0)
    RunFiles(ws.run_dir(rid)).clips.write_text("".join(json.dumps(r) + "\n" for r in early + late))


@pytest.mark.asyncio
async def test_dashboard_lists_the_worst_clips_of_the_latest_evaluation(ws):
    rid = make_run(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = DashboardScreen(rid)
        await app.push_screen(screen)
        await screen.poller.refresh()
        await pilot.pause()
        assert not screen.query_one(WorstClips).display  # no per-clip results yet: hidden
        write_clips(ws, rid)
        await screen.poller.refresh()
        await pilot.pause()
        await pilot.press("s")
        widget = screen.query_one(SamplesPanel).query_one(WorstClips)
        assert widget.display and {r["step"] for r in widget.records} == {40}
        body = str(widget.render())
        assert "worst 3 of 3 clips at step 40 (validation split)" in body
        assert body.index("clip03") < body.index("clip01") < body.index("clip02")  # by WER, worst first
        assert "+um" in body and "-to" in body


@pytest.mark.asyncio
async def test_history_detail_lists_the_worst_clips(ws):
    rid = make_run(ws)
    write_clips(ws, rid)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        from engine.store import Store

        detail = RunDetailScreen(Store(ws).get_run(rid))
        await app.push_screen(detail)
        for _ in range(100):
            if detail.detail is not None:
                break
            await pilot.pause(0.05)
        body = str(detail.query_one("#detail-body").render())
        assert "Worst clips" in body and "clip03" in body and "+see" in body
