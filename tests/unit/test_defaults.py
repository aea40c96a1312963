"""Data-size-aware defaults (engine.config.defaults / schedule), --eval-dataset, the small
evaluation-set warning, and the note that says why (`queue add`, `runs show`)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.engine_helpers import add_dataset  # noqa: E402

from engine import config, queue  # noqa: E402
from engine.catalog import get_model  # noqa: E402
from engine.errors import VoxtuneError  # noqa: E402
from engine.runfiles import RunFiles, read_json  # noqa: E402
from engine.store import Store  # noqa: E402
from tui.cli import main  # noqa: E402


def sized_dataset(ws, name: str, n: int, seconds: float = 14.0, n_val: int = 3, n_test: int = 1) -> None:
    """A dataset record whose manifest has n clips of `seconds` each (no audio needed to queue)."""
    manifest = Path(ws.dataset_dir(name)) / "manifest.jsonl"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    ids = [f"c{i:03d}" for i in range(n)]
    manifest.write_text("".join(json.dumps({"id": i, "audio": "/x.wav", "duration": seconds, "text": "hi"}) + "\n"
                                for i in ids))
    n_train = n - n_val - n_test
    Store(ws).upsert_dataset({"name": name, "source": "/x", "manifest": str(manifest), "manifest_hash": "h",
                              "clips_total": n, "clips_usable": n, "hours": n * seconds / 3600, "problems": [],
                              "splits": {"train": ids[:n_train], "validation": ids[n_train:n_train + n_val],
                                         "test": ids[n_train + n_val:]}, "pinned": []})


def test_ten_clips_get_a_short_schedule_not_300_steps_of_8():
    whisper = get_model("whisper-small")
    d = config.defaults(whisper, "lora", data=config.DataSize(clips=10, minutes=2.3, examples=10, eval_clips=3))
    assert d["max_steps"] * d["batch_size"] * d["grad_accum"] <= 15 * 12  # about 15 epochs of 10 clips
    assert d["max_steps"] < 300 and (d["batch_size"], d["grad_accum"]) == (4, 1)
    assert d["warmup_steps"] <= 0.1 * d["max_steps"]
    assert d["eval_every"] == math.ceil(d["max_steps"] / config.EVALS_PER_RUN) and d["early_stop"] == 3
    assert d["lora_targets"] == config.WHISPER_ALL_LINEAR and d["lr"] == 1e-3
    assert d["defaults_note"].startswith("10 clips, 2.3 min -> 45 steps ≈ 15 epochs")
    assert "lr 1e-3, LoRA on all linear layers" in d["defaults_note"]


def test_schedule_scales_with_data_and_warmup_stays_under_ten_percent():
    whisper = get_model("whisper-small")
    prev_epochs = None
    for n in (3, 10, 50, 300, 2000, 100_000):
        d = config.defaults(whisper, "full", data=config.DataSize(n, n * 0.25, n, 5))
        per_epoch = math.ceil(math.ceil(n / d["batch_size"]) / d["grad_accum"])
        epochs = d["max_steps"] / per_epoch
        assert config.MIN_STEPS <= d["max_steps"] <= config.MAX_STEPS
        assert d["warmup_steps"] <= 0.1 * d["max_steps"]
        if prev_epochs is not None and d["max_steps"] > config.MIN_STEPS:
            assert epochs <= prev_epochs + 1e-9  # fewer passes over more data
        prev_epochs = epochs
    # no evaluation set: no early stopping
    assert config.defaults(whisper, "lora", data=config.DataSize(10, 2, 10, 0))["early_stop"] == 0
    # long clips count their 30 s pieces
    size = config.data_size([{"duration": 240.0}, {"duration": 10.0}], 3, whisper)
    assert (size.clips, size.examples, round(size.minutes, 2)) == (2, 9, 4.17)


def test_learning_rate_depends_on_method_and_model_size():
    tiny, large, voxtral = get_model("whisper-small"), get_model("whisper-large-v3"), get_model("voxtral-mini-3b")
    data = config.DataSize(50, 10, 50, 5)
    assert config.defaults(tiny, "full", data=data)["lr"] == pytest.approx(3e-5)  # < 300M parameters
    assert config.defaults(large, "full", data=data)["lr"] == pytest.approx(1e-5)
    assert config.defaults(large, "lora", data=data)["lr"] == pytest.approx(5e-4)
    assert config.defaults(voxtral, "qlora", data=data)["lr"] == pytest.approx(1e-4)
    assert config.defaults(voxtral, "qlora", data=data)["lora_targets"] is None  # the family's (catalog)
    assert config.defaults(voxtral, "qlora", data=data)["batch_size"] == 1


def test_queue_add_derives_the_schedule_from_the_dataset_and_says_why(ws, capsys):
    sized_dataset(ws, "ten", 14, n_val=3, n_test=1)  # 10 train clips
    rid = queue.add(ws, model="whisper-small", dataset="ten", method="lora")
    cfg = read_json(RunFiles(ws.run_dir(rid)).config)
    assert cfg["max_steps"] == 45 and cfg["warmup_steps"] == 4 and cfg["early_stop"] == 3
    assert cfg["defaults_note"].startswith("10 clips, 2.3 min -> 45 steps")
    # a value the user sets wins, and the note says so
    rid = queue.add(ws, model="whisper-small", dataset="ten", method="lora", max_steps=10)
    cfg = read_json(RunFiles(ws.run_dir(rid)).config)
    assert cfg["max_steps"] == 10 and cfg["defaults_note"].endswith("(you set max_steps)")
    assert cfg["early_stop"] == 0  # a length the user chose is run out unless --early-stop is given
    home = str(ws.home)
    assert main(["--home", home, "queue", "add", "--model", "whisper-small", "--dataset", "ten", "--method", "lora",
                 "--no-start"]) == 0
    io = capsys.readouterr()
    assert "defaults: 10 clips, 2.3 min -> 45 steps" in io.err
    assert "warning: the run evaluates on 3 clip(s) of ten:validation (< 5)" in io.err
    rid = io.out.strip()
    assert main(["--home", home, "runs", "show", rid]) == 0
    assert "why: 10 clips, 2.3 min -> 45 steps" in capsys.readouterr().out


def test_eval_dataset_is_checked_normalised_and_silences_the_warning(ws, capsys):
    sized_dataset(ws, "ten", 14, n_val=3, n_test=1)
    sized_dataset(ws, "held", 20, n_val=5, n_test=5)
    rid = queue.add(ws, model="whisper-small", dataset="ten", method="lora", eval_dataset="held")
    cfg = config.RunConfig.load(RunFiles(ws.run_dir(rid)).config)
    assert cfg.eval_dataset == "held:all" and queue.eval_set_warning(ws, cfg) is None
    assert "early stop after 3 evals" in cfg.defaults_note
    rid = queue.add(ws, model="whisper-small", dataset="ten", method="lora", eval_dataset="held:TEST")
    assert read_json(RunFiles(ws.run_dir(rid)).config)["eval_dataset"] == "held:test"
    rid = queue.add(ws, model="whisper-small", dataset="ten", method="lora", eval_dataset="ten")
    assert read_json(RunFiles(ws.run_dir(rid)).config)["eval_dataset"] == "ten:validation"
    for bad, text in (("nope", "eval_dataset: no dataset 'nope'"), ("held:dev", "split 'dev' is not one of"),
                      ("ten:train", "holds the clips the run trains on"), ("ten:all", "holds the clips")):
        with pytest.raises(VoxtuneError) as e:
            queue.add(ws, model="whisper-small", dataset="ten", method="lora", eval_dataset=bad)
        assert e.value.field == "eval_dataset" and text in str(e.value)
    # the CLI flag comes from RunConfig
    assert main(["--home", str(ws.home), "queue", "add", "--model", "whisper-small", "--dataset", "ten",
                 "--method", "lora", "--eval-dataset", "held:validation", "--no-start"]) == 0
    assert "warning" not in capsys.readouterr().err
    # an eval-only run ignores it (training option)
    rid = queue.add(ws, model="whisper-small", dataset="ten", eval_only=True, method="lora", eval_dataset="held")
    assert read_json(RunFiles(ws.run_dir(rid)).config)["eval_dataset"] is None


def test_empty_validation_split_warns_that_nothing_is_evaluated(ws):
    add_dataset(ws)
    rec = Store(ws).get_dataset("tiny")
    rec["splits"]["validation"] = []
    Store(ws).upsert_dataset(rec)
    rid = queue.add(ws, model="whisper-small", dataset="tiny", method="lora")
    cfg = config.RunConfig.load(RunFiles(ws.run_dir(rid)).config)
    assert cfg.early_stop == 0 and "no evaluation set" in cfg.defaults_note
    assert "has no clips: the run is not evaluated" in queue.eval_set_warning(ws, cfg)
