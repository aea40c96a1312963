"""The TUI and CLI must stay light: no ML package may be imported by them (a subprocess,
so nothing another test imported can hide a regression)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "peft", "bitsandbytes", "torchaudio", "ctranslate2", "faster_whisper",
         "tensorboard", "trackio")

PROBE = """
import json, sys
import tui.app, tui.cli
from tui.cli import build_parser
build_parser()
from tui.app import VoxtuneApp
app = VoxtuneApp.__new__(VoxtuneApp)
for name in ("runs", "new_run", "help"):
    __import__(f"tui.screens.{name}")
mods = VoxtuneApp.get_modes(app)
# what the screens import lazily, at run time, inside the TUI process
import importlib, importlib.util
for name in ("daemon", "queue", "progress", "catalog", "estimator", "gpus", "datasets", "scheduler", "reporting",
             "export", "modelcard"):
    if importlib.util.find_spec(f"engine.{name}") is not None:
        importlib.import_module(f"engine.{name}")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in %r)))
""" % (HEAVY,)


def test_tui_and_cli_import_no_ml_package():
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_voxtune_help_imports_no_ml_package():
    code = (
        "import sys, json\n"
        "from tui.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "voxtune" in out.stdout
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_voxtune_console_script_help():
    exe = Path(sys.executable).with_name("voxtune")
    cmd = [str(exe), "--help"] if exe.exists() else [sys.executable, "-m", "tui", "--help"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage: voxtune" in out.stdout


def test_runs_export_help_lists_the_formats_and_imports_no_ml_package():
    code = (
        "import sys, json\n"
        "from tui.cli import main\n"
        "try:\n    main(['runs', 'export', '--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
    )
    env = dict(os.environ, COLUMNS="200")  # no line wrap inside the words checked below
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert "--format {hf,ct2}" in out.stdout and "--quantization" in out.stdout and "int8_float16" in out.stdout
    assert "faster-whisper" in out.stdout and "ggml" in out.stdout
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_importing_a_dataset_as_the_tui_does_imports_no_ml_package(tmp_path):
    """The Datasets screen's import (tui.screens.import_dataset) runs in the TUI process."""
    code = (
        "import sys, json\n"
        "from pathlib import Path\nfrom engine.workspace import Workspace\n"
        "from engine import datasets\n"
        "import tui.screens.import_dataset\n"
        f"ws = Workspace(Path({str(tmp_path / 'ws')!r})).ensure()\n"
        "r = datasets.import_dataset(ws, datasets.DEMO_DIR / 'manifest.jsonl', 'mine')\n"
        "assert r['stored'] and r['clips_usable'] > 0, r\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
