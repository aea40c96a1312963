"""Import faults that used to pass silently (issue 13, items 3 and 9): non-finite samples,
transcripts over a family's label limit, audio files the manifest does not list, dangling
symlinks. Each must be in the import report with a reason."""

from __future__ import annotations

import os

import numpy as np
import soundfile as sf

from data_helpers import burst_audio, make_folder_dataset, tone_clip
from engine import datasets as D


def reasons(report) -> dict[str, str]:
    return {p["file"].rsplit("/", 1)[-1]: p["reason"] for p in report["problems"]}


def test_float32_wav_with_nan_samples_is_a_problem_not_a_usable_clip(ws, tmp_path):
    src = make_folder_dataset(tmp_path / "nan", n=2)
    audio = burst_audio(2.0, seed=5).astype(np.float32)
    audio[8000:8100] = np.nan
    sf.write(str(src / "broken.wav"), audio, 16000, subtype="FLOAT")  # float32 WAV: the NaNs survive
    (src / "broken.txt").write_text("a clip with holes", encoding="utf-8")
    inf = burst_audio(2.0, seed=6).astype(np.float32)
    inf[100] = np.inf
    sf.write(str(src / "inf.wav"), inf, 16000, subtype="FLOAT")
    (src / "inf.txt").write_text("one infinite sample", encoding="utf-8")

    report = D.import_dataset(ws, src, "nan")

    r = reasons(report)
    assert "100 non-finite sample(s) (NaN/Inf), the first at 0.50 s" in r["broken.wav"], r
    assert "1 non-finite sample(s)" in r["inf.wav"], r
    assert {row["id"] for row in D.load_rows(ws, "nan")} == {"clip00", "clip01"}


def test_transcript_over_whispers_label_limit_is_warned_about(ws, tmp_path):
    src = make_folder_dataset(tmp_path / "long", n=2)
    tone_clip(src / "wordy.wav", 3.0, seed=7)
    (src / "wordy.txt").write_text(" ".join(["word"] * 5000), encoding="utf-8")
    tone_clip(src / "fine.wav", 3.0, seed=8)
    (src / "fine.txt").write_text(" ".join(["word"] * 200), encoding="utf-8")  # ~300 tokens: fits

    report = D.import_dataset(ws, src, "long")

    warnings = [n for n in report["notes"] if "label limit" in n]
    assert len(warnings) == 1, report["notes"]
    assert warnings[0].startswith("wordy: warning: transcript of 5000 words")
    assert "Whisper's 448-token label limit" in warnings[0] and "3.0 s" in warnings[0]
    assert D.estimated_tokens("a b c d") == 6


def test_long_clip_label_limit_counts_per_30s_window(ws, tmp_path):
    # 600 words over 90 s: three windows of ~300 tokens each -- no warning
    assert D._label_limit_warning(" ".join(["w"] * 600), 90.0) is None
    assert "label limit" in D._label_limit_warning(" ".join(["w"] * 600), 29.0)


def test_audio_files_not_in_metadata_csv_are_listed(ws, tmp_path):
    src = tmp_path / "af"
    for i in range(4):
        tone_clip(src / "data" / f"s{i}.wav", 1.0, seed=i)
    (src / "metadata.csv").write_text(
        "file_name,transcription\n" + "".join(f"data/s{i}.wav,sentence {i}\n" for i in range(2)), encoding="utf-8")

    report = D.import_dataset(ws, src, "af")

    assert report["clips_usable"] == 2
    r = reasons(report)
    assert set(r) == {"s2.wav", "s3.wav"}
    assert r["s2.wav"] == "not listed in metadata.csv: add a row for it to import it"
    assert report["clips_total"] == 4


def test_dangling_symlinks_are_reported_in_folder_and_manifest_layouts(ws, tmp_path):
    src = make_folder_dataset(tmp_path / "links", n=2)
    os.symlink(tmp_path / "gone.wav", src / "lost.wav")
    (src / "lost.txt").write_text("the audio went away", encoding="utf-8")
    tone_clip(src / "orphan.wav", 1.0, seed=9)
    os.symlink(tmp_path / "gone.txt", src / "orphan.txt")

    report = D.import_dataset(ws, src, "links")

    r = reasons(report)
    assert r["lost.wav"].startswith("dangling symlink (points to ") and "gone.wav" in r["lost.wav"], r
    assert r["orphan.txt"].startswith("transcript is a dangling symlink"), r
    assert report["clips_usable"] == 2

    man = tmp_path / "man"
    man.mkdir()
    tone_clip(man / "a.wav", 1.0, seed=1)
    os.symlink(tmp_path / "nowhere.wav", man / "b.wav")
    (man / "manifest.jsonl").write_text('{"audio": "a.wav", "text": "a"}\n{"audio": "b.wav", "text": "b"}\n')
    report = D.import_dataset(ws, man, "man")
    r = reasons(report)
    assert set(r) == {"b.wav"} and r["b.wav"].startswith("dangling symlink"), r
