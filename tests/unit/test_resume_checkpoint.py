"""Resume must skip a checkpoint that a kill -9 left half-written."""

import json

from engine.runfiles import RunFiles
from engine.training import _resumable_checkpoint


def _ckpt(files: RunFiles, step: int, state: str | None) -> None:
    d = files.checkpoints / f"checkpoint-{step}"
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"x")
    if state is not None:
        (d / "trainer_state.json").write_text(state)


def test_newest_complete_checkpoint_wins(tmp_path):
    files = RunFiles(tmp_path / "run")
    files.checkpoints.mkdir(parents=True)
    assert _resumable_checkpoint(files) is None
    _ckpt(files, 2, json.dumps({"global_step": 2}))
    _ckpt(files, 10, json.dumps({"global_step": 10}))
    _ckpt(files, 12, None)  # killed before trainer_state.json was written
    _ckpt(files, 14, '{"global_st')  # killed while writing it
    assert _resumable_checkpoint(files).endswith("checkpoint-10")
