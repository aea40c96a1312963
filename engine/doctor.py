"""`voxtune doctor`: what a fresh GPU box needs before the first run, each finding with a fix.

The ML checks (torch build, visible GPU, bitsandbytes, fused attention) run in a child
process, `python -m engine.doctor --probe`, which prints one JSON object: callers (CLI, TUI)
never import torch. `findings()` turns a probe and the light checks into findings; it is
pure, so each rule is tested with recorded probes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from engine.gpus import Gpu, detect

PROBE_TIMEOUT_S = 180
# The probe announces each check on stderr with this prefix before running it (importing torch
# alone can take half a minute): `voxtune doctor` shows them as progress.
PROGRESS_PREFIX = "voxtune-doctor-progress: "


def _announce(check: str) -> None:
    print(PROGRESS_PREFIX + check, file=sys.stderr, flush=True)
MIN_FREE_DISK_GB = 20  # a 7B checkpoint is ~16 GB; plus run checkpoints
BNB_RDNA_4BIT = (0, 49)  # 4-bit on RDNA needs bitsandbytes >= 0.49 (REFERENCE s.3)
# HSA_OVERRIDE_GFX_VERSION values for consumer cards ROCm may not list: RDNA3 -> 11.0.0,
# RDNA2 -> 10.3.0.
HSA_OVERRIDES = {"gfx1101": "11.0.0", "gfx1102": "11.0.0", "gfx1103": "11.0.0",
                 "gfx1031": "10.3.0", "gfx1032": "10.3.0", "gfx1034": "10.3.0", "gfx1035": "10.3.0"}


@dataclass
class Finding:
    check: str
    status: str  # ok | warn | fail | info
    detail: str
    fix: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


# -- the probe (child process) -------------------------------------------------------------
def probe() -> dict:
    """Runs in the child: everything that needs torch & co."""
    out: dict = {"python": sys.version.split()[0]}
    _announce("torch: importing it")
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - report any import failure
        out["torch_error"] = f"{type(e).__name__}: {e}"
        return out
    out["torch"] = torch.__version__
    out["cuda"] = torch.version.cuda
    out["hip"] = getattr(torch.version, "hip", None)
    out["build"] = "rocm" if out["hip"] else ("cuda" if out["cuda"] else "cpu")
    _announce("GPU: asking torch for devices")
    try:
        out["gpu_available"] = bool(torch.cuda.is_available())
        out["device_count"] = torch.cuda.device_count() if out["gpu_available"] else 0
    except Exception as e:  # noqa: BLE001
        out["gpu_available"], out["device_count"], out["gpu_error"] = False, 0, str(e)
    devices = []
    for i in range(out["device_count"]):
        p = torch.cuda.get_device_properties(i)
        d = {"name": p.name, "total_gb": p.total_memory / 1024**3, "arch": getattr(p, "gcnArchName", None)
             or f"sm_{p.major}{p.minor}", "bf16": None}
        try:
            free, total = torch.cuda.mem_get_info(i)
            d["free_gb"] = free / 1024**3
        except Exception:  # noqa: BLE001
            d["free_gb"] = None
        devices.append(d)
    out["devices"] = devices
    if devices:
        try:
            out["bf16"] = bool(torch.cuda.is_bf16_supported())
        except Exception:  # noqa: BLE001
            out["bf16"] = None
        _announce("attention kernels: trying fused SDPA")
        out["fused_attention"] = _fused_attention_works(torch)
    for mod in ("transformers", "peft", "accelerate", "bitsandbytes", "flash_attn"):
        _announce(f"{mod}: importing it")
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", "installed")
        except Exception as e:  # noqa: BLE001
            out[mod] = None
            out[f"{mod}_error"] = f"{type(e).__name__}: {str(e)[:200]}"
    return out


def _fused_attention_works(torch) -> dict:
    """Try each fused SDPA kernel on a tiny input: on RDNA3 they are often missing."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(1, 2, 16, 64, device="cuda", dtype=torch.float16)
    res = {}
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("mem_efficient", SDPBackend.EFFICIENT_ATTENTION)):
        try:
            with sdpa_kernel(backend):
                torch.nn.functional.scaled_dot_product_attention(q, q, q)
            res[name] = True
        except Exception:  # noqa: BLE001
            res[name] = False
    return res


def run_probe(timeout: float = PROBE_TIMEOUT_S, progress: Callable[[str], None] | None = None) -> dict:
    """The probe in a child process; {"probe_error": ...} if it fails or times out.
    `progress(check)` is called as the child starts each check (its stderr is read live)."""
    from engine.procs import python_module, safe_env

    proc = subprocess.Popen(python_module("engine.doctor", "--probe"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=safe_env(), cwd=str(Path(__file__).resolve().parents[1]))
    stdout: list[str] = []
    reader = threading.Thread(target=lambda: stdout.append(proc.stdout.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    expired = threading.Event()

    def kill() -> None:
        expired.set()
        proc.kill()

    timer = threading.Timer(timeout, kill)
    timer.start()
    tail: list[str] = []
    try:
        for line in proc.stderr:  # type: ignore[union-attr]
            if line.startswith(PROGRESS_PREFIX):
                if progress is not None:
                    progress(line[len(PROGRESS_PREFIX):].strip())
            elif line.strip():
                tail = (tail + [line.strip()])[-3:]
        proc.wait()
    finally:
        timer.cancel()
        reader.join(timeout=5)
    if expired.is_set():
        return {"probe_error": f"the ML probe took over {timeout:.0f} s (importing torch); try again"}
    try:
        return json.loads("".join(stdout).strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return {"probe_error": f"the ML probe exited {proc.returncode}: {' | '.join(tail)}"}


# -- rules -----------------------------------------------------------------------------------
def _ver(v: str | None) -> tuple[int, ...]:
    parts = []
    for p in (v or "0").split("+")[0].split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def findings(probe: dict, gpus: list[Gpu], home: Path, env: dict | None = None,
             ffmpeg: str | None = None, disk_free_gb: float | None = None) -> list[Finding]:
    env = dict(os.environ) if env is None else env
    out: list[Finding] = []
    add = lambda *a: out.append(Finding(*a))  # noqa: E731
    amd = [g for g in gpus if g.vendor == "amd"]
    nvidia = [g for g in gpus if g.vendor == "nvidia"]

    # torch build and whether it sees the GPU
    if "probe_error" in probe:
        add("torch", "fail", probe["probe_error"], "run `python -c 'import torch'` to see the error")
    elif "torch_error" in probe:
        add("torch", "fail", f"torch does not import: {probe['torch_error']}",
            "install torch first (see README: ROCm/CUDA users)")
    else:
        build = probe.get("build", "cpu")
        label = {"rocm": f"ROCm/HIP {probe.get('hip')}", "cuda": f"CUDA {probe.get('cuda')}", "cpu": "CPU-only"}[build]
        if probe.get("gpu_available"):
            names = ", ".join(d["name"] for d in probe.get("devices", []))
            add("torch", "ok", f"torch {probe.get('torch')} ({label}) sees {probe.get('device_count')} GPU(s): {names}")
        elif amd and build != "rocm":
            add("torch", "fail", f"torch {probe.get('torch')} is a {label} build but this machine has an AMD GPU",
                "pip install torch --index-url https://download.pytorch.org/whl/rocm6.4 (match your ROCm version)")
        elif nvidia and build != "cuda":
            add("torch", "fail", f"torch {probe.get('torch')} is a {label} build but this machine has an NVIDIA GPU",
                "pip install torch --index-url https://download.pytorch.org/whl/cu128 (match your driver)")
        elif gpus:
            add("torch", "fail", f"torch {probe.get('torch')} ({label}) does not see the GPU"
                + (f": {probe['gpu_error']}" if probe.get("gpu_error") else ""),
                "check the driver (`rocminfo` / `nvidia-smi`) and that your user is in the video and render groups")
        else:
            add("torch", "warn", f"torch {probe.get('torch')} ({label}); no GPU: training runs on the CPU (slow)",
                "fine for tests and tiny models; use a GPU box for real runs")

    # GPU architecture and ROCm's HSA override
    for g in amd:
        arch = g.arch or next((d.get("arch") for d in probe.get("devices", []) if d.get("arch")), None)
        base_arch = (arch or "").split(":")[0]
        override = HSA_OVERRIDES.get(base_arch)
        current = env.get("HSA_OVERRIDE_GFX_VERSION")
        if not arch:
            add("gpu-arch", "info", f"{g.name}: architecture unknown (no ROCm topology in sysfs)",
                "install ROCm and run `rocminfo | grep gfx`")
        elif override and not probe.get("gpu_available") and not current:
            add("gpu-arch", "warn", f"{g.name} is {arch}; this ROCm/torch may not list it",
                f"export HSA_OVERRIDE_GFX_VERSION={override} before starting voxtune")
        else:
            note = f" (HSA_OVERRIDE_GFX_VERSION={current})" if current else ""
            add("gpu-arch", "ok", f"{g.name} is {arch}{note}")
    for g in nvidia:
        add("gpu-arch", "ok", f"{g.name} is {g.arch or 'unknown arch'}")

    # bitsandbytes (qlora / lora8 / 8-bit optimizers)
    if "probe_error" not in probe and "torch_error" not in probe:
        bnb = probe.get("bitsandbytes")
        if not bnb:
            add("bitsandbytes", "warn", "bitsandbytes is not installed: qlora, lora8 and adamw8bit are unavailable",
                "pip install 'bitsandbytes>=0.49'")
        else:
            backend = {"rocm": "ROCm", "cuda": "CUDA"}.get(probe.get("build"), "CPU (slow)") \
                if probe.get("gpu_available") else "CPU (slow; no GPU visible)"
            if probe.get("build") == "rocm" and _ver(bnb) < BNB_RDNA_4BIT:
                add("bitsandbytes", "warn", f"bitsandbytes {bnb} ({backend}): 4-bit on RDNA needs >= 0.49",
                    "pip install -U 'bitsandbytes>=0.49'")
            else:
                add("bitsandbytes", "ok", f"bitsandbytes {bnb}, backend {backend}")

    # fused attention: where missing the estimator must count the s^2 attention matrix
    fused = probe.get("fused_attention")
    if fused is not None:
        if fused.get("flash") or fused.get("mem_efficient"):
            kinds = ", ".join(k for k, v in fused.items() if v)
            add("attention", "ok", f"fused attention kernels available ({kinds})",
                "estimates may use --attention sdpa (less activation memory)")
        else:
            add("attention", "warn", "no fused attention kernel works on this GPU: attention matrices are stored "
                "(usual on RDNA3)", "keep the estimator's default --attention math; prefer shorter audio per example")
    elif probe.get("gpu_available") is False and "torch" in probe:
        add("attention", "info", "no GPU: fused attention not checked", None)

    # free VRAM
    for g in gpus:
        if g.free_gb is not None:
            status = "ok" if g.free_gb >= 0.8 * g.total_gb else "warn"
            add("vram", status, f"{g.name}: {g.free_gb:.1f} of {g.total_gb:.1f} GiB free",
                None if status == "ok" else "other processes (display, another run) hold VRAM: "
                "voxtune admits runs against free memory")

    # disk in the workspace
    if disk_free_gb is None:
        try:
            disk_free_gb = shutil.disk_usage(home).free / 1e9
        except OSError:
            disk_free_gb = None
    if disk_free_gb is not None:
        ok = disk_free_gb >= MIN_FREE_DISK_GB
        add("disk", "ok" if ok else "warn", f"{disk_free_gb:.0f} GB free in {home}",
            None if ok else f"free space or use --home on a bigger disk (>= {MIN_FREE_DISK_GB} GB advised)")

    # ffmpeg (decoding mp3/m4a/ogg recordings)
    ffmpeg = shutil.which("ffmpeg") if ffmpeg is None else (ffmpeg or None)
    if ffmpeg:
        add("ffmpeg", "ok", f"ffmpeg at {ffmpeg}")
    else:
        add("ffmpeg", "warn", "ffmpeg not found: only WAV/FLAC/OGG recordings can be imported",
            "apt install ffmpeg (or conda install ffmpeg)")

    # Hugging Face cache and offline mode
    hf_home = env.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")
    cache = env.get("HF_HUB_CACHE") or str(Path(hf_home) / "hub")
    offline = str(env.get("HF_HUB_OFFLINE", "")).lower() in ("1", "true", "yes")
    add("hf-cache", "info", f"Hugging Face cache: {cache}" + ("; offline mode (HF_HUB_OFFLINE=1)" if offline else
                                                              "; online (models download on first use)"),
        "set HF_HOME to put the cache on a big disk" + ("; unset HF_HUB_OFFLINE to download models" if offline else ""))
    return out


def run_doctor(home: Path, probe_result: dict | None = None,
               progress: Callable[[str], None] | None = None) -> list[Finding]:
    """Every check; `progress(check)` is told of each one as it starts (the CLI prints them)."""
    say = progress or (lambda _check: None)
    result = run_probe(progress=say) if probe_result is None else probe_result
    say("GPUs: detecting them")
    gpus = detect()
    say("disk, ffmpeg, Hugging Face cache")
    return findings(result, gpus, Path(home))


if __name__ == "__main__":
    if "--probe" in sys.argv[1:]:
        print(json.dumps(probe()))
        sys.exit(0)
    print("usage: python -m engine.doctor --probe   (or: voxtune doctor)", file=sys.stderr)
    sys.exit(2)
