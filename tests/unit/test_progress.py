"""Progress from metrics.jsonl: incremental by offset, ETA from recent steps, best WER."""

from __future__ import annotations

import os

from engine.progress import read_progress
from engine.runfiles import RunFiles, append_jsonl


def files_of(tmp_path) -> RunFiles:
    return RunFiles(tmp_path / "run").create()


def test_empty_and_missing(tmp_path):
    prog = read_progress(RunFiles(tmp_path / "absent"))
    assert prog["step"] is None and prog["eta_s"] is None and prog["best_wer"] is None


def test_step_eta_loss_and_wer(tmp_path):
    f = files_of(tmp_path)
    for step in range(1, 11):
        append_jsonl(f.metrics, {"kind": "train", "step": step, "max_steps": 100, "loss": 2.0 / step, "time": 1000.0 + 2 * step})
    append_jsonl(f.metrics, {"kind": "eval", "step": 10, "max_steps": 100, "wer": 0.4, "cer": 0.1, "time": 1021.0})
    prog = read_progress(f)
    assert (prog["step"], prog["max_steps"], prog["loss"]) == (10, 100, 0.2)
    assert prog["eta_s"] == 190.0  # 90 steps left at (1021 - 1002) s / 9 steps: eval time counts too
    assert prog["wer"] == 0.4 and prog["best_wer"] == 0.4 and prog["fraction"] == 0.1
    append_jsonl(f.metrics, {"kind": "eval", "step": 20, "max_steps": 100, "wer": 0.6, "time": 1041.0})
    prog = read_progress(f)
    assert prog["wer"] == 0.6 and prog["best_wer"] == 0.4 and prog["best_step"] == 10
    assert prog["last_eval"]["step"] == 20


def test_reads_only_appended_bytes_and_ignores_a_partial_line(tmp_path):
    f = files_of(tmp_path)
    append_jsonl(f.metrics, {"kind": "train", "step": 1, "max_steps": 4, "loss": 1.0, "time": 1.0})
    with open(f.metrics, "a") as fh:
        fh.write('{"kind": "train", "step": 2, "max_st')  # a writer mid-append
    assert read_progress(f)["step"] == 1
    with open(f.metrics, "a") as fh:
        fh.write('eps": 4, "loss": 0.5, "time": 2.0}\n')
    assert read_progress(f)["step"] == 2
    # a corrupt line from the past cannot be re-read: only new bytes are parsed
    size = os.path.getsize(f.metrics)
    append_jsonl(f.metrics, {"kind": "train", "step": 3, "max_steps": 4, "loss": 0.25, "time": 3.0})
    assert read_progress(f)["step"] == 3 and os.path.getsize(f.metrics) > size


def test_replaced_file_is_read_again(tmp_path):
    f = files_of(tmp_path)
    append_jsonl(f.metrics, {"kind": "train", "step": 7, "max_steps": 8, "loss": 1.0, "time": 1.0})
    assert read_progress(f)["step"] == 7
    tmp = f.root / "m.tmp"
    tmp.write_text('{"kind": "train", "step": 1, "max_steps": 8, "loss": 9.0, "time": 1.0}\n')
    os.replace(tmp, f.metrics)
    assert read_progress(f)["step"] == 1 and read_progress(f)["loss"] == 9.0


def test_eta_survives_a_resume(tmp_path):
    f = files_of(tmp_path)
    for step in (1, 2, 3, 4):
        append_jsonl(f.metrics, {"kind": "train", "step": step, "max_steps": 10, "loss": 1.0, "time": float(step)})
    for step in (3, 4, 5):  # resumed from checkpoint-2 much later, at 1 step per 3 s
        append_jsonl(f.metrics, {"kind": "train", "step": step, "max_steps": 10, "loss": 1.0, "time": 1000.0 + 3 * step})
    prog = read_progress(f)
    assert prog["step"] == 5 and prog["eta_s"] == 15.0
