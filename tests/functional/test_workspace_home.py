"""The workspace is one per user (issue 12): $VOXTUNE_HOME, else $XDG_DATA_HOME/voxtune
(~/.local/share/voxtune), never the current folder; read-only commands never create it; a
typo'd --home is an error; every command says which workspace it used."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.functional
REPO = Path(__file__).resolve().parents[2]


def user_env(home: Path) -> dict:
    """A new user's environment: HOME is a temp folder, no XDG_DATA_HOME, no VOXTUNE_HOME."""
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_DATA_HOME", "VOXTUNE_HOME")}
    env.update(HOME=str(home), PYTHONPATH=str(REPO))
    return env


def voxtune(*args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=180)


def test_read_only_commands_create_nothing_and_the_workspace_lives_under_xdg_data_home(tmp_path):
    home, cwd = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    cwd.mkdir()
    env = user_env(home)
    default = home / ".local" / "share" / "voxtune"
    for args in (["runs", "ls"], ["runs", "ls", "--json"], ["queue", "ls"], ["engine", "status"], ["data", "ls"],
                 ["fit", "whisper-small", "--method", "lora"]):
        p = voxtune(*args, cwd=cwd, env=env)
        assert p.returncode == 0, (args, p.stderr)
        assert f"no workspace at {default} yet" in p.stderr, (args, p.stderr)
    assert json.loads(voxtune("runs", "ls", "--json", cwd=cwd, env=env).stdout) == []
    shown = voxtune("runs", "show", "0000", cwd=cwd, env=env)
    assert shown.returncode == 2 and f"no workspace at {default} yet" in shown.stderr
    assert list(cwd.iterdir()) == [] and list(home.iterdir()) == []  # nothing created anywhere

    added = voxtune("queue", "add", "--eval-only", "--model", "whisper-small", "--dataset", "demo", "--no-start",
                    cwd=cwd, env=env)
    assert added.returncode == 0, added.stderr
    assert f"workspace: {default}" in added.stderr
    assert (default / "voxtune.json").is_file() and list(cwd.iterdir()) == []
    listed = voxtune("runs", "ls", cwd=tmp_path, env=env)  # from another folder: the same runs
    assert added.stdout.strip() in listed.stdout and f"workspace: {default}" in listed.stderr

    xdg = tmp_path / "xdg"
    env_xdg = dict(env, XDG_DATA_HOME=str(xdg))
    assert voxtune("queue", "add", "--eval-only", "--model", "whisper-small", "--dataset", "demo", "--no-start",
                   cwd=cwd, env=env_xdg).returncode == 0
    assert (xdg / "voxtune" / "voxtune.json").is_file()
    explicit = tmp_path / "mine"
    assert voxtune("--home", str(explicit), "data", "pin", "demo", cwd=cwd, env=env_xdg).returncode == 0
    assert (explicit / "voxtune.json").is_file()
    own = voxtune("runs", "ls", cwd=cwd, env=dict(env, VOXTUNE_HOME=str(explicit)))
    assert f"workspace: {explicit}" in own.stderr and "(no runs" in own.stdout


@pytest.mark.parametrize("args", [["runs", "ls"], ["runs", "show", "x"], ["queue", "ls"], ["engine", "status"],
                                  ["fit", "whisper-small", "--method", "lora"]])
def test_a_typo_in_home_is_an_error_for_read_only_commands(tmp_path, args):
    typo = tmp_path / "voxtnue"
    p = voxtune("--home", str(typo), *args, cwd=tmp_path, env=user_env(tmp_path))
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith(f"voxtune: no workspace at {typo}: the folder does not exist"), p.stderr
    assert "Traceback" not in p.stderr and not typo.exists()
    env = dict(user_env(tmp_path), VOXTUNE_HOME=str(typo))
    p = voxtune(*args, cwd=tmp_path, env=env)
    assert p.returncode == 2 and "check VOXTUNE_HOME" in p.stderr and not typo.exists()


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_in_a_terminal_runs_ls_creates_nothing_in_the_current_folder(tmp_path):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    env = user_env(home)
    exports = " ".join(f"{k}={shlex.quote(env[k])}" for k in ("PATH", "HOME", "PYTHONPATH") if k in env)
    name = f"voxtune-home-{os.getpid()}"
    cmd = (f"cd {shlex.quote(str(cwd))} && env -u XDG_DATA_HOME -u VOXTUNE_HOME {exports} "
           f"{shlex.quote(sys.executable)} -m tui runs ls; echo DONE $?; sleep 60")
    subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "100", "-y", "24", cmd], check=True)
    try:
        deadline, screen = time.monotonic() + 60, ""
        while time.monotonic() < deadline and "DONE" not in screen:
            time.sleep(0.3)
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-J", "-t", name], capture_output=True,
                                    text=True).stdout
        assert "DONE 0" in screen, screen
        assert f"no workspace at {home}/.local/share/voxtune yet" in screen, screen
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)
    assert list(cwd.iterdir()) == [] and list(home.iterdir()) == []
