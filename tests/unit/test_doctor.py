"""Doctor rules over recorded probes (what `python -m engine.doctor --probe` prints on each
kind of machine), so every finding is checked without that hardware."""

from __future__ import annotations

from pathlib import Path

from engine.doctor import findings
from engine.gpus import Gpu

RX7700 = Gpu(name="AMD Radeon RX 7700 XT / 7800 XT", vendor="amd", index=0, total_gb=12.87, used_gb=0.6,
             free_gb=12.27, arch="gfx1101", source="sysfs")
ROCM_SEES = {"python": "3.11.7", "torch": "2.7.1+rocm6.3", "cuda": None, "hip": "6.3.42131", "build": "rocm",
             "gpu_available": True, "device_count": 1,
             "devices": [{"name": "AMD Radeon RX 7700 XT", "total_gb": 12.87, "arch": "gfx1101", "free_gb": 12.2}],
             "bf16": True, "fused_attention": {"flash": False, "mem_efficient": False},
             "transformers": "5.24.0", "peft": "0.21.2", "bitsandbytes": "0.48.2", "flash_attn": None}
CPU_ONLY = {"python": "3.11.7", "torch": "2.14.1+cpu", "cuda": None, "hip": None, "build": "cpu",
            "gpu_available": False, "device_count": 0, "devices": [], "bitsandbytes": "0.50.2"}


def by_check(fs):
    return {f.check: f for f in fs}


def run(probe, gpus, env=None, ffmpeg="/usr/bin/ffmpeg", disk=100.0):
    return by_check(findings(probe, gpus, Path("/ws"), env=env or {}, ffmpeg=ffmpeg, disk_free_gb=disk))


def test_rocm_box_that_works_but_needs_newer_bitsandbytes_and_no_fused_attention():
    f = run(ROCM_SEES, [RX7700])
    assert f["torch"].status == "ok" and "ROCm/HIP" in f["torch"].detail
    assert f["gpu-arch"].status == "ok" and "gfx1101" in f["gpu-arch"].detail
    assert f["bitsandbytes"].status == "warn" and ">=0.49" in f["bitsandbytes"].fix.replace(" ", "").replace("'", "")
    assert f["attention"].status == "warn" and "math" in f["attention"].fix
    assert f["vram"].status == "ok"
    assert f["ffmpeg"].status == "ok" and f["disk"].status == "ok"


def test_rocm_not_seeing_an_rdna3_card_suggests_the_hsa_override():
    probe = dict(ROCM_SEES, gpu_available=False, device_count=0, devices=[], bitsandbytes="0.49.0")
    probe.pop("fused_attention")
    f = run(probe, [RX7700])
    assert f["gpu-arch"].status == "warn" and "HSA_OVERRIDE_GFX_VERSION=11.0.0" in f["gpu-arch"].fix
    assert f["torch"].status == "fail"
    assert f["bitsandbytes"].status == "ok"
    f = run(probe, [RX7700], env={"HSA_OVERRIDE_GFX_VERSION": "11.0.0"})
    assert f["gpu-arch"].status == "ok" and "11.0.0" in f["gpu-arch"].detail


def test_cpu_torch_on_an_amd_machine_says_install_the_rocm_build():
    f = run(CPU_ONLY, [RX7700])
    assert f["torch"].status == "fail" and "rocm" in f["torch"].fix


def test_cpu_machine_warns_and_reports_the_rest():
    f = run(CPU_ONLY, [], env={"HF_HOME": "/big/hf", "HF_HUB_OFFLINE": "1"}, ffmpeg="", disk=5.0)
    assert f["torch"].status == "warn" and "CPU" in f["torch"].detail
    assert f["ffmpeg"].status == "warn" and "install ffmpeg" in f["ffmpeg"].fix
    assert f["disk"].status == "warn"
    assert "/big/hf/hub" in f["hf-cache"].detail and "offline" in f["hf-cache"].detail
    assert "gpu-arch" not in f and "vram" not in f


def test_probe_failures_are_findings_not_crashes():
    f = run({"probe_error": "the ML probe took over 180 s"}, [])
    assert f["torch"].status == "fail"
    f = run({"torch_error": "ImportError: libamdhip64.so"}, [RX7700])
    assert f["torch"].status == "fail" and "install torch" in f["torch"].fix
    for finding in f.values():
        assert finding.detail and finding.status in ("ok", "warn", "fail", "info")
