"""Run ids accept any unique prefix in every command taking one (as git does); an ambiguous
prefix is one line listing the candidates, exit 2. `runs resume` while the queue is paused
starts that run only, as pueue's `start` does (issue 12)."""

from __future__ import annotations

import json

import pytest

from engine import queue, scheduler
from engine.store import Store, StoreError
from tests.engine_helpers import add_dataset
from tui.cli import main
from tui_helpers import add_run

A, B, C = "1207-0602-whisper-small-eval", "1207-0603-whisper-small-lora", "1207-0915-whisper-base-full"


@pytest.fixture
def three(ws):
    for rid in (A, B, C):
        add_run(ws, rid, "queued")
    return ws


def test_store_resolves_unique_prefixes(three):
    store = Store(three)
    assert store.resolve_run_id(A) == A and store.resolve_run_id("1207-0602") == A and store.resolve_run_id("1207-09") == C
    with pytest.raises(StoreError, match=f"ambiguous: {A}, {B}"):
        store.resolve_run_id("1207-06")
    with pytest.raises(StoreError, match="no run 'zz'"):
        store.resolve_run_id("zz")


def test_every_command_taking_an_id_accepts_a_prefix(three, capsys):
    home = ["--home", str(three.home)]
    assert main([*home, "runs", "show", "1207-0602", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == A
    assert main([*home, "queue", "up", "1207-09"]) == 0
    assert f"{C} is now number 2" in capsys.readouterr().out
    assert main([*home, "runs", "logs", "1207-0603"]) == 0
    assert main([*home, "runs", "cancel", "1207-0603"]) == 0
    assert f"{B}: cancelled" in capsys.readouterr().out
    assert Store(three).get_run(B)["status"] == "cancelled"
    assert main([*home, "runs", "rm", "1207-0603"]) == 0
    assert Store(three).get_run(B) is None


def test_an_ambiguous_prefix_is_one_line_listing_the_candidates(three, capsys):
    capsys.readouterr()
    assert main(["--home", str(three.home), "runs", "cancel", "1207-06"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and A in err[0] and B in err[0] and C not in err[0] and "ambiguous" in err[0]
    assert {r["status"] for r in Store(three).list_runs()} == {"queued"}  # nothing was cancelled


def test_a_run_resumed_by_name_starts_while_the_queue_stays_paused(ws):
    add_dataset(ws)
    first = queue.add(ws, model="whisper-small", dataset="tiny", method="lora", max_steps=5)
    second = queue.add(ws, model="whisper-small", dataset="tiny", method="lora", max_steps=5)
    Store(ws).set_status(first, "interrupted", "worker is gone")
    queue.pause(ws, "paused after a crash")
    queue.resume(ws, first)
    runs = {r["id"]: r for r in Store(ws).list_runs()}
    plan = scheduler.plan([runs[first], runs[second]], [], [], paused=True)
    assert [rid for rid, _ in plan.start] == [first]
    assert plan.waiting == {second: "waiting: queue paused (voxtune queue resume)"}
    assert scheduler.plan([runs[second]], [], [], paused=True).start == []
