"""Shared fixtures. Unit tests are unmarked; `functional` tests start processes or train
tiny models; `slow` tests need a real checkpoint (VOXTUNE_TEST_MODEL) and are opt-in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    """A fresh, empty workspace in a temp folder."""
    return Workspace(tmp_path / "ws").ensure()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    # Never reach for the hub from tests; never write into the user's real HF cache.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    # The default workspace ($XDG_DATA_HOME/voxtune) is a temp folder: no test writes into the
    # user's real ~/.local/share/voxtune, and none depends on the current directory.
    monkeypatch.delenv("VOXTUNE_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))


def pytest_collection_modifyitems(config, items):
    if os.environ.get("VOXTUNE_TEST_MODEL"):
        return
    skip = pytest.mark.skip(reason="set VOXTUNE_TEST_MODEL to a local checkpoint folder to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
