"""Import layouts, validation messages, splits, pinned samples, stats, the demo."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from data_helpers import make_folder_dataset, silent_clip, tone_clip, tree_hashes, write_wav, burst_audio
from engine import audio as A
from engine import datasets as D
from engine.store import Store


def reasons(report) -> dict[str, str]:
    return {p["file"].rsplit("/", 1)[-1]: p["reason"] for p in report["problems"]}


# -- layouts -----------------------------------------------------------------------------
def test_folder_layout_imports_with_6_3_1_splits_and_changes_nothing(ws, tmp_path):
    src = make_folder_dataset(tmp_path / "clips", n=10)
    (src / "clip03.verbatim.txt").write_text("Clip um number 3 says says something clean.", encoding="utf-8")
    (src / "clip04.verbatim.json").write_text(json.dumps([{"start": 0, "end": 1.5, "text": "Clip four"}]),
                                              encoding="utf-8")
    before = tree_hashes(src)
    report = D.import_dataset(ws, src, "mine")
    assert tree_hashes(src) == before
    assert report["layout"] == "folder"
    assert (report["clips_total"], report["clips_usable"], report["problems"]) == (10, 10, [])
    assert report["splits"] == {"train": 6, "validation": 3, "test": 1}  # auto: a usable validation split
    assert "validation split has 3 clip(s) (< 5)" in report["warning"]
    rows = D.load_rows(ws, "mine", "all")
    assert [r["id"] for r in rows] == [f"clip{i:02d}" for i in range(10)]
    r3 = rows[3]
    assert r3["verbatim"] == "Clip um number 3 says says something clean."
    assert r3["text"] == "Clip number 3 says something clean."
    assert r3["audio"] == str(src / "clip03.wav") and r3["sample_rate"] == 16000 and r3["channels"] == 1
    assert r3["sha256"] == A.content_hash(src / "clip03.wav") and r3["duration"] == pytest.approx(1.5)
    assert rows[4]["verbatim_segments"] == [{"start": 0.0, "end": 1.5, "text": "Clip four"}]
    rec = Store(ws).get_dataset("mine")
    assert rec["manifest"] == str(ws.dataset_dir("mine") / "manifest.jsonl")
    assert rec["pinned"] == rec["splits"]["validation"][:3]
    assert sorted(sum(rec["splits"].values(), [])) == sorted(r["id"] for r in rows)


def test_jsonl_manifest_with_relative_paths_ids_speakers_and_timings(ws, tmp_path):
    src = tmp_path / "m"
    for i in range(3):
        tone_clip(src / "audio" / f"a{i}.wav", 2.0, seed=i)
    lines = [{"audio": f"audio/a{i}.wav", "text": f"text {i}", "id": f"utt{i}", "speaker": "ann",
              "verbatim": f"uh text {i}", "verbatim_segments": [{"start": 0, "end": 1.5, "text": f"uh text {i}"}]}
             for i in range(3)]
    (src / "train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    report = D.import_dataset(ws, src / "train.jsonl", "j")
    assert report["clips_usable"] == 3 and report["layout"] == "manifest"
    assert report["splits"] == {"train": 1, "validation": 1, "test": 1}
    rows = {r["id"]: r for r in D.load_rows(ws, "j")}
    assert rows["utt1"]["speaker"] == "ann" and rows["utt1"]["audio"] == str(src / "audio" / "a1.wav")
    assert rows["utt1"]["verbatim_segments"][0] == {"start": 0.0, "end": 1.5, "text": "uh text 1"}


def test_csv_manifest(ws, tmp_path):
    src = tmp_path / "c"
    for i in range(4):
        tone_clip(src / f"x{i}.flac", 1.0, seed=i)
    with open(src / "list.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["audio", "text", "verbatim"])
        for i in range(4):
            w.writerow([str(src / f"x{i}.flac"), f"Clean {i}.", ""])
    report = D.import_dataset(ws, src / "list.csv", "c")
    assert report["clips_usable"] == 4
    assert {r["id"] for r in D.load_rows(ws, "c")} == {str(src / f"x{i}") for i in range(4)}
    assert all(r["verbatim"] is None for r in D.load_rows(ws, "c"))


def test_hf_audiofolder_metadata_csv(ws, tmp_path):
    src = tmp_path / "af"
    for i in range(3):
        tone_clip(src / "data" / f"s{i}.wav", 1.0, seed=i)
    (src / "metadata.csv").write_text(
        "file_name,transcription\n" + "".join(f"data/s{i}.wav,sentence {i}\n" for i in range(3)), encoding="utf-8")
    report = D.import_dataset(ws, src, "af")
    assert report["layout"] == "audiofolder" and report["clips_usable"] == 3
    assert sorted(r["text"] for r in D.load_rows(ws, "af")) == ["sentence 0", "sentence 1", "sentence 2"]


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_m4a_through_ffmpeg_and_clear_message_without_it(ws, tmp_path, monkeypatch):
    wav = tone_clip(tmp_path / "src.wav", 2.0)
    src = tmp_path / "m4a"
    src.mkdir()
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(wav), "-c:a", "aac", str(src / "talk.m4a")], check=True)
    (src / "talk.txt").write_text("hello", encoding="utf-8")
    report = D.import_dataset(ws, src, "m4a")
    assert report["clips_usable"] == 1
    audio = A.load_audio(src / "talk.m4a")
    assert audio.dtype == np.float32 and abs(len(audio) / 16000 - 2.0) < 0.1

    monkeypatch.setattr(A.shutil, "which", lambda name: None)
    with pytest.raises(A.AudioError, match="needs ffmpeg, which is not installed"):
        A.load_audio(src / "talk.m4a")
    report = D.import_dataset(ws, src, "m4a2")
    assert report["clips_usable"] == 0 and "install it" in report["problems"][0]["reason"]


# -- validation -----------------------------------------------------------------------------
def test_each_bad_input_has_its_message_good_clips_survive_files_untouched(ws, tmp_path):
    src = make_folder_dataset(tmp_path / "mixed", n=3)
    (src / "garbage.wav").write_bytes(b"this is not audio at all" * 10)
    (src / "garbage.txt").write_text("text", encoding="utf-8")
    (src / "empty.wav").write_bytes(b"")
    (src / "empty.txt").write_text("text", encoding="utf-8")
    sf.write(str(src / "noframes.wav"), np.zeros(0, np.float32), 16000)
    (src / "noframes.txt").write_text("text", encoding="utf-8")
    tone_clip(src / "notext.wav", 1.0, seed=10)
    tone_clip(src / "blank.wav", 1.0, seed=11)
    (src / "blank.txt").write_text("  \n ", encoding="utf-8")
    tone_clip(src / "latin1.wav", 1.0, seed=12)
    (src / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    shutil.copy(src / "clip00.wav", src / "copy.wav")
    (src / "copy.txt").write_text("same audio", encoding="utf-8")
    silent_clip(src / "quiet.wav", 2.0)
    (src / "quiet.txt").write_text("nothing", encoding="utf-8")
    tone_clip(src / "short.wav", 0.2, seed=13)
    (src / "short.txt").write_text("hi", encoding="utf-8")
    write_wav(src / "huge.wav", np.full(int(1801 * 100), 0.1, np.float32), sr=100)  # 30 min 1 s, tiny file
    (src / "huge.txt").write_text("long", encoding="utf-8")
    tone_clip(src / "stereo44k.wav", 1.0, seed=14, sr=44100, channels=2)  # converted, not an error
    (src / "stereo44k.txt").write_text("stereo", encoding="utf-8")
    before = tree_hashes(src)

    report = D.import_dataset(ws, src, "mixed")

    assert tree_hashes(src) == before
    r = reasons(report)
    assert "unreadable audio" in r["garbage.wav"]
    assert "empty (0 bytes)" in r["empty.wav"]
    assert "zero length" in r["noframes.wav"]
    assert "missing transcript: expected notext.txt" in r["notext.wav"]
    assert "empty transcript" in r["blank.wav"]
    assert "not UTF-8" in r["latin1.txt"]
    assert "identical audio to" in r["copy.wav"] and "clip00.wav" in r["copy.wav"]
    assert "silence only" in r["quiet.wav"]
    assert "too short" in r["short.wav"]
    assert "too long" in r["huge.wav"] and "split" in r["huge.wav"]
    assert len(r) == 10
    usable = {row["id"] for row in D.load_rows(ws, "mixed")}
    assert usable == {"clip00", "clip01", "clip02", "stereo44k"}
    assert report["clips_total"] == 14 and report["clips_usable"] == 4
    assert any("44100 Hz" in n for n in report["notes"]) and any("mono" in n for n in report["notes"])
    rec = D.get(ws, "mixed")
    assert not set(sum(rec["splits"].values(), [])) - usable  # bad rows are in no split
    assert len(rec["problems"]) == 10


def test_duplicate_ids_in_a_manifest(ws, tmp_path):
    tone_clip(tmp_path / "a.wav", 1.0, seed=1)
    tone_clip(tmp_path / "b.wav", 1.0, seed=2)
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"id": "x", "audio": "a.wav", "text": "one"}) + "\n"
        + json.dumps({"id": "x", "audio": "b.wav", "text": "two"}) + "\n", encoding="utf-8")
    report = D.import_dataset(ws, tmp_path / "m.jsonl", "dup")
    assert report["clips_usable"] == 1
    assert "duplicate id 'x'" in reasons(report)["b.wav"]


def test_no_usable_clip_writes_nothing_and_bad_paths_are_clear(ws, tmp_path):
    src = tmp_path / "bad"
    silent_clip(src / "s.wav")
    (src / "s.txt").write_text("x", encoding="utf-8")
    report = D.import_dataset(ws, src, "bad")
    assert report["clips_usable"] == 0 and not report["stored"]
    assert Store(ws).get_dataset("bad") is None and not ws.dataset_dir("bad").exists()
    with pytest.raises(D.DatasetError, match="no such file or folder"):
        D.import_dataset(ws, tmp_path / "nope", "x")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(D.DatasetError, match="no audio files found"):
        D.import_dataset(ws, tmp_path / "empty_dir", "x")
    (tmp_path / "cols.csv").write_text("path,words\na.wav,hi\n", encoding="utf-8")
    with pytest.raises(D.DatasetError, match="no transcript column"):
        D.import_dataset(ws, tmp_path / "cols.csv", "x")
    (tmp_path / "broken.jsonl").write_text('{"audio": "a.wav", "text": "x"}\n{oops\n', encoding="utf-8")
    with pytest.raises(D.DatasetError, match=r"broken.jsonl:2: not valid JSON"):
        D.import_dataset(ws, tmp_path / "broken.jsonl", "x")
    with pytest.raises(D.DatasetError, match="dataset name"):
        D.import_dataset(ws, src, "bad name/../")


def test_reimport_reports_changes_and_keeps_splits_unless_asked(ws, tmp_path):
    src = make_folder_dataset(tmp_path / "d", n=10)
    first = D.import_dataset(ws, src, "d", seed=3)
    splits_before = D.get(ws, "d")["splits"]
    (src / "clip09.wav").unlink()
    (src / "clip09.txt").unlink()
    (src / "clip01.txt").write_text("A corrected transcript.", encoding="utf-8")
    tone_clip(src / "new.wav", 1.5, seed=99)
    (src / "new.txt").write_text("brand new", encoding="utf-8")
    report = D.import_dataset(ws, src, "d")
    assert report["changes"] == {"added": ["new"], "removed": ["clip09"], "changed": ["clip01"], "splits": "kept"}
    after = D.get(ws, "d")["splits"]
    for split in D.SPLITS:
        assert [i for i in splits_before[split] if i != "clip09"] == [i for i in after[split] if i != "new"]
    assert "new" in after["train"]
    assert first["split_seed"] == D.get(ws, "d")["split_seed"] == 3
    report = D.import_dataset(ws, src, "d", seed=4)
    assert report["changes"]["splits"] == "recomputed" and D.get(ws, "d")["split_seed"] == 4


# -- splits and pinned ---------------------------------------------------------------------
def test_splits_are_deterministic_and_sized_by_count_or_fraction():
    ids = [f"c{i}" for i in range(10)]
    a = D.make_splits(ids, seed=7)
    assert a == D.make_splits(list(reversed(ids)), seed=7)
    assert [len(a[s]) for s in D.SPLITS] == [6, 3, 1]
    assert D.make_splits(ids, seed=8) != a
    assert D.split_counts(10, "8/1/1") == (8, 1, 1)
    assert D.split_counts(10, "6/2/2") == (6, 2, 2)
    assert D.split_counts(12, "8/2/2") == (8, 2, 2)
    assert D.split_counts(100, "0.8/0.1/0.1") == (80, 10, 10)
    assert D.split_counts(10, "0.5/0.3/0.2") == (5, 3, 2)
    assert D.split_counts(10, "0.8/0.1/0.1") == (8, 1, 1)  # asked for explicitly: honoured
    # counts that do not add up are refused, never rescaled (12 clips: 8/1/1 is not 10/1/1)
    for n, spec in ((12, "8/1/1"), (12, "10/3/3"), (100, "8/1/1")):
        with pytest.raises(D.DatasetError, match=f"add up to {sum(map(int, spec.split('/')))} but the dataset has {n}"):
            D.split_counts(n, spec)
    with pytest.raises(D.DatasetError, match="fractions must add up to 1"):
        D.split_counts(10, "0.5/0.2/0.1")
    # auto: 80/10/10 from 50 clips; below, up to 5 validation clips
    assert [D.split_counts(n) for n in (4, 5, 10, 20, 50, 100)] == [(2, 1, 1), (2, 2, 1), (6, 3, 1), (13, 5, 2),
                                                                     (40, 5, 5), (80, 10, 10)]
    assert D.split_counts(10, "auto") == (6, 3, 1)
    assert D.validation_warning(5) is None and "--eval-dataset" in D.validation_warning(4, "d")
    assert D.split_counts(3) == (1, 1, 1)
    assert D.split_counts(2) == (1, 1, 0)
    assert D.split_counts(1) == (1, 0, 0)
    assert D.split_counts(10, "1/0/0") == (10, 0, 0)
    with pytest.raises(D.DatasetError, match="--split"):
        D.parse_split("80%")


def test_set_splits_and_pinned_are_explicit_and_checked(ws, tmp_path):
    D.import_dataset(ws, make_folder_dataset(tmp_path / "d", n=6), "d", split="4/1/1")
    pinned = D.get(ws, "d")["pinned"]
    assert len(pinned) == 1 and pinned == D.get(ws, "d")["splits"]["validation"]
    rest = [r["id"] for r in D.load_rows(ws, "d") if r["id"] not in pinned]
    # the pinned clip moves into train: pins fall back to the new first validation clips
    rec = D.set_splits(ws, "d", splits={"train": pinned + rest[:1], "validation": rest[1:4], "test": rest[4:]})
    assert [r["id"] for r in D.load_rows(ws, "d", "validation")] == rest[1:4]
    assert rec["pinned"] == rest[1:4]
    ids = pinned + rest
    with pytest.raises(D.DatasetError, match="every usable clip exactly once"):
        D.set_splits(ws, "d", splits={"train": ids[:2], "validation": ids[2:5], "test": []})
    assert D.set_pinned(ws, "d", [ids[0]])["pinned"] == [ids[0]]
    assert [r["id"] for r in D.pinned_rows(ws, "d")] == [ids[0]]
    with pytest.raises(D.DatasetError, match="not usable clips"):
        D.set_pinned(ws, "d", ["nope"])
    rec = D.set_splits(ws, "d", seed=1, spec="0.5/0.5/0")
    assert [len(rec["splits"][s]) for s in D.SPLITS] == [3, 3, 0]
    with pytest.raises(D.DatasetError, match="split 'dev'"):
        D.load_rows(ws, "d", "dev")


def test_unknown_dataset_names_the_known_ones(ws, tmp_path):
    D.import_dataset(ws, make_folder_dataset(tmp_path / "d", n=2), "mine")
    with pytest.raises(D.DatasetError, match=r"no dataset .other.; known: demo, mine"):
        D.get(ws, "other")


# -- stats and demo ------------------------------------------------------------------------
def test_stats_counts_hours_histogram_fillers(ws, tmp_path):
    src = tmp_path / "s"
    tone_clip(src / "a.wav", 2.0, seed=1)
    (src / "a.txt").write_text("We went to the store.", encoding="utf-8")
    (src / "a.verbatim.txt").write_text("Um we we went to uh the store.", encoding="utf-8")
    tone_clip(src / "b.wav", 12.0, seed=2)
    (src / "b.txt").write_text("The store was closed today.", encoding="utf-8")
    silent_clip(src / "c.wav")
    (src / "c.txt").write_text("x", encoding="utf-8")
    D.import_dataset(ws, src, "s")
    st = D.stats(ws, "s")
    assert (st["clips_total"], st["clips_usable"]) == (3, 2)
    assert st["hours"] == pytest.approx(14 / 3600, abs=1e-4)
    assert {b["bin"]: b["count"] for b in st["histogram"]}["<10s"] == 1
    assert {b["bin"]: b["count"] for b in st["histogram"]}["10-30s"] == 1
    assert st["words_per_minute"] == pytest.approx(10 / (14 / 60), rel=0.01)
    assert st["vocabulary"] == 8  # we went to the store was closed today
    assert st["fillers"] == {"clips": 1, "verbatim": pytest.approx(2 / 8), "clean": 0.0}
    assert st["transcript_words"]["max"] == 5
    assert sum(st["splits"].values()) == 2 and len(st["problems"]) == 1


def test_demo_is_imported_once_and_is_what_the_issue_asks(ws):
    rec = D.ensure_demo(ws)
    again = D.ensure_demo(ws)
    assert again["updated_at"] == rec["updated_at"]
    rows = D.load_rows(ws, "demo")
    long = [r for r in rows if r["duration"] >= 120]
    assert len(rows) == 14 and len(long) == 2 and rec["problems"] == []
    assert all(r["verbatim"] and r["verbatim"] != r["text"] for r in rows)
    assert all(r.get("verbatim_segments") for r in long)
    assert D.stats(ws, "demo")["fillers"]["verbatim"] > 0.05
    assert sum(p.stat().st_size for p in D.DEMO_DIR.iterdir()) < 5e6
    assert D.get(ws, "demo")["pinned"]  # clips to compare runs on


def test_get_demo_imports_it_on_first_use(ws):
    assert D.get(ws, "demo")["clips_usable"] == 14


# -- audio ---------------------------------------------------------------------------------
def test_load_audio_resamples_and_mixes_down(tmp_path):
    path = tone_clip(tmp_path / "x.wav", 1.0, sr=44100, channels=2)
    audio = A.load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1 and abs(len(audio) - 16000) <= 1
    info = A.probe(path)
    assert (info.sample_rate, info.channels) == (44100, 2) and info.duration == pytest.approx(1.0)


def test_pauses_found_where_the_audio_is_quiet():
    audio = np.concatenate([burst_audio(1.0, gap_s=0.01, pause_every=1000), np.zeros(8000, np.float32),
                            burst_audio(1.0, seed=1, gap_s=0.01, pause_every=1000)])
    found = A.pauses(audio, 16000, min_pause_s=0.3)
    assert any(ps <= 1.05 and pe >= 1.45 for ps, pe in found)
    assert A.is_silent(np.zeros(16000, np.float32), 16000) and not A.is_silent(audio, 16000)
