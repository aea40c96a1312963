"""voxtune's child processes run voxtune's code whatever folder they start in (issue 13, item 2)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from engine import params, procs, slurm
from engine.runfiles import RunFiles
from tests.hostile import plant

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def hostile_cwd(tmp_path, monkeypatch):
    marker = tmp_path / "HIJACKED"
    plant(tmp_path / "cwd", marker)
    monkeypatch.chdir(tmp_path / "cwd")
    return marker


@pytest.mark.parametrize("version", [(3, 11), (3, 10)])
def test_a_child_ignores_an_engine_folder_in_its_working_folder(hostile_cwd, version):
    if version >= (3, 11) and sys.version_info < (3, 11):
        pytest.skip("-P needs Python 3.11")
    cp = subprocess.run(procs.python_module("engine.worker", version=version), capture_output=True, text=True,
                        env=procs.safe_env(), timeout=60)
    assert "usage: python -m engine.worker RUN_DIR" in cp.stderr and cp.returncode == 2, cp.stderr
    assert not hostile_cwd.exists(), hostile_cwd.read_text()


def test_plain_dash_m_would_have_been_hijacked(hostile_cwd):
    """The hazard is real here: without the fix, the planted package runs."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    subprocess.run([sys.executable, "-m", "engine.worker"], capture_output=True, env=env, timeout=60)
    assert hostile_cwd.exists()


def test_parameter_count_child_runs_voxtunes_params(hostile_cwd):
    """`voxtune fit` on a local folder counts parameters in `python -m engine.params` from the caller's folder."""
    out = params.compute_in_subprocess({"name": "nothing", "family": "whisper", "hub_id": "/nonexistent"}, timeout=120)
    assert out is None  # no such model; what matters is whose code said so
    assert not hostile_cwd.exists(), hostile_cwd.read_text()


def test_slurm_job_script_ignores_an_engine_folder_in_the_job_folder(hostile_cwd, tmp_path):
    script = slurm.job_script({"id": "r1"}, {"gpus": 1}, RunFiles(tmp_path / "no-such-run"), {"kind": "slurm"},
                              python=sys.executable)
    exec_line = script.rstrip().splitlines()[-1]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    env["PYTHONPATH"] = REPO
    cp = subprocess.run(["bash", "-c", exec_line], capture_output=True, text=True, env=env, timeout=60)
    assert f"{REPO}/engine/worker.py" in cp.stderr and "acquire_lock" in cp.stderr, cp.stderr  # voxtune's worker ran
    assert not hostile_cwd.exists(), hostile_cwd.read_text()


def test_the_tuis_cli_children_ignore_a_hostile_folder_too(hostile_cwd, tmp_path):
    """Export/transcribe from the TUI run the CLI in a child (tui/screens/tools.py): same rule."""
    from engine.workspace import Workspace
    from tui.screens.tools import cli_argv

    argv = cli_argv(Workspace(tmp_path / "ws"), "--help")
    cp = subprocess.run(argv, capture_output=True, text=True, env=procs.safe_env(), timeout=60)
    assert cp.returncode == 0 and "voxtune" in cp.stdout, cp.stderr
    assert not hostile_cwd.exists(), hostile_cwd.read_text()
