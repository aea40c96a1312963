"""Per-clip results: every evaluation writes every clip's prediction and WER (clips.jsonl),
eval-only runs on any split write samples too, and `runs show --clips` prints the worst."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from tiny_models import make_tiny_dataset, make_tiny_whisper  # noqa: E402

from engine.runfiles import RunFiles, read_json, read_jsonl  # noqa: E402

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> Path:
    return make_tiny_whisper(tmp_path_factory.mktemp("models") / "tiny-whisper")


def test_eval_only_on_the_test_split_writes_every_clip_and_samples(ws, tiny_whisper, monkeypatch, capsys):
    import torch

    from engine import queue, training

    torch.set_num_threads(1)
    monkeypatch.setenv("VOXTUNE_DEVICE", "cpu")
    # pinned clips live in validation; the run scores test (clips 3, 4, 5)
    make_tiny_dataset(ws, n=6, splits={"train": [0, 1], "validation": [0, 1, 2], "test": [3, 4, 5]}, pinned=2)
    run_id = queue.add(ws, model=str(tiny_whisper), dataset="tiny", eval_only=True, split="test",
                       batch_size=2, max_new_tokens=6, precision="fp32", seed=0)
    run_dir = ws.run_dir(run_id)
    assert training.run(run_dir) == 0, RunFiles(run_dir).log.read_text(errors="replace")[-2000:]
    files = RunFiles(run_dir)
    recs = read_jsonl(files.clips)
    assert sorted(r["clip_id"] for r in recs) == ["clip03", "clip04", "clip05"]
    assert all(r["split"] == "test" and r["step"] == 0 and isinstance(r["wer"], float) for r in recs)
    assert all(r["reference"] for r in recs)
    (ev,) = list(files.iter_metrics("eval"))
    assert ev["split"] == "test" and ev["clips"] == 3
    # a random model never ends a piece: every piece hits the 6-token limit and is decoded again
    # with temperature fallback; the counts are in the eval record
    assert ev["decode_pieces"] == 3 and ev["decode_token_limit"] == 3 and ev["decode_fallback"] == 3
    assert 0 <= ev["decode_collapsed"] <= 3
    samples = read_jsonl(files.samples)
    assert samples and {s["sample_id"] for s in samples} <= {"clip03", "clip04", "clip05"}
    assert read_json(files.result)["status"] == "finished"

    from tui.cli import main

    capsys.readouterr()
    assert main(["--home", str(ws.home), "runs", "show", run_id, "--clips", "2"]) == 0
    out = capsys.readouterr().out
    assert "worst 2 of 3 clips at step 0 (test split)" in out, out
    assert out.count("WER ") >= 2


def test_training_evaluates_on_another_dataset_and_stops_early(ws, tiny_whisper, monkeypatch, capsys):
    import torch

    from engine import queue, training

    torch.set_num_threads(1)
    monkeypatch.setenv("VOXTUNE_DEVICE", "cpu")
    make_tiny_dataset(ws, name="tiny", n=4, splits={"train": [0, 1, 2, 3], "validation": [0], "test": []}, pinned=1)
    make_tiny_dataset(ws, name="held", n=4, splits={"train": [], "validation": [0], "test": [1, 2, 3]}, pinned=1)
    # lr so small the model does not change: the WER of step 1 is never beaten
    run_id = queue.add(ws, model=str(tiny_whisper), dataset="tiny", method="full", eval_dataset="held:test",
                       max_steps=6, batch_size=2, grad_accum=1, eval_every=1, save_every=100, early_stop=2,
                       lr=1e-12, warmup_steps=0, max_new_tokens=4, precision="fp32", seed=0,
                       gradient_checkpointing=False)
    run_dir = ws.run_dir(run_id)
    assert training.run(run_dir) == 0, RunFiles(run_dir).log.read_text(errors="replace")[-2000:]
    files = RunFiles(run_dir)
    evals = list(files.iter_metrics("eval"))
    assert [e["step"] for e in evals] == [1, 2, 3]  # best at 1, then 2 evaluations without a better WER
    assert all(e["eval_dataset"] == "held" and e["split"] == "test" and e["clips"] == 3 for e in evals)
    assert {r["clip_id"] for r in read_jsonl(files.clips)} == {"clip01", "clip02", "clip03"}
    result = read_json(files.result)
    assert result["status"] == "finished" and result["stopped_early_at"] == 3 and result["step"] == 3
    assert result["best"]["step"] == 1 and (run_dir / result["best"]["checkpoint"]).is_dir()
    assert "stopping early at step 3" in capsys.readouterr().out


def test_the_loop_guard_is_deterministic(ws, tiny_whisper, monkeypatch):
    import torch

    from engine import queue, training

    torch.set_num_threads(1)
    monkeypatch.setenv("VOXTUNE_DEVICE", "cpu")
    make_tiny_dataset(ws, n=3, splits={"train": [], "validation": [0, 1, 2], "test": []}, pinned=0)
    preds = []
    for _ in range(2):
        run_id = queue.add(ws, model=str(tiny_whisper), dataset="tiny", eval_only=True, split="validation",
                           batch_size=3, max_new_tokens=6, precision="fp32", seed=0)
        assert training.run(ws.run_dir(run_id)) == 0
        preds.append([r["prediction"] for r in read_jsonl(RunFiles(ws.run_dir(run_id)).clips)])
    assert preds[0] == preds[1]
