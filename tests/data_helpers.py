"""Audio and dataset fixtures built on the spot: numpy "speech" (tone bursts with pauses),
silence, espeak-ng speech, and folder layouts. Import with `from data_helpers import ...`
(pytest puts tests/ on sys.path through rootdir conftest)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000


def burst_audio(seconds: float, sr: int = SR, seed: int = 0, word_s: float = 0.35, gap_s: float = 0.12,
                pause_every: int = 8, pause_s: float = 0.6) -> np.ndarray:
    """Speech-like audio: 'words' (noisy tones) separated by short gaps and longer pauses."""
    rng = np.random.default_rng(seed)
    out, n_words = [], 0
    total = int(seconds * sr)
    size = 0
    while size < total:
        n = int(word_s * sr * rng.uniform(0.7, 1.3))
        t = np.arange(n) / sr
        tone = 0.3 * np.sin(2 * np.pi * rng.uniform(120, 300) * t) * np.hanning(n)
        out.append((tone + 0.02 * rng.standard_normal(n)).astype(np.float32))
        n_words += 1
        gap = pause_s if n_words % pause_every == 0 else gap_s
        out.append(np.zeros(int(gap * sr), np.float32))
        size += n + int(gap * sr)
    return np.concatenate(out)[:total]


def write_wav(path: Path, audio: np.ndarray, sr: int = SR, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.stack([audio] * channels, axis=1) if channels > 1 else audio
    sf.write(str(path), data, sr)
    return path


def tone_clip(path: Path, seconds: float = 2.0, seed: int = 0, sr: int = SR, channels: int = 1) -> Path:
    return write_wav(path, burst_audio(seconds, sr, seed), sr, channels)


def silent_clip(path: Path, seconds: float = 2.0, sr: int = SR) -> Path:
    return write_wav(path, np.zeros(int(seconds * sr), np.float32), sr)


def espeak_clip(path: Path, text: str, voice: str = "en-us", speed: int = 170) -> Path:
    """Real synthetic speech (needs espeak-ng and sox); 16 kHz mono wav."""
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", str(SR), "-c", "1", str(path)], check=True)
    raw.unlink()
    return path


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


def make_folder_dataset(root: Path, n: int = 10, seconds: float = 1.5) -> Path:
    """n good clips clip00.wav + clip00.txt ... (distinct audio, distinct texts)."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        tone_clip(root / f"clip{i:02d}.wav", seconds, seed=i)
        (root / f"clip{i:02d}.txt").write_text(f"Clip number {i} says something clean.\n", encoding="utf-8")
    return root


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root (to prove import changed nothing)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
