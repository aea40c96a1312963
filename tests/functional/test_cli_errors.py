"""Every error a user can cause is one line naming the file or field, plus a hint, exit 2; a bug
is one line pointing at a log with the traceback, exit 1. The cases are the ones that printed
tracebacks before the one-error-type redesign (issue 9)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import queue
from engine.store import Store
from tests.engine_helpers import add_dataset
from tests.tiny_models import make_tiny_whisper, synth_clip
from tui.cli import main

pytestmark = pytest.mark.functional
VOXTUNE = [sys.executable, "-m", "tui"]


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real console entry in a child process: what a user's terminal shows."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([*VOXTUNE, *args], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=180)


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and lines[0].startswith("voxtune: "), proc.stderr
    assert len(lines) <= 2 and all(ln.startswith("  hint: ") for ln in lines[1:]), proc.stderr
    for n in needles:
        assert n in proc.stderr, (n, proc.stderr)


def test_home_pointing_at_a_file(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    one_line_error(run_cli("--home", str(afile), "runs", "ls"), str(afile), "is a file")
    one_line_error(run_cli("--home", str(afile), "queue", "add", "--model", "whisper-small", "--dataset", "demo",
                           "--method", "lora", "--no-start"), str(afile))


@pytest.mark.parametrize("content, needle", [
    ("[]", "not a voxtune store"),
    ('{"runs": "x"}', "table 'runs' is damaged"),
    ("", "is empty"),
    ("   \n", "is empty"),
    ("null", "holds null"),
    ('{"runs": {"1": {"id": ', "not valid JSON"),
])
def test_a_damaged_store_is_refused_and_never_overwritten(tmp_path, content, needle):
    home = tmp_path / "ws"
    home.mkdir()
    (home / "voxtune.json").write_text(content)
    for args in (["runs", "ls"], ["queue", "add", "--model", "whisper-small", "--dataset", "demo", "--method",
                                  "lora", "--no-start"]):
        one_line_error(run_cli("--home", str(home), *args), "voxtune.json", needle)
    assert (home / "voxtune.json").read_text() == content  # nothing was written over it


def test_newer_schema_is_refused(tmp_path):
    home = tmp_path / "ws"
    home.mkdir()
    (home / "voxtune.json").write_text(json.dumps({"_meta": {"1": {"key": "schema_version", "value": 99}}}))
    one_line_error(run_cli("--home", str(home), "runs", "ls"), "newer voxtune")


def _read_only(path: Path):
    """A real read-only view of `path`: a read-only bind mount as root, else chmod."""
    if os.geteuid() != 0:
        subprocess.run(["chmod", "-R", "a-w", str(path)], check=True)
        return path, lambda: subprocess.run(["chmod", "-R", "u+w", str(path)], check=True)
    view = path.with_name(path.name + "-ro")
    view.mkdir()
    ok = subprocess.run(["mount", "--bind", str(path), str(view)], capture_output=True).returncode == 0 and \
        subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], capture_output=True).returncode == 0
    if not ok:
        subprocess.run(["umount", str(view)], capture_output=True)
        pytest.skip("cannot make a read-only folder here (root without mount)")
    return view, lambda: subprocess.run(["umount", str(view)], check=True)


def test_read_only_workspace_reads_work_and_writes_say_why(tmp_path):
    home = tmp_path / "ws"
    assert main(["--home", str(home), "queue", "add", "--model", "whisper-small", "--dataset", "demo",
                 "--method", "lora", "--no-start"]) == 0
    rid = Store(home / "voxtune.json").list_runs()[0]["id"]
    view, undo = _read_only(home)
    try:
        ls = run_cli("--home", str(view), "runs", "ls")
        assert ls.returncode == 0 and rid in ls.stdout, ls.stderr
        show = run_cli("--home", str(view), "runs", "show", rid, "--json")
        assert show.returncode == 0 and json.loads(show.stdout)["id"] == rid
        one_line_error(run_cli("--home", str(view), "queue", "add", "--model", "whisper-small", "--dataset", "demo",
                               "--method", "lora", "--no-start"), "read-only")
        one_line_error(run_cli("--home", str(view), "queue", "pause"), "read-only")
    finally:
        undo()


@pytest.mark.parametrize("flag, value, field", [("--lr", "nan", "lr"), ("--lr", "inf", "lr"),
                                                ("--epochs", "nan", "epochs"), ("--batch", "0", "batch_size"),
                                                ("--lora-dropout", "1.5", "lora_dropout")])
def test_bad_numbers_name_the_field(tmp_path, capsys, flag, value, field):
    home = str(tmp_path / "ws")
    assert main(["--home", home, "queue", "add", "--model", "whisper-small", "--dataset", "demo", "--method", "lora",
                 flag, value, "--no-start"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"voxtune: {field}: ") and "Traceback" not in err
    assert not (tmp_path / "ws" / "runs").exists() or not any((tmp_path / "ws" / "runs").iterdir())


def test_export_merge_of_an_uncached_hub_model_offline(ws, capsys, monkeypatch, tmp_path):
    add_dataset(ws, "tiny")
    rid = queue.add(ws, model="whisper-small", dataset="tiny", method="lora")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf"))  # the model left the cache since
    Store(ws).set_status(rid, "finished")
    ckpt = ws.run_dir(rid) / "checkpoints" / "checkpoint-1"
    ckpt.mkdir()
    (ckpt / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "openai/whisper-small",
                                                          "peft_type": "LORA"}))
    (ckpt / "adapter_model.safetensors").write_bytes(b"")
    assert main(["--home", str(ws.home), "runs", "export", rid, "--merge"]) == 2
    err = capsys.readouterr().err
    assert "openai/whisper-small" in err and "HF_HUB_OFFLINE" in err and "Traceback" not in err
    assert not (ws.run_dir(rid) / "export-merged").exists()  # no half export left behind


def test_transcribe_with_a_processor_of_another_model(tmp_path, capsys):
    import soundfile as sf

    model = make_tiny_whisper(tmp_path / "tiny-whisper")
    pre = model / "processor_config.json"  # transformers 5 writes the feature extractor's settings here
    data = json.loads(pre.read_text())
    data["feature_extractor"]["feature_size"] = 128  # large-v3's processor next to an 80-bin model
    pre.write_text(json.dumps(data))
    clip = tmp_path / "clip.wav"
    sf.write(clip, synth_clip(0), 16000)
    capsys.readouterr()  # making the model printed progress bars
    assert main(["transcribe", "--model", str(model), str(clip)]) == 2
    err = capsys.readouterr().err
    assert "processor_config.json" in err and "config.json" in err and "128" in err and "80" in err
    assert "Traceback" not in err and len([ln for ln in err.splitlines() if ln.strip()]) <= 2


def test_a_bug_prints_one_line_and_the_log_path(tmp_path, monkeypatch, capsys):
    from tui.cli import models

    def broken(args):
        raise KeyError("no such thing")

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setattr(models, "cmd_gpus", broken)
    assert main(["gpus"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("voxtune: internal error: KeyError") and "\n" not in err
    log = Path(err.split("the traceback is in ")[1].split(" (please")[0])
    assert log.is_file() and "Traceback" in log.read_text() and "no such thing" in log.read_text()
