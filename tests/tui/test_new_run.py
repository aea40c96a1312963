"""The new-run form: defaults per model and method, checks as you type, the VRAM estimate
for the chosen GPU, and submit through the real engine.queue (and the real daemon)."""

from __future__ import annotations

import pytest
from textual.widgets import Button, Input, Select

from engine import catalog, config, queue
from engine.datasets import ensure_demo
from engine.store import Store
from tui.app import VoxtuneApp
from tui.screens.new_run import Fit, NewRunScreen, estimate_text, parse_form, parse_number
from tui.screens.runs import RunsScreen
from tui_helpers import add_run, wait_for

SIZE = (80, 24)
RX7700 = "AMD Radeon RX 7700 XT"


# -- pure -------------------------------------------------------------------------------------
def test_parse_number_names_what_is_wrong():
    assert parse_number("1_000", "int") == (1000, None)
    assert parse_number("3e-4", "float") == (3e-4, None)
    assert parse_number("0", "int0") == (0, None)
    assert parse_number("", "int")[1] == "a value is required"
    assert parse_number("2.5", "int")[1] == "expected a whole number, got '2.5'"
    assert parse_number("0", "int")[1] == "must be > 0, got 0"
    assert parse_number("1", "frac")[1] == "must be in [0, 1), got 1"
    assert parse_number("-3", "anyint") == (-3, None)


def test_parse_form_ignores_lora_fields_for_full_fine_tunes():
    raw = {"max_steps": "10", "batch_size": "x", "grad_accum": "1", "lr": "1e-4", "warmup_steps": "0",
           "eval_every": "5", "save_every": "5", "seed": "1", "lora_rank": "", "lora_alpha": "", "lora_dropout": "",
           "priority": "0", "epochs": "", "max_new_tokens": "440", "lora_targets": "", "language": "", "gpus": "1"}
    values, errors = parse_form(raw, "full")
    assert errors == {"batch_size": "Batch: expected a whole number, got 'x'"}
    assert "lora_rank" not in values and values["lr"] == 1e-4
    _, errors = parse_form(raw, "lora")
    assert {"lora_rank", "lora_alpha", "lora_dropout"} <= set(errors)


def test_estimate_text_warns_loudly_when_it_does_not_fit():
    ok = estimate_text(Fit(7.9, RX7700, 12, "fits", 6)).plain
    assert "7.9 GiB of 12 GiB" in ok and "✓ fits" in ok and "largest batch 6" in ok
    no = estimate_text(Fit(48.8, RX7700, 12, "no", 0, recommendation="LoRA r=32, batch 8")).plain
    assert "DOES NOT FIT" in no and "LoRA r=32, batch 8" in no
    waits = estimate_text(Fit(7.9, RX7700, 12, "fits", 6, free_gb=5.0)).plain
    assert "only 5.0 GiB free now" in waits


# -- the screen ---------------------------------------------------------------------------------
def form(app) -> NewRunScreen:
    assert isinstance(app.screen, NewRunScreen)
    return app.screen


def value(app, name):
    return app.screen.query_one(f"#{name}").value


def estimate(app) -> str:
    return str(app.screen.query_one("#estimate").render())


def errors(app) -> str:
    return str(app.screen.query_one("#form-errors").render())


async def open_form(app, pilot, model: str | None = None):
    await pilot.press("n")
    await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen), what="form")
    await wait_for(pilot, lambda: form(app)._gpus, what="GPU list")
    if model is not None:
        form(app).query_one("#model", Input).focus()
        await pilot.press(*model)
    return form(app)


@pytest.mark.asyncio
async def test_defaults_follow_model_and_method(ws):
    ensure_demo(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await open_form(app, pilot, "whisper-small")
        expected = config.defaults(catalog.get_model("whisper-small"), "lora")
        await wait_for(pilot, lambda: value(app, "lr") == f"{expected['lr']:g}", what="lora defaults")
        assert value(app, "batch_size") == str(expected["batch_size"])
        assert value(app, "lora_rank") == str(expected["lora_rank"])
        assert value(app, "dataset") == "demo"
        assert value(app, "gpu") == 0  # the first entry: this machine's GPU or the first preset

        app.screen.query_one("#batch_size", Input).value = "2"  # a user edit survives method changes
        app.screen.query_one("#method", Select).value = "full"
        full = config.defaults(catalog.get_model("whisper-small"), "full")
        await wait_for(pilot, lambda: value(app, "lr") == f"{full['lr']:g}", what="full defaults")
        assert value(app, "batch_size") == "2"
        assert app.screen.query_one("#lora_rank", Input).disabled

        app.screen.query_one("#method", Select).value = "qlora"
        await wait_for(pilot, lambda: value(app, "optimizer") == "adamw8bit", what="qlora defaults")
        assert not app.screen.query_one("#lora_rank", Input).disabled


@pytest.mark.asyncio
async def test_fields_are_checked_as_you_type(ws):
    ensure_demo(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await open_form(app, pilot, "whisper-small")
        await wait_for(pilot, lambda: value(app, "lr") != "", what="defaults")
        await wait_for(pilot, lambda: "Estimate: ≈" in estimate(app), what="estimate")
        batch = app.screen.query_one("#batch_size", Input)
        batch.focus()
        await pilot.press("end", *["backspace"] * 3, "x")
        await wait_for(pilot, lambda: "Batch: expected a whole number" in errors(app), what="batch error")
        assert batch.has_class("-invalid")
        assert app.screen.query_one("#submit", Button).disabled
        await pilot.press("backspace", "1")
        await wait_for(pilot, lambda: "Batch" not in errors(app), what="error cleared")
        assert not batch.has_class("-invalid")

        # the engine's own validation: an unknown model is named with close matches
        model = app.screen.query_one("#model", Input)
        model.value = "whisper-smal"
        await wait_for(pilot, lambda: "model:" in errors(app), what="unknown model")
        assert "whisper-small" in errors(app)
        assert model.has_class("-invalid")


@pytest.mark.asyncio
async def test_estimate_for_the_chosen_gpu_and_a_clear_warning(ws):
    ensure_demo(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_form(app, pilot)
        labels = [label for label, _ in screen._gpus]
        rx = next(i for i, label in enumerate(labels) if label.startswith(RX7700))
        h100 = next(i for i, label in enumerate(labels) if "H100" in label)
        screen.query_one("#gpu", Select).value = rx
        screen.query_one("#model", Input).value = "whisper-large-v3"
        await wait_for(pilot, lambda: value(app, "lr") != "", what="defaults")
        screen.query_one("#method", Select).value = "full"
        await wait_for(pilot, lambda: "DOES NOT FIT" in estimate(app), what="warning")
        assert f"of 12 GiB on {RX7700}" in estimate(app)
        screen.query_one("#gpu", Select).value = h100
        await wait_for(pilot, lambda: "of 80 GiB on NVIDIA H100" in estimate(app), what="H100 estimate")
        screen.query_one("#method", Select).value = "qlora"
        await wait_for(pilot, lambda: "✓ fits" in estimate(app), what="qlora fits an H100")
        assert "largest batch" in estimate(app)

        # several cards: the estimate is per card, with the strategy; nonsense names the field
        screen.query_one("#gpu", Select).value = rx
        screen.query_one("#method", Select).value = "full"
        await wait_for(pilot, lambda: "DOES NOT FIT" in estimate(app), what="full on one RX 7700 XT")
        gpus = screen.query_one("#gpus", Input)
        gpus.value = "8"
        await wait_for(pilot, lambda: f"each of 8 × {RX7700} (fsdp)" in estimate(app), what="per-card estimate")
        gpus.value = "zero"
        await wait_for(pilot, lambda: "GPUs: expected a number or 'all'" in errors(app), what="gpus error")
        assert gpus.has_class("-invalid")


@pytest.mark.asyncio
async def test_open_new_run_from_models_screen_prefills_the_model(ws):
    ensure_demo(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ModelsScreen", what="Models screen")
        app.open_new_run(model="whisper-medium")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen), what="form")
        await wait_for(pilot, lambda: value(app, "model") == "whisper-medium" and value(app, "lr") != "")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, NewRunScreen), what="closed")
    assert Store(ws).list_runs() == []


@pytest.mark.asyncio
async def test_a_fresh_workspace_offers_the_demo_without_opening_datasets(ws):
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await open_form(app, pilot, "whisper-small")
        await wait_for(pilot, lambda: value(app, "dataset") == "demo", what="demo chosen")
        assert "Dataset: none chosen" not in errors(app)


@pytest.mark.asyncio
async def test_no_dataset_says_what_to_do(ws, tmp_path, monkeypatch):
    from engine import datasets

    monkeypatch.setattr(datasets, "DEMO_DIR", tmp_path / "no-demo")  # an install without its demo
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await open_form(app, pilot, "whisper-small")
        await wait_for(pilot, lambda: "Dataset: none chosen" in errors(app), what="dataset error")
        await pilot.press("ctrl+s")
        await pilot.pause(0.2)
        assert isinstance(app.screen, NewRunScreen)
    assert Store(ws).list_runs() == []


@pytest.mark.functional
@pytest.mark.asyncio
async def test_submit_queues_the_run_and_starts_the_engine(ws):
    from engine import daemon

    ensure_demo(ws)
    queue.pause(ws)  # the engine starts, but trains nothing in this test
    app = VoxtuneApp(ws)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await open_form(app, pilot, "whisper-small")
            await wait_for(pilot, lambda: value(app, "lr") != "" and "Estimate: ≈" in estimate(app), what="ready")
            app.screen.query_one("#max_steps", Input).value = "7"
            await wait_for(pilot, lambda: not app.screen.query_one("#submit", Button).disabled)
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: isinstance(app.screen, RunsScreen), timeout=60, what="back home")
            runs = Store(ws).list_runs()
            assert len(runs) == 1 and runs[0]["status"] == "queued" and runs[0]["method"] == "lora"
            run_id = runs[0]["id"]
            assert queue._config(ws, run_id).max_steps == 7
            assert daemon.status(ws)["running"]

            # clone it from the home screen with one change: a new run whose parent is the first
            table = app.screen.query_one("#runs-table")
            await wait_for(pilot, lambda: table.row_count == 1)
            await pilot.press("y")
            await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen) and value(app, "max_steps") == "7")
            app.screen.query_one("#max_steps", Input).value = "9"
            await wait_for(pilot, lambda: not app.screen.query_one("#submit", Button).disabled)
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: len(Store(ws).list_runs()) == 2, timeout=60, what="clone queued")
            clone = next(r for r in Store(ws).list_runs() if r["id"] != run_id)
            assert clone["parent"] == run_id and queue._config(ws, clone["id"]).max_steps == 9
    finally:
        daemon.stop(ws)


@pytest.mark.asyncio
async def test_engine_refusal_keeps_the_form_open(ws):
    """A failed run cannot be cloned onto a dataset that was removed: the form says why."""
    ensure_demo(ws)
    add_run(ws, "1125-0100-whisper-small-lora", "failed", dataset="gone")
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        app.open_new_run(clone_of="1125-0100-whisper-small-lora")
        await wait_for(pilot, lambda: isinstance(app.screen, NewRunScreen) and value(app, "model") == "whisper-small")
        # the cloned config names dataset "gone", which the Select does not offer: demo is chosen
        assert value(app, "dataset") == "demo"
    assert len(Store(ws).list_runs()) == 1


def test_snapshot_form(ws, snap_compare):
    ensure_demo(ws)
    app = VoxtuneApp(ws)

    async def ready(pilot):
        app.sub_title = "~/voxtune"
        screen = await open_form(app, pilot)
        rx = next(i for i, (label, _) in enumerate(screen._gpus) if label.startswith(RX7700))
        screen.query_one("#gpu", Select).value = rx  # not this machine's GPU: the same everywhere
        screen.query_one("#model", Input).value = "whisper-small"
        for field in screen.query(Input):
            field.cursor_blink = False  # a blinking cursor would make the picture depend on timing
        await wait_for(pilot, lambda: value(app, "lr") != "" and "Estimate: ≈" in estimate(app), what="estimate")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


@pytest.mark.asyncio
async def test_remote_code_is_off_by_default_and_warns_when_switched_on(ws):
    ensure_demo(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await open_form(app, pilot, "whisper-small")
        box = app.screen.query_one("#trust_remote_code")
        assert box.value is False
        box.focus()
        await pilot.press("space")
        await wait_for(pilot, lambda: any("Python code" in n.message for n in app._notifications), what="warning")
        options, _ = form(app).options()
        assert options["trust_remote_code"] is True


@pytest.mark.asyncio
async def test_unknown_model_is_named_like_the_cli_does(ws):
    """A fresh form with an unknown model: ctrl+s names the model (with close matches), marks
    only the model field, and does not blame the fields its defaults would have filled."""
    ensure_demo(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await open_form(app, pilot, "whisper-smal")
        await pilot.pause(0.5)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "unknown model" in errors(app), what="unknown model")
        text = errors(app)
        assert "did you mean whisper-small" in text
        assert "Steps" not in text and "more fields" not in text
        model = app.screen.query_one("#model", Input)
        assert model.has_class("-invalid") and model.has_focus
        assert [w.id for w in app.screen.query(".-invalid")] == ["model"]
        # correcting it fills the defaults and clears the error
        await pilot.press("l")
        await wait_for(pilot, lambda: value(app, "lr") != "" and "unknown model" not in errors(app), what="fixed")
        assert not model.has_class("-invalid")
    assert Store(ws).list_runs() == []


# -- 80 columns, offline --------------------------------------------------------------------
@pytest.mark.asyncio
async def test_uncached_model_offline_still_gets_the_analytical_estimate(ws, monkeypatch, tmp_path):
    """A catalog model not in the hub cache while offline is refused (as `queue add` does),
    and the form still says how much memory it would take: the estimator needs the catalog's
    counts, not the weights."""
    from tui.screens.new_run import NOT_DOWNLOADED

    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf"))  # conftest's cache holds the catalog
    ensure_demo(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await open_form(app, pilot, "whisper-small")
        await wait_for(pilot, lambda: "not in the Hugging Face cache" in errors(app), what="the refusal")
        await wait_for(pilot, lambda: "Estimate: ≈" in estimate(app), what="the analytical estimate")
        assert NOT_DOWNLOADED in " ".join(estimate(app).split())
        assert app.screen.query_one("#submit", Button).disabled


@pytest.mark.asyncio
async def test_without_an_estimate_the_form_says_why(ws):
    ensure_demo(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await open_form(app, pilot, "no-such-model")
        await wait_for(pilot, lambda: "unknown model" in errors(app), what="unknown model")
        await wait_for(pilot, lambda: "none for this model" in estimate(app), what="why no estimate")


@pytest.mark.asyncio
@pytest.mark.parametrize("eval_only", [False, True])
async def test_gpu_label_is_whole_at_80_columns(ws, eval_only):
    """The GPU select has a row of its own (the eval split shares the method's row), so the
    longest label -- a detected card's -- shows whole in a training and an eval-only form."""
    ensure_demo(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_form(app, pilot, "whisper-small")
        await wait_for(pilot, lambda: value(app, "lr") != "", what="defaults")
        screen.query_one("#eval_only").value = eval_only
        await wait_for(pilot, lambda: screen.query_one("#split").display == eval_only, what="split shown")
        await pilot.pause(0.1)
        longest = max(len("NVIDIA GeForce RTX 4090 (24 GiB, this machine)"), *(len(label) for label, _ in screen._gpus))
        gpu = screen.query_one("#gpu", Select)
        assert gpu.content_region.width >= longest + 2  # the label and the ▼
        if eval_only:  # an evaluation trains no adapter: the LoRA fields are hidden, not only greyed
            assert not any(screen.query_one(f"#{n}").display for n in ("lora_rank", "lora_targets"))


@pytest.mark.asyncio
async def test_empty_form_blames_only_the_model(ws):
    """Before a model is given, the fields its defaults fill are empty: ctrl+s names the model
    alone (not "Accum: a value is required … and 12 more"), the estimate line says what to do,
    and the eval split (an eval-only field) is hidden as in any training form."""
    ensure_demo(ws)
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_form(app, pilot)
        assert not screen.query_one("#split").display
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert errors(app) == "Model: required (a catalog name, hub id or local folder)"
        assert screen.focused is screen.query_one("#model")
        assert "give a model first" in estimate(app)
        assert not screen.query(".-invalid").exclude("#model")
