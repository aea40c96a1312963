"""The new-run form's data-aware defaults: the schedule follows the dataset, the estimate line
says why, and a small evaluation set gets a visible warning that --eval-dataset removes."""

from __future__ import annotations

import pytest
from textual.widgets import Input
from tui_helpers import wait_for

from engine.datasets import ensure_demo
from tui.app import VoxtuneApp
from tui.screens.new_run import NewRunScreen

SIZE = (80, 24)


def estimate(app) -> str:
    return str(app.screen.query_one("#estimate").render())


@pytest.mark.asyncio
async def test_form_fills_the_data_aware_schedule_and_warns_about_a_tiny_validation_split(ws):
    ensure_demo(ws)  # 10 train / 2 validation / 2 test clips
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen), what="form")
        app.screen.query_one("#model", Input).focus()
        await pilot.press(*"whisper-small")
        await wait_for(pilot, lambda: "Defaults:" in estimate(app), what="defaults note")
        text = estimate(app)
        steps = app.screen.query_one("#max_steps", Input).value
        assert steps and int(steps) < 300 and f"-> {steps} steps" in text
        assert "LoRA on all linear layers" in text
        assert "evaluates on 2 clip(s) of demo:validation (< 5)" in text
        app.screen.query_one("#eval_dataset", Input).value = "demo:test"
        await wait_for(pilot, lambda: "demo:test (< 5)" in estimate(app), what="warning for the eval dataset")
