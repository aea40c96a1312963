"""Models screen at 80x24: live estimates, GPU picker, filter, keyboard navigation."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Input, Select, Static

from engine.catalog import load_catalog
from engine.gpus import Gpu
from engine.config import DEFAULT_LORA_RANK
from engine.store import Store
from tui.app import VoxtuneApp
from tui.screens import models as models_screen
from tui.screens.models import ModelsScreen

SIZE = (80, 24)
A100 = Gpu(name="NVIDIA A100-SXM4-80GB", vendor="nvidia", index=0, total_gb=85.0, used_gb=1.0, free_gb=84.0,
           util_percent=0.0, arch="sm_80", source="nvml")


@pytest.fixture(autouse=True)
def no_gpu(monkeypatch):
    """This machine has no GPU; pin it so results do not depend on where tests run."""
    monkeypatch.setattr(models_screen, "detect", lambda: [])


async def open_models(app, pilot) -> ModelsScreen:
    await pilot.press("2")
    await pilot.pause()
    assert isinstance(app.screen, ModelsScreen)
    return app.screen


def cell(screen, model: str, column: str) -> str:
    table = screen.query_one("#models-table", DataTable)
    return str(table.get_cell(model, column))


def detail(screen) -> str:
    return str(screen.query_one("#models-detail", Static).render())


@pytest.mark.asyncio
async def test_lists_every_model_with_fits_for_the_default_gpu(ws):
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_models(app, pilot)
        table = screen.query_one("#models-table", DataTable)
        assert table.row_count == len(load_catalog())
        assert "RX 7700 XT" in screen.gpus[screen.query_one("#gpu-select", Select).value].name
        assert cell(screen, "whisper-small", "full").startswith("✓")
        assert cell(screen, "qwen2-audio-7b-instruct", "full").startswith("✗")
        # QLoRA fits 12 GiB for Voxtral Mini and (tight) for Qwen2-Audio: the quantised base keeps
        # its embeddings and head 16-bit (engine.loading.prepare_kbit)
        assert cell(screen, "voxtral-mini-3b", "qlora")[0] in "✓~"
        assert cell(screen, "qwen2-audio-7b-instruct", "qlora")[0] in "✓~"
        assert table.get_cell("whisper-small", "full").style == "green"
        # detail pane follows the cursor: arrows and j/k
        assert "whisper-small" in detail(screen)
        await pilot.press("j", "j")
        assert "whisper-large-v3" in detail(screen) and "LoRA" in detail(screen)
        await pilot.press("k")
        assert detail(screen).startswith("whisper-medium")
        await pilot.press("down")
        assert detail(screen).startswith("whisper-large-v3")
        for term in ("weights", "activations", "logits", "overhead", "total", "max batch"):
            assert term in detail(screen)


@pytest.mark.asyncio
async def test_batch_and_audio_update_estimates_live(ws):
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_models(app, pilot)
        before = float(cell(screen, "whisper-small", "full").split()[1])
        await pilot.press("b", "backspace", "1", "6", "enter")
        after = float(cell(screen, "whisper-small", "full").split()[1])
        assert screen.cfg.batch == 16 and after > before
        assert screen.focused is screen.query_one("#models-table")
        vox = float(cell(screen, "voxtral-mini-3b", "qlora").split()[1])
        await pilot.press("a", "backspace", "backspace", "1", "2", "0")
        assert screen.cfg.audio_seconds == 120
        assert float(cell(screen, "voxtral-mini-3b", "qlora").split()[1]) > vox
        await pilot.press("backspace", "backspace", "backspace")  # empty: keeps the last valid value
        assert screen.cfg.audio_seconds == 1  # "1" was the last valid value typed on the way down
        await pilot.press("escape")


@pytest.mark.asyncio
async def test_filter_and_gpu_picker(ws):
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_models(app, pilot)
        await pilot.press("slash", *"voxtral")
        table = screen.query_one("#models-table", DataTable)
        assert table.row_count == 2 and screen.current().name == "voxtral-mini-3b"
        await pilot.press("escape")
        assert screen.focused is table
        screen.query_one("#filter-input", Input).value = "nothing-matches"
        await pilot.pause()
        assert table.row_count == 0 and "no model matches" in detail(screen)
        screen.query_one("#filter-input", Input).value = "whisper-large-v3"
        await pilot.pause()
        assert cell(screen, "whisper-large-v3", "full").startswith("✗")
        await pilot.press("g")  # opens the picker; choose the H100 preset
        h100 = next(i for i, g in enumerate(screen.gpus) if g.key == "h100-80")
        screen.query_one("#gpu-select", Select).value = h100
        await pilot.pause()
        assert screen.gpu_gb == 80 and cell(screen, "whisper-large-v3", "full").startswith("✓")


@pytest.mark.asyncio
async def test_detected_gpu_comes_first(ws, monkeypatch):
    monkeypatch.setattr(models_screen, "detect", lambda: [A100])
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_models(app, pilot)
        assert screen.gpus[0] is A100 and screen.query_one("#gpu-select", Select).value == 0
        assert screen.gpu_gb == 85.0


@pytest.mark.asyncio
async def test_measured_peak_shown_next_to_estimate_and_enter_opens_new_run(ws):
    Store(ws).add_measurement({"model": "whisper-small", "method": "lora", "batch": 1, "audio_seconds": 30,
                               "lora_rank": DEFAULT_LORA_RANK, "precision": "auto", "gradient_checkpointing": True,
                               "optimizer": "adamw", "device": "AMD Radeon RX 7700 XT",
                               "peak_allocated_gb": 1.6, "peak_reserved_gb": 2.3, "estimate_gb": 1.9, "run_id": "r1"})
    app = VoxtuneApp(ws)
    opened = []
    app.open_new_run = lambda model=None, clone_of=None, method=None, gpu=None: opened.append((model, method))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_models(app, pilot)
        assert "measured" in detail(screen) and "2.3" in detail(screen)
        await pilot.press("enter")
        assert opened == [("whisper-small", "full")]
        await pilot.press("j", "j", "j", "j", "j", "j")  # qwen-audio: not trainable here
        assert screen.current().name == "qwen-audio"
        await pilot.press("enter")
        assert len(opened) == 1


def test_models_screen_snapshot(ws, snap_compare, monkeypatch):
    async def run_before(pilot):
        await pilot.press("2")
        pilot.app.sub_title = "~/voxtune"  # the temp workspace path differs per run
        await pilot.press("j", "j")
        await pilot.pause()

    assert snap_compare(VoxtuneApp(ws), terminal_size=SIZE, run_before=run_before)


def _names(screen) -> set[str]:
    return {k.value for k in screen.query_one("#models-table", DataTable).rows}


@pytest.mark.asyncio
async def test_w_and_o_filter_five_minute_audio_and_rewrite_or_delete(ws):
    entries = load_catalog()
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_models(app, pilot)
        await pilot.press("w")
        assert _names(screen) == {e.name for e in entries if e.takes_whole(300)}
        assert "qwen3-asr-0.6b" in _names(screen) and "whisper-small" not in _names(screen)
        assert "5-min audio whole" in screen.sub_title
        await pilot.press("w", "o")  # 5-minute filter off; output: can rewrite
        assert _names(screen) == {e.name for e in entries if e.family != "ctc"}
        await pilot.press("o")  # can only delete
        assert _names(screen) == {e.name for e in entries if e.family == "ctc"} >= {"w2v-bert-2.0", "parakeet-ctc-0.6b"}
        assert "can only delete" in screen.sub_title and "monotonic" in detail(screen)
        await pilot.press("w")  # no CTC model takes 5 minutes whole
        assert not _names(screen) and "no model matches" in detail(screen)
        await pilot.press("w", "o")
        assert len(_names(screen)) == len(entries) and "filter" not in screen.sub_title


@pytest.mark.asyncio
async def test_no_gpu_says_preset_offers_the_cpu_and_the_choice_carries_into_the_form(ws):
    from engine.datasets import ensure_demo
    from tui.screens.new_run import NewRunScreen
    from tui_helpers import wait_for

    ensure_demo(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_models(app, pilot)
        assert str(screen.query_one("#gpu-label").render()) == "preset"
        assert "no GPU detected" in screen.sub_title
        select = screen.query_one("#gpu-select", Select)
        labels = [str(label) for label, _ in select._options]
        assert any(label.startswith("this machine (CPU)") for label in labels)
        assert all(label.endswith("preset") for label, g in zip(labels, screen.gpus) if not g.detected)
        cpu = next(i for i, g in enumerate(screen.gpus) if g.vendor == "cpu")
        select.value = cpu
        await pilot.pause()
        assert str(screen.query_one("#gpu-label").render()) == "CPU"
        a100 = next(i for i, g in enumerate(screen.gpus) if g.key and "a100-80" in g.key)
        select.value = a100
        await pilot.pause()
        screen.query_one("#models-table", DataTable).focus()
        await pilot.press("enter")  # whisper-small
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen) and app.screen._gpus, what="form")
        form = app.screen
        await wait_for(pilot, lambda: form.selected_gpu[1] is not None and "A100" in form.selected_gpu[1].name,
                       what="A100 carried into the form")
        assert "80" in form.selected_gpu[0]
        await pilot.press("escape")
        # the CPU carries too (the form does not list it of its own accord)
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen))
        select.value = cpu
        await pilot.pause()
        screen.query_one("#models-table", DataTable).focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen) and app.screen.selected_gpu[1] is not None
                       and app.screen.selected_gpu[1].vendor == "cpu", what="CPU carried into the form")


@pytest.mark.asyncio
async def test_estimate_only_models_are_starred_and_past_runs_peaks_are_shown(ws):
    Store(ws).add_measurement({"model": "whisper-small", "method": "lora", "batch": 8, "audio_seconds": 12.5,
                               "lora_rank": DEFAULT_LORA_RANK, "precision": "auto", "gradient_checkpointing": True,
                               "optimizer": "adamw", "device": "AMD Radeon RX 7700 XT",
                               "peak_allocated_gb": 5.0, "peak_reserved_gb": 6.4, "estimate_gb": 6.0,
                               "run_id": "1206-0900-whisper-small-lora", "time": 1.0})
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_models(app, pilot)
        untrainable = [e for e in load_catalog() if not e.trainable]
        assert untrainable
        for e in untrainable:
            assert cell(screen, e.name, "model") == e.name + "*"
        assert cell(screen, "whisper-small", "model") == "whisper-small"
        # a run of another set-up than the one on screen: its peak is still shown
        text = detail(screen)
        assert "past run 1206-0900-whisper-small-lora: 6.4 GiB measured (lora, batch 8, 12.5 s audio" in text


@pytest.mark.asyncio
async def test_small_terminal_shows_several_models_and_whole_names(ws):
    app = VoxtuneApp(ws)
    async with app.run_test(size=(60, 20)) as pilot:
        screen = await open_models(app, pilot)
        await pilot.pause()
        table = screen.query_one("#models-table", DataTable)
        assert table.size.height - 1 >= 5  # rows of models under the heading
        assert table.columns[next(k for k in table.columns if k.value == "model")].width >= len("qwen2-audio-7b-instruct*")


def test_models_screen_snapshot_60x20(ws, snap_compare):
    async def run_before(pilot):
        await pilot.press("2")
        pilot.app.sub_title = "~/voxtune"
        await pilot.pause()

    assert snap_compare(VoxtuneApp(ws), terminal_size=(60, 20), run_before=run_before)


@pytest.mark.asyncio
async def test_every_gpu_label_fits_the_picker_with_its_memory(ws, monkeypatch):
    """At 80 columns the picker box is 34 wide: each label (a detected card, the CPU, every
    preset) shows whole there, memory included; the open list is as wide as its longest."""
    from textual.widgets._select import SelectOverlay

    from tui.screens.models import gpu_label

    monkeypatch.setattr(models_screen, "detect", lambda: [A100])
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_models(app, pilot)
        select = screen.query_one("#gpu-select", Select)
        room = select.content_region.width - 2  # the ▼ and its space
        labels = [gpu_label(g) for g in screen.gpus]
        assert labels[0] == "#0 A100-SXM4-80GB (85.0 GiB)"
        assert "RTX 3060 12GB (12 GiB) preset" in labels  # was cut to "NVIDIA GeForce RTX 3060 12GB"
        assert all(len(label) <= room for label in labels), [x for x in labels if len(x) > room]
        overlay = select.query_one(SelectOverlay)
        assert overlay.styles.width.value >= max(len(label) for label in labels) + 2
