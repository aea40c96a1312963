"""How close the analytical VRAM estimate (engine.estimator, instant) is to the traced peak
(engine.trace: two real-size training steps on fake tensors, config only), per configuration.

    .venv/bin/python tests/benchmarks/bench_fit_accuracy.py [--cache DIR] [--only SUBSTR]
    .venv/bin/python tests/benchmarks/bench_fit_accuracy.py --gpu      # on a CUDA/ROCm machine

Prints one row per configuration: analytical tensors (GiB), traced peak (GiB) and the signed
% error (positive: the estimate is high). Goal: every row within 10%. Both sides leave out
the runtime/allocator overhead term (it is the same function of the tensor peak on both
sides; the published GPU anchors in tests/unit/test_fit_anchors.py check it).

Traces are cached under --cache (default $TMPDIR/voxtune-bench-traces), keyed by the model
config and options (engine.trace.cache_key), so a rerun after an estimator change re-traces
nothing. Run under the CPU lock: a cold run traces ~30 configurations (~20-60 s each).

--gpu: trains each configuration for a few steps on the GPU, from random init at real size
(transformers + peft + torch only: no qlora/lora8 rows, they need bitsandbytes), records
torch.cuda.max_memory_reserved/allocated against the estimate, and writes
data/fit_calibration_gpu.json (device, torch/CUDA/ROCm versions, date) that `voxtune fit` shows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

# (catalog name, method, batch, audio seconds): every trainable family the tracer builds x
# {full, lora} x batch {1, 4} x {30 s, 300 s where the family takes long audio}, plus qlora /
# lora8 rows for Whisper, Qwen2-Audio and Voxtral.
ROWS: list[tuple[str, str, int, float]] = (
    [("whisper-small", m, b, 30) for m in ("full", "lora") for b in (1, 4)]
    + [("whisper-large-v3", m, b, 30) for m in ("full", "lora") for b in (1, 4)]
    + [("voxtral-mini-3b", m, b, s) for m in ("full", "lora") for b in (1, 4) for s in (30, 300)]
    + [("qwen2-audio-7b-instruct", m, b, s) for m in ("full", "lora") for b in (1, 4) for s in (30, 300)]
    + [(n, m, 1, 30) for n in ("whisper-small", "voxtral-mini-3b", "qwen2-audio-7b-instruct")
       for m in ("qlora", "lora8")]
    # CTC (Parakeet-CTC, w2v-BERT), Moonshine (generic seq2seq), SeamlessM4T v2: 30 s windows,
    # a longer clip is segmented into 30 s examples (no 300 s rows)
    + [(n, m, b, 30) for n in ("parakeet-ctc-0.6b", "w2v-bert-2.0", "moonshine-base", "seamless-m4t-v2-large")
       for m in ("full", "lora") for b in (1, 4)]
    # audio LLMs of the generic recipe that take long audio natively (GLM-ASR, Audio Flamingo 3)
    + [(n, m, b, s) for n in ("glm-asr-nano-2512", "audio-flamingo-3") for m in ("full", "lora") for b in (1, 4)
       for s in (30, 300)]
)
GOAL_PCT = 10.0


def configs():
    from engine.catalog import get_model
    from engine.estimator import FitConfig

    for name, method, batch, seconds in ROWS:
        yield get_model(name), FitConfig(method=method, batch=batch, audio_seconds=seconds)


def run_trace(cache: Path, only: str | None) -> int:
    from engine import trace as tr
    from engine.estimator import estimate

    print(f"{'model':<24}{'method':>6}{'b':>3}{'sec':>5}{'analytic':>10}{'traced':>9}{'error':>8}  trace s")
    worst, n_ok, n = 0.0, 0, 0
    for entry, cfg in configs():
        label = f"{entry.name}:{cfg.method}:{cfg.batch}:{cfg.audio_seconds:g}"
        if only and only not in label:
            continue
        d = asdict(cfg)
        hit = tr.cached(cache, entry.to_dict(), d)
        if hit is None:
            hit = tr.trace(entry.to_dict(), d)
            tr.store(cache, entry.to_dict(), d, hit)
            took = f"{hit['seconds']:.0f}"
        else:
            took = "cached"
        est = estimate(entry, cfg)
        an, traced = est.tensors_gb, hit["total_gb"]
        err = 100 * (an - traced) / traced
        worst = max(worst, abs(err))
        n += 1
        n_ok += abs(err) <= GOAL_PCT
        print(f"{entry.name:<24}{cfg.method:>6}{cfg.batch:>3}{cfg.audio_seconds:>5g}{an:>10.2f}{traced:>9.2f}"
              f"{err:>+7.1f}%  {took}", flush=True)
    print(f"{n_ok}/{n} rows within {GOAL_PCT:g}%; worst {worst:.1f}% (GiB, tensors only, overhead excluded)")
    return 0 if n_ok == n else 1


# -- on a GPU ---------------------------------------------------------------------------------
GPU_ROWS = [("whisper-small", "full", 4, 30), ("whisper-small", "lora", 4, 30), ("whisper-large-v3", "lora", 1, 30),
            ("whisper-large-v3", "full", 1, 30), ("voxtral-mini-3b", "lora", 1, 30), ("voxtral-mini-3b", "lora", 1, 300),
            ("qwen2-audio-7b-instruct", "lora", 1, 30), ("parakeet-ctc-0.6b", "lora", 4, 30),
            ("moonshine-base", "full", 4, 30), ("glm-asr-nano-2512", "lora", 1, 30)]  # qlora/lora8: bitsandbytes, not here


def run_gpu(out_path: Path, steps: int) -> int:
    """Random-init real-size models, `steps` optimizer steps each, peak reserved/allocated."""
    import platform

    import torch

    from engine import trace as tr
    from engine.catalog import get_model
    from engine.estimator import FitConfig, estimate

    if not torch.cuda.is_available():
        print("no CUDA/ROCm device: nothing to measure", file=sys.stderr)
        return 2
    dev = torch.device("cuda")
    points = []
    for name, method, batch, seconds in GPU_ROWS:
        entry = get_model(name)
        cfg = FitConfig(method=method, batch=batch, audio_seconds=seconds)
        est = estimate(entry, cfg)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.monotonic()
        try:
            tr.train_steps_on_device(entry.to_dict(), asdict(cfg), dev, steps=steps)
            oom = False
        except torch.cuda.OutOfMemoryError:
            oom = True
        except Exception as err:  # noqa: BLE001 - one row failing must not lose the others
            print(f"{name} {method}: {type(err).__name__}: {err}", file=sys.stderr)
            continue
        reserved = torch.cuda.max_memory_reserved() / tr.GIB
        allocated = torch.cuda.max_memory_allocated() / tr.GIB
        points.append({"model": name, "method": method, "batch": batch, "audio_seconds": seconds,
                       "peak_reserved_gb": round(reserved, 3), "peak_allocated_gb": round(allocated, 3),
                       "estimate_gb": round(est.total_gb, 3), "estimate_tensors_gb": round(est.tensors_gb, 3),
                       "oom": oom, "seconds": round(time.monotonic() - t0, 1)})
        print(json.dumps(points[-1]), flush=True)
    doc = {"schema": 1, "unit": "GiB", "device": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "cuda": torch.version.cuda, "rocm": getattr(torch.version, "hip", None), "python": platform.python_version(),
           "date": time.strftime("%Y-%m-%d"), "steps": steps, "points": points}
    out_path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out_path}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "voxtune-bench-traces"))
    ap.add_argument("--only", default=None, help="rows whose model:method:batch:seconds contains this")
    ap.add_argument("--gpu", action="store_true", help="measure on the GPU; writes data/fit_calibration_gpu.json")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "data" / "fit_calibration_gpu.json"))
    args = ap.parse_args()
    if args.gpu:
        return run_gpu(Path(args.out), args.steps)
    return run_trace(Path(args.cache), args.only)


if __name__ == "__main__":
    sys.exit(main())
