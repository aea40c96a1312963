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


def seed_hub_cache(hub: Path) -> None:
    """The catalog's hub models look cached (a config.json in the hub cache layout), as on a
    box that downloaded them once: `queue add` refuses uncached models while offline. Tests
    of the uncached case point HF_HOME at an empty folder."""
    import json as _json

    catalog = _json.loads((Path(__file__).resolve().parents[1] / "data" / "catalog.json").read_text())
    models = catalog.get("models", catalog) if isinstance(catalog, dict) else catalog
    for m in models:
        hub_id = m.get("hub_id") if isinstance(m, dict) else None
        if not hub_id or "/" not in hub_id:
            continue
        repo = hub / ("models--" + hub_id.replace("/", "--"))
        snap = repo / "snapshots" / ("0" * 40)
        snap.mkdir(parents=True, exist_ok=True)
        (snap / "config.json").write_text("{}")
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text("0" * 40)


@pytest.fixture(scope="session")
def _seeded_hf_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("hf_home")
    seed_hub_cache(home / "hub")
    return home


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path, _seeded_hf_home):
    # Never reach for the hub from tests; never write into the user's real HF cache.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(_seeded_hf_home))
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
