"""An eval-only run is labelled as an evaluation everywhere (Runs, History, Compare, the
dashboard header, `runs show`), never as "lora on meet" or "step 0/None", and every WER is
shown with the split it was measured on (issue 12)."""

from __future__ import annotations

import json

import pytest

from engine import compare, queue
from engine.runfiles import RunFiles, append_jsonl
from engine.store import Store
from tui_helpers import wait_for
from tui.app import VoxtuneApp
from tui.cli import main
from tui.widgets.run_table import run_row

SIZE = (80, 24)


def eval_run(ws, split: str = "test", wer: float = 0.31) -> str:
    """A real `queue add --eval-only` run, finished with the one evaluation (at step 0, no
    max_steps) an eval-only worker writes."""
    rid = queue.add(ws, model="whisper-small", dataset="demo", eval_only=True, split=split)
    files = RunFiles(ws.run_dir(rid))
    append_jsonl(files.metrics, {"kind": "eval", "step": 0, "wer": wer, "cer": 0.1, "time": 1.0})
    Store(ws).set_status(rid, "finished", metrics={"wer": wer, "cer": 0.1})  # as the engine records it
    return rid


def test_cli_queue_add_eval_only_without_method_and_runs_show(ws, capsys):
    assert main(["--home", str(ws.home), "queue", "add", "--eval-only", "--model", "whisper-small", "--dataset",
                 "demo", "--split", "test", "--no-start", "--json"]) == 0
    rid = json.loads(capsys.readouterr().out)["id"]
    assert main(["--home", str(ws.home), "runs", "show", rid, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["eval_only"] is True and out["split"] == "test" and out["method"] == "eval"
    append_jsonl(RunFiles(ws.run_dir(rid)).metrics, {"kind": "eval", "step": 0, "wer": 0.25, "time": 1.0})
    assert main(["--home", str(ws.home), "runs", "show", rid]) == 0
    text = capsys.readouterr().out
    assert "evaluation only" in text and "test split" in text and "last evaluation (test split): wer 0.250" in text
    assert "None" not in text and "step 0" not in text
    assert main(["--home", str(ws.home), "runs", "ls"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(rid))
    assert "evaluation" in line and "0.250 test" in line and "None" not in line
    assert main(["--home", str(ws.home), "runs", "ls", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["method"] == "eval" and row["split"] == "test" and row["eval_only"] is True


def test_summaries_and_rows_carry_the_split(ws):
    rid = eval_run(ws)
    rec = Store(ws).get_run(rid)
    row = compare.summarize(rec)
    assert row["method"] == "eval" and row["split"] == "test" and row["eval_only"] is True
    train = compare.summarize({"id": "x", "method": "lora", "status": "finished"})
    assert train["method"] == "lora" and train["split"] == "validation"
    assert compare.filter_rows([row, train], "split=test") == [row]

    r = run_row(rec, {"step": 0, "max_steps": None, "wer": 0.31})
    assert r.cells[2] == "evaluation" and r.cells[3] == "31.0 test"
    assert "evaluation only" in r.detail and "(test split)" in r.detail and "WER 31.0% (test)" in r.detail
    assert "None" not in r.detail and "step 0" not in r.detail and "· eval" not in r.detail.replace("evaluation", "")
    trained = run_row({"id": "t", "method": "lora", "model": "m", "dataset": "d", "status": "running"},
                      {"step": 4, "max_steps": 8, "wer": 0.2})
    assert trained.cells[3] == "20.0" and "WER 20.0% (validation)" in trained.detail


@pytest.mark.asyncio
async def test_runs_history_compare_and_dashboard_label_it_an_evaluation(ws):
    from dashboard_fixtures import make_run
    from tui.screens.dashboard import DashboardScreen
    from tui.screens.history import CompareScreen, HistoryScreen
    from tui.widgets.run_list import RunList

    rid = eval_run(ws)
    trained = make_run(ws, run_id="1125-0412-whisper-small-lora")
    app = VoxtuneApp(ws)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: rid in str(app.screen.query_one("#run-detail").render())
                       or app.screen.query_one("#runs-table").row_count == 2, what="runs")
        table = app.screen.query_one("#runs-table")
        assert str(table.get_cell(rid, "progress")) == "evaluation"
        assert str(table.get_cell(rid, "wer")) == "31.0 test"
        await pilot.press("4")
        screen = app.screen
        assert isinstance(screen, HistoryScreen)
        await wait_for(pilot, lambda: screen.loaded, what="history")
        rows = {r["id"]: r for r in screen.query_one(RunList).rows}
        assert rows[rid]["method"] == "eval" and screen._format_cell("wer", rows[rid]) == "31.0% test"
        assert screen._format_cell("wer", rows[trained]).endswith("%")  # validation: untagged
        screen.marked = {rid, trained}
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.comparison is not None,
                       what="comparison")
        table = dict(app.screen.comparison.metric_table())
        assert sorted(table["Method"]) == ["eval", "lora"] and sorted(table["Split"]) == ["test", "validation"]
        await pilot.press("escape")
        await pilot.press("1")
        await pilot.pause()
        app.push_screen(DashboardScreen(rid))
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen)
                       and "WER" in str(app.screen.query_one("#dash-summary").render()), what="dashboard")
        summary = str(app.screen.query_one("#dash-summary").render())
        assert "evaluation on demo (test)" in summary and "WER 31.0% test" in summary
        assert "None" not in summary and "step 0" not in summary
