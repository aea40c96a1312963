"""`--report-to tensorboard,trackio`: a tiny Whisper run through the real worker writes its
metrics into both, inside the run folder, without touching the network; the event files and
trackio's database read back (with the libraries' own readers) hold the same numbers as
metrics.jsonl: train loss and learning rate, eval WER/CER/filler/deletion rates per evaluation,
and the pinned clips' predictions as text."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from tiny_models import make_tiny_dataset, make_tiny_whisper  # noqa: E402

from engine.runfiles import RunFiles, read_json, read_jsonl  # noqa: E402

REPO = TESTS.parent
pytestmark = pytest.mark.functional

# Loaded by the worker's interpreter (sitecustomize): any attempt to resolve a host name or to
# open an internet socket is written to a file and fails.
NET_GUARD = '''
import os, socket
_log = os.environ["VOXTUNE_TEST_NET_LOG"]
def _note(what):
    with open(_log, "a") as f:
        f.write(repr(what) + "\\n")
_connect = socket.socket.connect
def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _note(("connect", address))
        raise OSError("network blocked by the test")
    return _connect(self, address)
_getaddrinfo = socket.getaddrinfo
def getaddrinfo(host, *a, **k):
    if host not in (None, "localhost", "127.0.0.1", "::1"):
        _note(("getaddrinfo", host))
        raise socket.gaierror("network blocked by the test")
    return _getaddrinfo(host, *a, **k)
socket.socket.connect = connect
socket.getaddrinfo = getaddrinfo
'''


def test_metrics_reach_tensorboard_and_trackio_locally(ws, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from engine import queue

    model = make_tiny_whisper(tmp_path / "tiny-whisper")
    make_tiny_dataset(ws, n=4, splits={"train": [0, 1, 2, 3], "validation": [0, 1], "test": [2, 3]}, pinned=2)
    run_id = queue.add(ws, model=str(model), dataset="tiny", method="lora", max_steps=4, batch_size=2, grad_accum=1,
                       eval_every=2, save_every=4, lr=5e-3, warmup_steps=0, lora_rank=4, lora_alpha=8,
                       lora_dropout=0.0, max_new_tokens=4, precision="fp32", seed=0, report_to="tensorboard,trackio")
    files = RunFiles(ws.run_dir(run_id))
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NET_GUARD)
    net_log = tmp_path / "net.log"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join([str(guard), str(REPO)]), VOXTUNE_DEVICE="cpu",
               VOXTUNE_TEST_NET_LOG=str(net_log), TRACKIO_SPACE_ID="someone/some-space")  # must be ignored
    with open(files.log, "ab") as log:
        code = subprocess.run([sys.executable, "-m", "engine.worker", str(files.root)], cwd=REPO, env=env,
                              stdout=log, stderr=subprocess.STDOUT, timeout=300).returncode
    assert code == 0, files.log.read_text()[-3000:]
    assert read_json(files.result)["status"] == "finished"
    assert not net_log.exists(), net_log.read_text()
    assert "reporting off" not in files.log.read_text()

    evals = list(files.iter_metrics("eval"))
    trains = list(files.iter_metrics("train"))
    samples = read_jsonl(files.samples)
    assert [e["step"] for e in evals] == [2, 4] and len(samples) == 4

    # TensorBoard, read back with tensorboard's own EventAccumulator
    acc = EventAccumulator(str(files.root / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    for key in ("wer", "cer", "filler_rate", "deletion_rate", "wer_normalized"):
        series = [(e.step, e.value) for e in acc.Scalars(f"eval/{key}")]
        assert series == [(r["step"], pytest.approx(r[key], abs=1e-6)) for r in evals], key
    assert [e.step for e in acc.Scalars("eval/loss")] == [2, 4]
    loss = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    assert loss == [(r["step"], pytest.approx(r["loss"], rel=1e-5)) for r in trains]
    assert "train/learning_rate" in scalars
    texts = [t.tensor_proto.string_val[0].decode() for t in acc.Tensors("eval/samples/text_summary")]
    assert len(texts) == 2 and all("| clip00 |" in t and "| clip01 |" in t for t in texts)

    # trackio, read back with trackio's own storage reader (it resolves TRACKIO_DIR at import)
    read = ("import json, sys\nfrom trackio.sqlite_storage import SQLiteStorage\n"
            f"print(json.dumps(SQLiteStorage.get_logs('voxtune', {run_id!r})))\n")
    out = subprocess.run([sys.executable, "-c", read], env=dict(os.environ, TRACKIO_DIR=str(files.root / "trackio")),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    logs = json.loads(out.stdout.strip().splitlines()[-1])
    wer = [(r["step"], r["eval/wer"]) for r in logs if "eval/wer" in r]
    assert wer == [(r["step"], pytest.approx(r["wer"], abs=1e-6)) for r in evals]
    assert [r["step"] for r in logs if "train/loss" in r] == [r["step"] for r in trains]
    assert all("train/learning_rate" in r for r in logs if "train/loss" in r)
    md = [r["eval/samples"] for r in logs if "eval/samples" in r]
    assert len(md) == 2 and all("| clip00 |" in m["_value"] for m in md)
