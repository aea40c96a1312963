"""`voxtune data ...` as the user runs it: a real subprocess, a real workspace, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from data_helpers import make_folder_dataset, silent_clip, tree_hashes

pytestmark = pytest.mark.functional
VOXTUNE = str(Path(sys.executable).with_name("voxtune"))  # the installed entry point


def voxtune(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([VOXTUNE, "--home", str(home), "data", *args],
                          capture_output=True, text=True, cwd=home.parent, timeout=300)


def test_import_ls_show_split_pin(tmp_path):
    home = tmp_path / "ws"
    src = make_folder_dataset(tmp_path / "clips", n=10, seconds=1.0)
    silent_clip(src / "quiet.wav")
    (src / "quiet.txt").write_text("nothing here", encoding="utf-8")
    before = tree_hashes(src)

    p = voxtune(home, "import", str(src), "--name", "mine", "--json", "--seed", "1")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert (out["name"], out["clips_total"], out["clips_usable"]) == ("mine", 11, 10)
    assert out["splits"] == {"train": 6, "validation": 3, "test": 1}
    assert "warning: dataset 'mine': validation split has 3 clip(s) (< 5)" in p.stderr
    assert out["problems"] == [{"file": str(src / "quiet.wav"), "reason": "silence only (no sound above -50 dBFS)"}]
    assert out["hours"] == pytest.approx(10 / 3600, abs=1e-4)
    assert "warning: 1 clip(s) left out" in p.stderr and "quiet.wav" in p.stderr
    assert tree_hashes(src) == before

    p = voxtune(home, "ls", "--json")
    assert p.returncode == 0, p.stderr
    assert {d["name"]: d["clips_usable"] for d in json.loads(p.stdout)} == {"demo": 14, "mine": 10}

    p = voxtune(home, "show", "mine")
    assert p.returncode == 0 and "10 of 11 clips usable" in p.stdout and "silence only" in p.stdout

    p = voxtune(home, "split", "mine", "--split", "6/2/2", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["splits"] == {"train": 6, "validation": 2, "test": 2}
    assert "validation split has 2 clip(s)" in p.stderr
    p = voxtune(home, "split", "mine", "--split", "8/1/2")  # 11 != 10 usable clips: refused, splits unchanged
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "counts add up to 11 but the dataset has 10 usable clips" in p.stderr
    p = voxtune(home, "split", "mine", "--split", "5/5/0", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["splits"] == {"train": 5, "validation": 5, "test": 0}
    assert "warning" not in p.stderr
    p = voxtune(home, "pin", "mine", "clip00", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["pinned"] == ["clip00"]
    p = voxtune(home, "pin", "mine", "nope")
    assert p.returncode == 2 and "not usable clips" in p.stderr

    (src / "clip00.txt").write_text("Changed text.", encoding="utf-8")
    p = voxtune(home, "import", str(src), "--name", "mine")
    assert p.returncode == 0 and "updated: 0 added, 0 removed, 1 changed; splits kept" in p.stdout


def test_show_with_a_model_reports_long_clip_handling(tmp_path):
    home = tmp_path / "ws"
    p = voxtune(home, "show", "demo", "--model", "whisper-small", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["clips_usable"] == 14 and out["fillers"]["verbatim"] > out["fillers"]["clean"]
    assert out["plan"]["over_window"] == 2 and out["plan"]["long_audio"] == "segment"
    p = voxtune(home, "show", "demo", "--model", "whisper-small")
    assert "2 of 14 clip(s) are longer" in p.stdout and "long_project" in p.stdout
    p = voxtune(home, "show", "demo", "--model", "no-such-model")
    assert p.returncode == 2 and "no-such-model" in p.stderr


def test_exit_2_when_nothing_usable_or_path_missing(tmp_path):
    home = tmp_path / "ws"
    src = tmp_path / "bad"
    silent_clip(src / "a.wav")
    (src / "a.txt").write_text("x", encoding="utf-8")
    p = voxtune(home, "import", str(src), "--name", "bad", "--json")
    assert p.returncode == 2 and json.loads(p.stdout)["clips_usable"] == 0
    assert "no usable clip" in p.stderr and "silence only" in p.stderr
    p = voxtune(home, "import", str(tmp_path / "missing"), "--name", "x")
    assert p.returncode == 2 and "no such file or folder" in p.stderr and "Traceback" not in p.stderr
    p = voxtune(home, "show", "unknown")
    assert p.returncode == 2 and "no dataset 'unknown'; known: demo" in p.stderr
