"""GPUs: shipped presets (data/gpus.json) and the devices on this machine.

Detection is light and safe to call once a second: NVIDIA through NVML (nvidia-ml-py),
AMD through the amdsmi module when installed, else sysfs (/sys/class/drm/cardN/device/
mem_info_vram_total, mem_info_vram_used, gpu_busy_percent) -- the same files `rocm-smi`
reads. No drivers, no devices, broken libraries: an empty list, never an exception or a hang.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from engine.errors import VoxtuneError

GPUS_PATH = Path(__file__).resolve().parents[1] / "data" / "gpus.json"
GIB = 1024**3  # every memory size in voxtune is GiB (2**30 bytes), like torch.cuda peaks
GB = GIB  # the `_gb` names are kept for compatibility; the unit is GiB

# PCI device ids of common AMD cards, for a name when sysfs has no product_name.
AMD_PCI_NAMES = {
    "0x747e": "AMD Radeon RX 7700 XT / 7800 XT",
    "0x744c": "AMD Radeon RX 7900 XT / XTX",
    "0x7480": "AMD Radeon RX 7600",
    "0x73bf": "AMD Radeon RX 6800 / 6900 XT",
    "0x73df": "AMD Radeon RX 6700 XT",
    "0x740f": "AMD Instinct MI210",
    "0x74a1": "AMD Instinct MI300X",
}


@dataclass
class Gpu:
    name: str
    vendor: str  # nvidia | amd | cpu
    index: int | None
    total_gb: float  # GiB (2**30 bytes), like every `_gb` field in voxtune
    used_gb: float | None = None
    free_gb: float | None = None
    util_percent: float | None = None
    arch: str | None = None
    detected: bool = True
    key: str | None = None  # preset key
    fast_attention: bool | None = None
    source: str | None = None  # nvml | amdsmi | sysfs | preset

    @property
    def label(self) -> str:
        if not self.detected:
            return f"{self.name} ({self.total_gb:g} GiB)"
        free = f", {self.free_gb:.1f} GiB free" if self.free_gb is not None else ""
        return f"#{self.index} {self.name} ({self.total_gb:.1f} GiB{free})"

    def to_dict(self) -> dict:
        return asdict(self)


class UnknownGpu(VoxtuneError, LookupError):
    def __init__(self, ref: str, matches: list[str]) -> None:
        self.ref, self.matches = ref, matches
        hint = f"; did you mean {', '.join(matches)}?" if matches else ""
        super().__init__(f"unknown GPU {ref!r}{hint} (`voxtune gpus` lists them; or give --vram GIB)", field="gpu")


# -- presets -------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _presets() -> tuple[Gpu, ...]:
    raw = json.loads(GPUS_PATH.read_text(encoding="utf-8"))
    return tuple(Gpu(name=p["name"], vendor=p["vendor"], index=None, total_gb=_preset_gib(p), arch=p.get("arch"),
                     detected=False, key=p["key"], fast_attention=p.get("fast_attention"), source="preset")
                 for p in raw["presets"])


def _preset_gib(p: dict) -> float:
    """A preset's memory in GiB: `total_gib` (the card's real byte count / 2**30); an older
    file's `total_gb` is the vendor's nominal figure, which for these cards is the GiB count."""
    if p.get("total_gib") is not None:
        return float(p["total_gib"])
    if p.get("total_gb") is not None:
        return float(p["total_gb"])
    raise VoxtuneError(f"GPU preset {p.get('key')!r} has no total_gib", file=str(GPUS_PATH), field="total_gib")


def presets() -> list[Gpu]:
    return list(_presets())


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


def find_gpu(ref: str, detected: list[Gpu] | None = None) -> Gpu:
    """A preset by key or name (loosely: 'rx7700xt', 'RTX 4090'), or a detected device by
    index ('0', '#0') or name; 'local' is the first detected device."""
    detected = detect() if detected is None else detected
    r = _norm(ref)
    if r in ("local", "detected", "this") and detected:
        return detected[0]
    if r.isdigit() and detected:
        for g in detected:
            if g.index == int(r):
                return g
    for g in [*detected, *presets()]:
        keys = {_norm(g.name)} | ({_norm(g.key)} if g.key else set())
        if r in keys:
            return g
    # a unique substring of a preset: "4090", "7700xt"
    subs = [g for g in presets() if r and (r in _norm(g.name) or r in _norm(g.key or ""))]
    if len(subs) == 1:
        return subs[0]
    names = [g.key for g in presets() if g.key] + [g.name for g in detected]
    near = difflib.get_close_matches(ref.lower(), [n.lower() for n in names], n=5, cutoff=0.4)
    near = [n for n in names if n.lower() in near] + [g.key for g in subs if g.key not in near]
    raise UnknownGpu(ref, near[:5])


# -- detection -----------------------------------------------------------------------------
_nvml_state = {"ok": None}  # None: not tried; True: initialised; False: unavailable here


def _nvml():
    """pynvml, initialised once per process; None where there is no NVIDIA driver."""
    if _nvml_state["ok"] is False:
        return None
    try:
        import pynvml
    except Exception:
        _nvml_state["ok"] = False
        return None
    if not _nvml_state["ok"]:
        try:
            pynvml.nvmlInit()
        except Exception:
            _nvml_state["ok"] = False
            return None
        _nvml_state["ok"] = True
    return pynvml


def _detect_nvidia(nvml=None) -> list[Gpu]:
    nv = nvml if nvml is not None else _nvml()
    if nv is None:
        return []
    out = []
    try:
        for i in range(nv.nvmlDeviceGetCount()):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            name = nv.nvmlDeviceGetName(h)
            name = name.decode() if isinstance(name, bytes) else str(name)
            mem = nv.nvmlDeviceGetMemoryInfo(h)
            try:
                util = float(nv.nvmlDeviceGetUtilizationRates(h).gpu)
            except Exception:
                util = None
            try:
                major, minor = nv.nvmlDeviceGetCudaComputeCapability(h)
                arch, cc = f"sm_{major}{minor}", major * 10 + minor
            except Exception:
                arch, cc = None, 0
            out.append(Gpu(name=name, vendor="nvidia", index=i, total_gb=mem.total / GB, used_gb=mem.used / GB,
                           free_gb=mem.free / GB, util_percent=util, arch=arch,
                           fast_attention=cc >= 75, source="nvml"))
    except Exception:
        return out
    return out


def _read(p: Path) -> str | None:
    try:
        return p.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _gfx_from_kfd(root: Path) -> dict[int, str]:
    """render minor -> 'gfx1101', from /sys/class/kfd/kfd/topology/nodes/*/properties."""
    out: dict[int, str] = {}
    nodes = root / "class" / "kfd" / "kfd" / "topology" / "nodes"
    try:
        dirs = sorted(nodes.iterdir())
    except OSError:
        return out
    for d in dirs:
        text = _read(d / "properties") or ""
        props = dict(line.split(None, 1) for line in text.splitlines() if len(line.split(None, 1)) == 2)
        try:
            ver = int(props.get("gfx_target_version", "0"))
            minor = int(props.get("drm_render_minor", "-1"))
        except ValueError:
            continue
        if ver:
            out[minor] = f"gfx{ver // 10000}{(ver // 100) % 100}{ver % 100:x}"
    return out


def _detect_amd_sysfs(root: Path) -> list[Gpu]:
    drm = root / "class" / "drm"
    try:
        cards = sorted((c for c in drm.iterdir() if re.fullmatch(r"card\d+", c.name)), key=lambda c: int(c.name[4:]))
    except OSError:
        return []
    gfx = _gfx_from_kfd(root)
    out = []
    for card in cards:
        dev = card / "device"
        if _read(dev / "vendor") != "0x1002":
            continue
        total, used = _read(dev / "mem_info_vram_total"), _read(dev / "mem_info_vram_used")
        if not total or not total.isdigit():
            continue
        busy = _read(dev / "gpu_busy_percent")
        pci = _read(dev / "device") or ""
        name = _read(dev / "product_name") or AMD_PCI_NAMES.get(pci, f"AMD GPU {pci}".strip())
        arch = None
        try:
            for r in (dev / "drm").iterdir():
                if r.name.startswith("renderD"):
                    arch = gfx.get(int(r.name[7:]))
        except (OSError, ValueError):
            pass
        t = int(total) / GB
        u = int(used) / GB if used and used.isdigit() else None
        out.append(Gpu(name=name, vendor="amd", index=len(out), total_gb=t, used_gb=u,
                       free_gb=(t - u) if u is not None else None,
                       util_percent=float(busy) if busy and busy.isdigit() else None, arch=arch,
                       fast_attention=False if arch and arch.startswith("gfx11") else None, source="sysfs"))
    return out


_amdsmi_state = {"ok": None}


def _amdsmi():
    """The amdsmi module, initialised once per process; None where it is absent or fails."""
    if _amdsmi_state["ok"] is False:
        return None
    try:
        import amdsmi  # type: ignore

        if not _amdsmi_state["ok"]:
            amdsmi.amdsmi_init()
            _amdsmi_state["ok"] = True
        return amdsmi
    except Exception:
        _amdsmi_state["ok"] = False
        return None


def _detect_amd_smi() -> list[Gpu]:
    amdsmi = _amdsmi()
    if amdsmi is None:
        return []
    out = []
    try:
        for i, h in enumerate(amdsmi.amdsmi_get_processor_handles()):
            vram = amdsmi.amdsmi_get_gpu_vram_usage(h)  # MB
            asic = amdsmi.amdsmi_get_gpu_asic_info(h)
            try:
                util = float(amdsmi.amdsmi_get_gpu_activity(h)["gfx_activity"])
            except Exception:
                util = None
            t, u = vram["vram_total"] * 1024 ** 2 / GB, vram["vram_used"] * 1024 ** 2 / GB
            arch = asic.get("target_graphics_version") or None
            out.append(Gpu(name=asic.get("market_name") or "AMD GPU", vendor="amd", index=i, total_gb=t, used_gb=u,
                           free_gb=t - u, util_percent=util, arch=arch,
                           fast_attention=False if arch and str(arch).startswith("gfx11") else None, source="amdsmi"))
    except Exception:
        return []
    return out


def detect(sysfs_root: str | os.PathLike = "/sys", nvml=None, use_amdsmi: bool = True) -> list[Gpu]:
    """Local devices, NVIDIA first; [] on a CPU-only machine. Cheap: NVML is initialised once,
    sysfs reads are a handful of small files."""
    gpus = _detect_nvidia(nvml)
    amd = _detect_amd_smi() if use_amdsmi else []
    if not amd:
        amd = _detect_amd_sysfs(Path(sysfs_root))
    for g in amd:
        g.index = len([x for x in gpus if x.vendor == "amd"]) if g.index is None else g.index
    return gpus + amd


def all_gpus(detected: list[Gpu] | None = None) -> list[Gpu]:
    """Detected devices first, then presets: what the GPU picker offers."""
    return [*(detect() if detected is None else detected), *presets()]


def process_gpu_memory_gb(pid: int, proc_root: str | os.PathLike = "/proc", nvml=None) -> float | None:
    """GPU memory held by one process: NVML's per-process figure, else the DRM fdinfo
    `drm-memory-vram` lines the amdgpu driver publishes (each client counted once)."""
    nv = nvml if nvml is not None else _nvml()
    if nv is not None:
        try:
            total, found = 0, False
            for i in range(nv.nvmlDeviceGetCount()):
                h = nv.nvmlDeviceGetHandleByIndex(i)
                for p in nv.nvmlDeviceGetComputeRunningProcesses(h):
                    if p.pid == pid and p.usedGpuMemory is not None:
                        total += p.usedGpuMemory
                        found = True
            if found:
                return total / GB
        except Exception:
            pass
    fdinfo = Path(proc_root) / str(pid) / "fdinfo"
    try:
        files = list(fdinfo.iterdir())
    except OSError:
        return None
    clients: dict[str, float] = {}
    units = {"": 1, "B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3}
    for f in files:
        text = _read(f)
        if not text or "drm-memory-vram" not in text:
            continue
        client = re.search(r"drm-client-id:\s*(\d+)", text)
        m = re.search(r"drm-memory-vram:\s*(\d+)\s*(\w*)", text)
        if m:
            clients[client.group(1) if client else f.name] = int(m.group(1)) * units.get(m.group(2), 1)
    return sum(clients.values()) / GB if clients else None
