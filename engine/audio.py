"""Reading audio the same way everywhere: 16 kHz mono float32, whatever the file.

soundfile (libsndfile) reads wav/flac/ogg/mp3 directly; m4a/aac/opus/webm go through an
ffmpeg subprocess. torchaudio >= 2.9 cannot decode without torchcodec, so it is used only
for resampling, and imported inside the function: this module stays light for the TUI.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from engine.errors import VoxtuneError

TARGET_SR = 16000
SOUNDFILE_EXTS = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif"}
FFMPEG_EXTS = {".m4a", ".aac", ".opus", ".webm", ".mp4", ".wma"}
AUDIO_EXTS = SOUNDFILE_EXTS | FFMPEG_EXTS


class AudioError(VoxtuneError):
    """A file that cannot be read as audio; the message says which file and what to do."""


@dataclass(frozen=True)
class AudioInfo:
    duration: float  # seconds
    sample_rate: int
    channels: int


def _needs_ffmpeg(path: Path) -> bool:
    return path.suffix.lower() in FFMPEG_EXTS


def _ffmpeg_missing(path: Path) -> AudioError:
    return AudioError(
        f"{path}: {path.suffix} audio needs ffmpeg, which is not installed; "
        "install it (e.g. `sudo apt install ffmpeg`) or convert the file to wav/flac"
    )


def probe(path: str | Path) -> AudioInfo:
    """Duration, rate and channels from the header, without decoding the samples."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty (0 bytes)")
    if _needs_ffmpeg(path):
        return _probe_ffprobe(path)
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as e:  # libsndfile says "Format not recognised" and the like
        raise AudioError(f"{path}: unreadable audio ({_short(e)})") from e
    if info.frames <= 0 or info.samplerate <= 0:
        # mp3 headers may not carry a frame count: decode to be sure
        if path.suffix.lower() == ".mp3":
            data, sr = _read_soundfile(path)
            return AudioInfo(len(data) / sr, sr, data.shape[1])
        raise AudioError(f"{path}: audio has no samples (zero length)")
    return AudioInfo(info.frames / info.samplerate, int(info.samplerate), int(info.channels))


def _probe_ffprobe(path: Path) -> AudioInfo:
    if shutil.which("ffprobe") is None:
        raise _ffmpeg_missing(path)
    cmd = ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
           "stream=sample_rate,channels:format=duration", "-of", "json", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    try:
        out = json.loads(proc.stdout or "{}")
        stream = out["streams"][0]
        duration = float(out["format"]["duration"])
        return AudioInfo(duration, int(stream["sample_rate"]), int(stream["channels"]))
    except (KeyError, IndexError, ValueError, json.JSONDecodeError) as e:
        raise AudioError(f"{path}: unreadable audio ({proc.stderr.strip()[:200] or 'no audio stream'})") from e


def _short(e: Exception) -> str:
    return str(e).replace("\n", " ").strip()[:200]


def _read_soundfile(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(f"{path}: unreadable audio ({_short(e)})") from e
    return data, int(sr)


def _read_ffmpeg(path: Path, sr: int) -> tuple[np.ndarray, int]:
    if shutil.which("ffmpeg") is None:
        raise _ffmpeg_missing(path)
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "1",
           "-ar", str(sr), "-"]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        raise AudioError(f"{path}: unreadable audio ({proc.stderr.decode(errors='replace').strip()[:200]})")
    return np.frombuffer(proc.stdout, dtype="<f4").reshape(-1, 1).copy(), sr


def read_native(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 at the file's own rate (enough for validation: no resampling cost)."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: file not found")
    if _needs_ffmpeg(path):
        data, sr = _read_ffmpeg(path, TARGET_SR)
    else:
        data, sr = _read_soundfile(path)
    if data.shape[0] == 0:
        raise AudioError(f"{path}: audio has no samples (zero length)")
    return data.mean(axis=1).astype(np.float32), sr


def resample(audio: np.ndarray, orig_sr: int, sr: int = TARGET_SR) -> np.ndarray:
    if orig_sr == sr:
        return audio.astype(np.float32, copy=False)
    import torch
    import torchaudio.functional as F

    out = F.resample(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), orig_sr, sr)
    return out.numpy().astype(np.float32, copy=False)


def load_audio(path: str | Path, sr: int = TARGET_SR) -> np.ndarray:
    """The file as mono float32 at `sr` (default 16 kHz): what every recipe feeds its model."""
    path = Path(path)
    if _needs_ffmpeg(path):  # ffmpeg resamples and downmixes itself
        if not path.exists():
            raise AudioError(f"{path}: file not found")
        data, _ = _read_ffmpeg(path, sr)
        return data[:, 0]
    audio, orig = read_native(path)
    return resample(audio, orig, sr)


def content_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of the file's bytes: finds identical audio imported twice under other names."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# -- silence -------------------------------------------------------------------------------
SILENCE_DBFS = -50.0  # a clip whose loudest 30 ms frame is below this holds no speech
FRAME_S = 0.03


def frame_db(audio: np.ndarray, sr: int, frame_s: float = FRAME_S) -> np.ndarray:
    """RMS level of consecutive frames in dBFS (-120 for digital silence)."""
    n = max(1, int(sr * frame_s))
    usable = len(audio) // n * n
    if usable == 0:
        return np.full(1, 20 * np.log10(max(float(np.sqrt(np.mean(audio**2))) if len(audio) else 0.0, 1e-6)))
    frames = audio[:usable].reshape(-1, n).astype(np.float64)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-6))


def is_silent(audio: np.ndarray, sr: int, threshold_db: float = SILENCE_DBFS) -> bool:
    return len(audio) == 0 or float(frame_db(audio, sr).max()) < threshold_db


def pauses(audio: np.ndarray, sr: int, min_pause_s: float = 0.25, rel_db: float = -35.0,
           frame_s: float = FRAME_S) -> list[tuple[float, float]]:
    """Quiet stretches of at least `min_pause_s`, as (start_s, end_s).

    "Quiet" is relative to the clip's own loud frames (95th percentile + rel_db), with an
    absolute floor, so it works for quiet and loud recordings alike.
    """
    db = frame_db(audio, sr, frame_s)
    if len(db) == 0:
        return []
    thresh = max(float(np.percentile(db, 95)) + rel_db, SILENCE_DBFS - 10)
    quiet = db < thresh
    out: list[tuple[float, float]] = []
    start = None
    for i, q in enumerate(np.append(quiet, False)):
        if q and start is None:
            start = i
        elif not q and start is not None:
            if (i - start) * frame_s >= min_pause_s:
                out.append((start * frame_s, min(i * frame_s, len(audio) / sr)))
            start = None
    return out


def voiced_seconds(audio: np.ndarray, sr: int, rel_db: float = -35.0) -> np.ndarray:
    """Per-frame 1/0 voicing mask (frame length FRAME_S), for spreading words over speech."""
    db = frame_db(audio, sr)
    thresh = max(float(np.percentile(db, 95)) + rel_db, SILENCE_DBFS - 10)
    return (db >= thresh).astype(np.float64)
