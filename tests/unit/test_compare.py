"""engine.compare: summaries, filtering, sorting, comparison and export, on real run files."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tui"))
from dashboard_fixtures import T0, make_run  # noqa: E402

from engine import compare  # noqa: E402
from engine.compare import CompareError  # noqa: E402
from engine.store import Store  # noqa: E402


def rec(**kw):
    base = {"id": "r", "model": "whisper-small", "method": "lora", "dataset": "meetings", "status": "finished"}
    base.update(kw)
    return base


def test_summarize_flattens_record_metrics_and_memory():
    row = compare.summarize(rec(
        metrics={"wer": 0.2, "cer": 0.1, "eval_loss": 1.1}, best={"wer": 0.18, "step": 30},
        peak_memory={"device": "cuda:0", "allocated_gb": 5.0, "reserved_gb": 5.5},
        started_at=100.0, finished_at=400.0, estimate_gb=6.0,
    ))
    assert row["wer"] == 0.2 and row["best_wer"] == 0.18 and row["cer"] == 0.1
    assert row["peak_gb"] == 5.5  # reserved beats allocated: it is what the allocator held
    assert row["duration_s"] == 300.0 and row["estimate_gb"] == 6.0


def test_summarize_running_and_queued_duration():
    assert compare.summarize(rec(status="running", started_at=100.0), now=160.0)["duration_s"] == 60.0
    assert compare.summarize(rec(status="queued"))["duration_s"] is None
    assert compare.peak_gb({"rss_gb": 2.0}) == 2.0  # CPU-only runs report process RSS


def test_filter_by_fields_words_and_alternatives():
    rows = [
        compare.summarize(rec(id="a", model="whisper-small", method="lora", status="finished")),
        compare.summarize(rec(id="b", model="whisper-base", method="full", status="failed")),
        compare.summarize(rec(id="c", model="w2v-bert-2.0", method="full", status="finished", dataset="calls")),
    ]
    ids = lambda text: [r["id"] for r in compare.filter_rows(rows, text)]  # noqa: E731
    assert ids("model=whisper") == ["a", "b"]
    assert ids("method=full status=finished") == ["c"]
    assert ids("status=finished,failed model:WHISPER") == ["a", "b"]
    assert ids("calls") == ["c"]
    assert ids("") == ["a", "b", "c"]
    with pytest.raises(CompareError, match="unknown filter field 'lr'.*model, method, dataset, status"):
        compare.parse_filter("lr=1e-4")


def test_sort_missing_values_last_both_ways():
    rows = [{"id": "a", "wer": 0.3}, {"id": "b", "wer": None}, {"id": "c", "wer": 0.1}]
    assert [r["id"] for r in compare.sort_rows(rows, "wer")] == ["c", "a", "b"]
    assert [r["id"] for r in compare.sort_rows(rows, "wer", reverse=True)] == ["a", "c", "b"]
    assert [r["id"] for r in compare.sort_rows(rows, "id", reverse=True)] == ["c", "b", "a"]
    with pytest.raises(CompareError, match="cannot sort by 'nope'"):
        compare.sort_rows(rows, "nope")


def test_formatting():
    assert compare.fmt_value("wer", 0.1234) == "12.3%"
    assert compare.fmt_value("wer", 1.5) == "150.0%"  # WER can pass 100%
    assert compare.fmt_value("duration_s", 3725) == "1h02m"
    assert compare.fmt_value("duration_s", 75) == "1m15s"
    assert compare.fmt_value("peak_gb", 5.54) == "5.5"
    assert compare.fmt_value("eval_loss", None) == "-"


def test_run_detail_reads_run_files(ws):
    rid = make_run(ws, wer_scale=1.0)
    d = compare.run_detail(ws, Store(ws).require_run(rid))
    assert d["row"]["wer"] == pytest.approx(0.27)
    assert d["row"]["best_wer"] == pytest.approx(0.27)
    assert d["config"]["lora_rank"] == 16 and d["row"]["estimate_gb"] == 6.2
    assert [s for s, _ in d["curves"]["wer"]] == [20, 40]
    assert len(d["curves"]["loss"]) == 8
    assert set(d["samples"]) == {"clip03", "clip07"}
    assert d["samples"]["clip03"]["step"] == 40  # the final prediction, not the first


def test_run_detail_of_a_run_without_files(ws):
    store = Store(ws)
    rid = store.add_run({"model": "whisper-tiny", "method": "lora", "dataset": "d"})
    d = compare.run_detail(ws, store.require_run(rid))
    assert d["samples"] == {} and d["curves"]["wer"] == [] and d["row"]["wer"] is None


def _comparison(ws):
    a = make_run(ws, wer_scale=1.0)
    b = make_run(ws, model="whisper-base", method="full", wer_scale=1.5, t0=T0 + 60, lora_rank=8)
    store = Store(ws)
    return compare.load_comparison(ws, [store.require_run(a), store.require_run(b)]), a, b


def test_comparison_tables(ws):
    comp, a, b = _comparison(ws)
    table = dict(comp.metric_table())
    assert table["WER"] == ["27.0%", "40.5%"]
    assert table["Method"] == ["lora", "full"]
    diffs = dict(comp.config_differences())
    assert diffs["lora_rank"] == ["16", "8"] and diffs["model"] == ["whisper-small", "whisper-base"]
    assert "run_id" not in diffs and "batch_size" not in diffs
    sid, ref, preds = comp.sample_table()[0]
    assert sid == "clip03" and ref.startswith("so the meeting") and len(preds) == 2


def test_compare_needs_two_runs(ws):
    rid = make_run(ws)
    with pytest.raises(CompareError, match="at least two runs"):
        compare.load_comparison(ws, [Store(ws).require_run(rid)])


def test_export_markdown_and_csv(ws):
    comp, a, b = _comparison(ws)
    md_path = compare.export(ws, comp, "md", when=T0)
    md = md_path.read_text()
    assert md_path.parent == ws.home / "exports" and md_path.suffix == ".md"
    assert f"| | {a} | {b} |" in md.replace("|  |", "| |")
    assert "| WER | 27.0% | 40.5% |" in md
    assert "| lora_rank | 16 | 8 |" in md
    assert "### clip03" in md and "| reference | so the meeting moved" in md
    again = compare.export(ws, comp, "md", when=T0)
    assert again != md_path and md_path.exists()  # never overwrites an earlier export

    rows = list(csv.DictReader(io.StringIO(compare.export(ws, comp, "csv").read_text())))
    assert [r["id"] for r in rows] == [a, b]
    assert float(rows[1]["wer"]) == pytest.approx(0.405)
    assert rows[0]["peak_gb"] == "5.6"
    with pytest.raises(CompareError, match="unknown export format"):
        compare.export(ws, comp, "xlsx")


def test_markdown_escapes_pipes(ws):
    comp, _, _ = _comparison(ws)
    comp.details[0]["samples"]["clip03"]["prediction"] = "a | b"
    assert "a \\| b" in compare.to_markdown(comp)


def test_run_detail_survives_a_damaged_config(ws):
    rid = make_run(ws)
    (ws.run_dir(rid) / "config.json").write_text("{not json")
    d = compare.run_detail(ws, Store(ws).require_run(rid))
    assert d["config"] == {} and "config.json is unreadable" in d["problems"][0]
    assert d["row"]["wer"] == pytest.approx(0.27) and d["samples"]  # the rest still shows


def test_filter_compares_metrics_in_percent_or_fraction():
    from engine.compare import CompareError, describe_comparisons, filter_rows, parse_filter

    rows = [{"id": "a", "wer": 0.25, "peak_gb": 8.0}, {"id": "b", "wer": 0.6, "peak_gb": 12.0}, {"id": "c", "wer": None}]
    for text in ("wer<0.5", "wer<50%", "wer<50"):
        assert [r["id"] for r in filter_rows(rows, text)] == ["a"], text
    assert [r["id"] for r in filter_rows(rows, "peak_gb>=10")] == ["b"]
    assert describe_comparisons(parse_filter("wer<0.5")) == "WER < 50.0%"
    with pytest.raises(CompareError, match="e.g. wer<30%"):
        parse_filter("wer<x")
    with pytest.raises(CompareError, match="cannot compare 'speed'"):
        parse_filter("speed<3")
