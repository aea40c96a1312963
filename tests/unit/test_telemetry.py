"""Telemetry samples a real process tree; the GPU part takes engine.gpus' Gpu objects."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from engine.gpus import Gpu
from engine.runfiles import RunFiles, read_jsonl
from engine.telemetry import Sampler, gpu_summary


def test_samples_a_worker_and_its_children(tmp_path):
    files = RunFiles(tmp_path / "run").create()
    code = "import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); time.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while not psutil.Process(proc.pid).children() and time.monotonic() < deadline:
            time.sleep(0.05)
        sampler = Sampler(files, proc.pid)
        gpus = [Gpu(name="RX 7700 XT", vendor="amd", index=0, total_gb=12.0, used_gb=3.5, free_gb=8.5, util_percent=40.0)]
        first = sampler.sample(gpus)
        second = sampler.sample(gpus)
    finally:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait()
    assert first["gpu"] == {"name": "RX 7700 XT", "used_gb": 3.5, "total_gb": 12.0, "util_percent": 40.0}
    assert second["rss_gb"] > 0 and second["ram_total_gb"] > 0 and "cpu_percent" in second
    assert len(sampler._procs) >= 2  # the child process counts towards the worker's RAM
    assert len(read_jsonl(files.telemetry)) == 2
    assert sampler.peaks()["rss_gb"] >= second["rss_gb"] and sampler.peaks()["gpu_used_gb"] == 3.5
    assert Sampler(files, proc.pid).sample([]) is None  # the process is gone: nothing to write


def test_gpu_summary_derives_used_from_free():
    g = Gpu(name="A", vendor="nvidia", index=0, total_gb=24.0, used_gb=None, free_gb=20.0)
    assert gpu_summary(g)["used_gb"] == 4.0 and gpu_summary(None) is None
