"""GPU presets and detection: a fake sysfs tree for AMD, a stand-in NVML for NVIDIA (we have
no GPU here), and the CPU-only machine this runs on."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from engine import gpus
from engine.gpus import UnknownGpu, detect, find_gpu, presets, process_gpu_memory_gb


def test_presets_cover_the_required_cards():
    keys = {g.key: g for g in presets()}
    for key, gb in {"rx-7700-xt": 12, "rtx-3060": 12, "rtx-3090": 24, "rtx-4090": 24, "a100-40": 40,
                    "a100-80": 80, "h100-80": 80}.items():
        assert keys[key].total_gb == gb
    assert keys["rx-7700-xt"].arch == "gfx1101" and keys["rx-7700-xt"].fast_attention is False


@pytest.mark.parametrize("ref,key", [("rx-7700-xt", "rx-7700-xt"), ("RX 7700 XT", "rx-7700-xt"),
                                     ("4090", "rtx-4090"), ("NVIDIA A100 80GB", "a100-80"), ("h100-80", "h100-80")])
def test_find_gpu_loosely(ref, key):
    assert find_gpu(ref, detected=[]).key == key


def test_unknown_gpu_lists_close_matches():
    with pytest.raises(UnknownGpu) as exc:
        find_gpu("rtx-4080", detected=[])
    assert "rtx-4090" in exc.value.matches and "voxtune gpus" in str(exc.value)
    with pytest.raises(UnknownGpu):
        find_gpu("a100", detected=[])  # ambiguous: 40 or 80 GB


def make_amd_sysfs(root, *, total=12_868_124_672, used=1_073_741_824, busy="37", render=128, gfx="110001"):
    card = root / "class" / "drm" / "card1"
    dev = card / "device"
    (dev / "drm" / f"renderD{render}").mkdir(parents=True)
    (dev / "vendor").write_text("0x1002\n")
    (dev / "device").write_text("0x747e\n")
    (dev / "mem_info_vram_total").write_text(f"{total}\n")
    (dev / "mem_info_vram_used").write_text(f"{used}\n")
    (dev / "gpu_busy_percent").write_text(f"{busy}\n")
    (root / "class" / "drm" / "card1-DP-1").mkdir()  # connectors are not cards
    intel = root / "class" / "drm" / "card0" / "device"
    intel.mkdir(parents=True)
    (intel / "vendor").write_text("0x8086\n")
    node = root / "class" / "kfd" / "kfd" / "topology" / "nodes" / "1"
    node.mkdir(parents=True)
    (node / "properties").write_text(f"cpu_cores_count 0\ngfx_target_version {gfx}\ndrm_render_minor {render}\n")
    cpu_node = node.parent / "0"
    cpu_node.mkdir()
    (cpu_node / "properties").write_text("cpu_cores_count 16\ngfx_target_version 0\ndrm_render_minor 0\n")


def test_amd_through_sysfs(tmp_path):
    make_amd_sysfs(tmp_path)
    found = detect(sysfs_root=tmp_path, nvml=_NoNvml(), use_amdsmi=False)
    assert len(found) == 1
    g = found[0]
    assert (g.vendor, g.index, g.arch, g.source) == ("amd", 0, "gfx1101", "sysfs")
    assert "7700 XT" in g.name
    assert g.total_gb == pytest.approx(12.868e9 / 2**30, abs=1e-3) and g.used_gb == pytest.approx(1.074e9 / 2**30, abs=1e-3)
    assert g.free_gb == pytest.approx(g.total_gb - g.used_gb)
    assert g.util_percent == 37.0 and g.fast_attention is False


def test_broken_sysfs_values_do_not_crash(tmp_path):
    make_amd_sysfs(tmp_path, used="garbage", busy="")
    g = detect(sysfs_root=tmp_path, nvml=_NoNvml(), use_amdsmi=False)[0]
    assert g.used_gb is None and g.free_gb is None and g.util_percent is None


class _NoNvml:
    """Stands for an NVML library present but with no devices."""

    def nvmlDeviceGetCount(self):
        return 0


class FakeNvml:
    """Stand-in for pynvml (no NVIDIA GPU in CI): the calls detect() makes, same shapes."""

    def __init__(self, procs=()):
        self.procs = procs

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return f"h{i}"

    def nvmlDeviceGetName(self, h):
        return b"NVIDIA GeForce RTX 3060"

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(total=12_884_901_888, used=2_000_000_000, free=10_884_901_888)

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=55, memory=10)

    def nvmlDeviceGetCudaComputeCapability(self, h):
        return (8, 6)

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return [SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in self.procs]


def test_nvidia_through_nvml(tmp_path):
    g = detect(sysfs_root=tmp_path, nvml=FakeNvml(), use_amdsmi=False)[0]
    assert (g.name, g.vendor, g.index, g.arch, g.source) == ("NVIDIA GeForce RTX 3060", "nvidia", 0, "sm_86", "nvml")
    assert g.total_gb == pytest.approx(12.0, abs=1e-3) and g.free_gb == pytest.approx(12.0 - 2e9 / 2**30, abs=1e-3)
    assert g.util_percent == 55.0 and g.fast_attention is True
    assert find_gpu("0", detected=[g]) is g and find_gpu("local", detected=[g]) is g


def test_this_cpu_machine_detects_nothing_quickly():
    t = time.perf_counter()
    for _ in range(20):
        assert detect() == [] or all(g.total_gb > 0 for g in detect())
    assert time.perf_counter() - t < 5  # cheap enough for once a second


def test_nvml_failure_is_remembered_not_raised(monkeypatch):
    monkeypatch.setitem(gpus._nvml_state, "ok", None)
    import pynvml

    def boom():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", boom)
    assert gpus._nvml() is None and gpus._nvml_state["ok"] is False
    assert gpus._detect_nvidia() == []


def test_process_memory_from_nvml_and_from_drm_fdinfo(tmp_path):
    assert process_gpu_memory_gb(42, nvml=FakeNvml(procs=[(42, 3 * 2**30), (7, 1)])) == pytest.approx(3.0)
    fd = tmp_path / "42" / "fdinfo"
    fd.mkdir(parents=True)
    entry = "pos:\t0\nflags:\t02\ndrm-driver:\tamdgpu\ndrm-client-id:\t9\ndrm-memory-vram:\t2048000 KiB\n"
    (fd / "5").write_text(entry)
    (fd / "6").write_text(entry)  # the same client through a second fd counts once
    (fd / "7").write_text("pos:\t0\nflags:\t0100002\n")
    assert process_gpu_memory_gb(42, proc_root=tmp_path, nvml=_NoNvml()) == pytest.approx(2048000 * 1024 / 2**30)
    assert process_gpu_memory_gb(43, proc_root=tmp_path, nvml=_NoNvml()) is None


def test_amd_through_amdsmi_when_installed(monkeypatch, tmp_path):
    """amdsmi's Python API (ROCm >= 6), stood in for: the same calls and return shapes."""
    fake = SimpleNamespace(
        amdsmi_init=lambda: None,
        amdsmi_get_processor_handles=lambda: ["h0"],
        amdsmi_get_gpu_vram_usage=lambda h: {"vram_total": 12272, "vram_used": 512},
        amdsmi_get_gpu_asic_info=lambda h: {"market_name": "AMD Radeon RX 7700 XT", "target_graphics_version": "gfx1101"},
        amdsmi_get_gpu_activity=lambda h: {"gfx_activity": 12, "umc_activity": 0, "mm_activity": 0},
    )
    monkeypatch.setitem(__import__("sys").modules, "amdsmi", fake)
    monkeypatch.setitem(gpus._amdsmi_state, "ok", None)
    g = detect(sysfs_root=tmp_path, nvml=_NoNvml())[0]
    assert (g.name, g.arch, g.source, g.util_percent) == ("AMD Radeon RX 7700 XT", "gfx1101", "amdsmi", 12.0)
    assert g.total_gb == pytest.approx(12272 * 1024 ** 2 / 2**30) and g.free_gb < g.total_gb


def test_amdsmi_that_fails_falls_back_to_sysfs(monkeypatch, tmp_path):
    def broken():
        raise RuntimeError("amdsmi: driver not loaded")

    monkeypatch.setitem(__import__("sys").modules, "amdsmi", SimpleNamespace(amdsmi_init=broken))
    monkeypatch.setitem(gpus._amdsmi_state, "ok", None)
    make_amd_sysfs(tmp_path)
    assert [g.source for g in detect(sysfs_root=tmp_path, nvml=_NoNvml())] == ["sysfs"]
