"""`voxtune fit ... --trace --json`: the traced terms of two real-size whisper-small training
steps on fake tensors (a child process; ~20 s each), cached in the workspace, with the
analytical total within 10% of the traced one (issue 10's acceptance, GiB)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.functional

VOXTUNE = str(Path(sys.executable).with_name("voxtune"))


def fit(home: Path, *args: str) -> dict:
    cp = subprocess.run([VOXTUNE, "--home", str(home), "fit", *args, "--trace", "--json"],
                        capture_output=True, text=True, timeout=300)
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_whisper_small_traced_and_within_ten_percent(tmp_path, method):
    args = ("openai/whisper-small", "--method", method, "--batch", "4", "--audio-seconds", "30")
    out = fit(tmp_path, *args)
    t = out["traced"]
    assert out["unit"] == t["unit"] == "GiB"
    assert set(t["terms"]) == {"weights", "gradients", "optimizer", "activations", "logits", "other"}
    assert t["total_gb"] == pytest.approx(t["tensors_gb"] + t["overhead_gb"], abs=0.002)
    assert abs(out["total_gb"] - t["total_gb"]) <= 0.10 * t["total_gb"], (out["total_gb"], t)
    assert not t["cached"]
    again = fit(tmp_path, *args)  # the workspace cache answers at once
    assert again["traced"]["cached"] and again["traced"]["tensors_gb"] == t["tensors_gb"]
