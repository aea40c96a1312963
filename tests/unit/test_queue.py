"""Queue operations: validation names the field, the resolved config is complete, and the
store/file operations (cancel, resume, clone, move, remove) do what the daemon expects."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.engine_helpers import add_dataset  # noqa: E402

from engine import config, queue  # noqa: E402
from engine.errors import VoxtuneError  # noqa: E402
from engine.runfiles import RunFiles, read_json  # noqa: E402
from engine.store import Store  # noqa: E402
from tui.cli import main  # noqa: E402

BASE = {"model": "whisper-small", "dataset": "tiny", "method": "lora"}


@pytest.fixture
def qws(ws):
    add_dataset(ws)
    return ws


@pytest.mark.parametrize("changes, field, text", [
    ({"model": "whisper-smal"}, "model", "did you mean whisper-small"),
    ({"dataset": "nope"}, "dataset", "no dataset 'nope' (known: tiny)"),
    ({"lr": 0}, "lr", "lr: must be > 0"),
    ({"lr": -1e-4}, "lr", "lr: must be > 0"),
    ({"batch_size": 0}, "batch_size", "batch_size: must be > 0"),
    ({"model": "salmonn-7b"}, "method", "salmonn-7b does not support 'lora'"),
    ({"model": "qwen-audio"}, "model", "cannot be fine-tuned here"),
    ({"method": "dora"}, "method", "'dora' is not one of full, lora, qlora, lora8"),
    ({"max_steps": 2.5}, "max_steps", "expected an integer"),
    ({"split": "train"}, "split", "split: 'train' is not one of"),
    ({"lora_rank": 0}, "lora_rank", "lora_rank: must be > 0"),
])
def test_validation_names_the_field(qws, changes, field, text):
    with pytest.raises(VoxtuneError) as e:
        queue.add(qws, **{**BASE, **changes})
    assert e.value.field == field
    assert text in str(e.value)
    assert Store(qws).list_runs() == [] and list(qws.runs_dir.iterdir()) == []  # nothing was queued


def test_add_writes_a_complete_config(qws):
    rid = queue.add(qws, **BASE, batch_size=2, priority=3)
    run = Store(qws).require_run(rid)
    assert run["status"] == "queued" and run["priority"] == 3
    cfg = read_json(RunFiles(qws.run_dir(rid)).config)
    assert cfg["run_id"] == rid and cfg["batch_size"] == 2 and cfg["lr"] == 1e-3  # whisper LoRA default
    assert cfg["dataset_manifest_hash"] == "h-tiny" and cfg["workspace"] == str(qws.home)
    assert cfg["versions"]["transformers"] and cfg["versions"]["python"]
    assert cfg["family"] == "seq2seq" and cfg["recipe"] == "whisper" and cfg["model_ref"] == "openai/whisper-small"
    assert cfg["resume_from_checkpoint"] is None
    for key in ("max_steps", "grad_accum", "warmup_steps", "lora_rank", "lora_alpha", "eval_every", "save_every",
                "seed", "precision", "optimizer", "gradient_checkpointing", "max_new_tokens", "estimate_gb"):
        assert key in cfg


def test_defaults_depend_on_family_and_method():
    from engine.catalog import get_model

    whisper, voxtral = get_model("whisper-small"), get_model("voxtral-mini-3b")
    assert config.defaults(whisper, "full")["lr"] < config.defaults(whisper, "lora")["lr"]
    assert config.defaults(voxtral, "qlora")["batch_size"] == 1
    assert config.defaults(voxtral, "qlora")["gradient_checkpointing"] is True
    assert config.defaults(whisper, "full")["lora_rank"] is None


def test_epochs_replace_max_steps(qws):
    rid = queue.add(qws, **BASE, epochs=3)
    cfg = read_json(RunFiles(qws.run_dir(rid)).config)
    assert cfg["epochs"] == 3 and cfg["max_steps"] is None


def test_cancel_resume_retry_clone(qws):
    store = Store(qws)
    rid = queue.add(qws, **BASE)
    assert queue.cancel(qws, rid) == "cancelled"
    with pytest.raises(queue.QueueError, match="only queued or running"):
        queue.cancel(qws, rid)
    files = RunFiles(qws.run_dir(rid))
    (files.checkpoints / "checkpoint-5").mkdir()
    files.result.write_text('{"status": "cancelled"}')
    assert queue.resume(qws, rid) is True
    run = store.require_run(rid)
    assert run["status"] == "queued" and run["resume"] is True
    assert read_json(files.config)["resume_from_checkpoint"] == "last"
    assert not files.result.exists() and (files.root / "result.attempt-1.json").exists()
    with pytest.raises(queue.QueueError, match="only failed, cancelled or interrupted"):
        queue.retry(qws, rid)

    store.set_status(rid, "failed", "boom")
    new = queue.retry(qws, rid)
    assert new != rid and store.require_run(new)["parent"] == rid
    assert read_json(RunFiles(qws.run_dir(new)).config)["resume_from_checkpoint"] is None

    clone = queue.clone(qws, rid, batch_size=1, grad_accum=8, method="full")
    cfg = read_json(RunFiles(qws.run_dir(clone)).config)
    assert (cfg["batch_size"], cfg["grad_accum"], cfg["method"], cfg["lora_rank"]) == (1, 8, "full", None)
    with pytest.raises(VoxtuneError, match="lr: must be > 0"):
        queue.clone(qws, rid, lr=0)


def test_running_run_cancel_asks_the_worker(qws):
    rid = queue.add(qws, **BASE)
    Store(qws).set_status(rid, "running")
    assert queue.cancel(qws, rid) == "running"
    assert RunFiles(qws.run_dir(rid)).cancel_request.exists()
    assert Store(qws).require_run(rid)["cancel_requested"] is True
    with pytest.raises(queue.QueueError, match="cancel it first"):
        queue.remove(qws, rid)


def test_move_up_and_down(qws):
    from engine.scheduler import order

    ids = [queue.add(qws, **BASE) for _ in range(4)]
    assert queue.move(qws, ids[3], 2) == 1
    assert [r["id"] for r in order(Store(qws).list_runs())] == [ids[0], ids[3], ids[1], ids[2]]
    assert queue.move(qws, ids[0], -10) == 3
    assert [r["id"] for r in order(Store(qws).list_runs())] == [ids[3], ids[1], ids[2], ids[0]]


def test_pause_and_remove_to_trash(qws):
    queue.pause(qws)
    assert queue.is_paused(qws) == (True, "paused by the user")
    queue.unpause(qws)
    assert queue.is_paused(qws)[0] is False
    rid = queue.add(qws, **BASE)
    dest = queue.remove(qws, rid)
    assert Store(qws).get_run(rid) is None and (dest / "config.json").exists()


def test_suggest_fit_prefers_the_smallest_change():
    cfg = {"model": "whisper-small", "method": "full", "batch_size": 8, "grad_accum": 1, "gradient_checkpointing": False}
    fix = queue.suggest_fit(cfg, None)
    assert fix["changes"] == {"batch_size": 4, "grad_accum": 2}
    assert fix["flags"] == "--batch 4 --grad-accum 2"


def test_cli_add_prints_the_id_and_refuses_bad_input(qws, capsys):
    home = str(qws.home)
    assert main(["--home", home, "queue", "add", "--model", "whisper-small", "--dataset", "tiny",
                 "--method", "lora", "--json", "--no-start", "--batch", "2"]) == 0
    rid = json.loads(capsys.readouterr().out)["id"]
    assert Store(qws).require_run(rid)["status"] == "queued"
    assert main(["--home", home, "queue", "add", "--model", "whisper-small", "--dataset", "tiny",
                 "--method", "lora", "--batch", "0", "--no-start"]) == 2
    assert "batch_size: must be > 0" in capsys.readouterr().err
    assert main(["--home", home, "queue", "add", "--model", "nonesuch", "--dataset", "tiny",
                 "--method", "lora", "--no-start"]) == 2
    assert "model: unknown model 'nonesuch'" in capsys.readouterr().err
    assert main(["--home", home, "runs", "ls", "--json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [rid]
    assert main(["--home", home, "runs", "show", rid, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "queued" and shown["config"]["batch_size"] == 2
    assert main(["--home", home, "runs", "show", "zzz"]) == 2


def test_local_checkpoint_folder_is_accepted(qws, tmp_path):
    folder = tmp_path / "my-whisper"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "whisper", "d_model": 64, "encoder_layers": 2,
                                                     "decoder_layers": 2, "vocab_size": 51864, "num_mel_bins": 80,
                                                     "encoder_attention_heads": 2, "decoder_attention_heads": 2,
                                                     "encoder_ffn_dim": 128, "decoder_ffn_dim": 128,
                                                     "max_source_positions": 1500, "max_target_positions": 448}))
    rid = queue.add(qws, model=str(folder), dataset="tiny", method="lora")
    cfg = read_json(RunFiles(qws.run_dir(rid)).config)
    assert cfg["model_ref"] == str(folder.resolve()) and cfg["recipe"] == "whisper"
    assert "my-whisper" in rid


def test_demo_dataset_is_available_in_a_fresh_workspace(ws):
    """`queue add --dataset demo` works before anything was imported (the README's first run)."""
    from engine.store import Store

    run_id = queue.add(ws, model="whisper-small", dataset="demo", method="lora", max_steps=2)
    assert Store(ws).get_dataset("demo")["clips_usable"] >= 10
    assert Store(ws).get_run(run_id)["dataset"] == "demo"


@pytest.mark.parametrize("value, expected", [(None, 1), ("2", 2), (4, 4), ("all", "all"), ("ALL", "all"), (2.0, 2)])
def test_gpus_option(value, expected):
    if value is None:
        assert config.defaults(None, "lora")["gpus"] == expected
    else:
        assert config.coerce("gpus", value) == expected
        assert config.parse("gpus", str(value)) == expected


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "two", True])
def test_gpus_option_refuses_nonsense_naming_the_field(qws, value):
    with pytest.raises(VoxtuneError) as e:
        queue.add(qws, **BASE, gpus=value)
    assert e.value.field == "gpus" and "gpus:" in str(e.value)
    assert Store(qws).list_runs() == []


def test_gpus_reach_the_config_the_record_and_a_clone(qws, capsys):
    assert main(["--home", str(qws.home), "queue", "add", "--model", "whisper-small", "--dataset", "tiny",
                 "--method", "full", "--gpus", "2", "--json", "--no-start"]) == 0
    rid = json.loads(capsys.readouterr().out)["id"]
    run = Store(qws).require_run(rid)
    cfg = read_json(RunFiles(qws.run_dir(rid)).config)
    assert cfg["gpus"] == 2 == run["gpus"]
    assert run["estimate_devices"]["ddp_gb"] > run["estimate_gb"]  # per-device terms for admission
    assert run["estimate_devices"]["fsdp_sharded_gb"] > 0
    clone = queue.clone(qws, rid, batch_size=2)
    assert Store(qws).require_run(clone)["gpus"] == 2
    assert main(["--home", str(qws.home), "queue", "add", "--model", "whisper-small", "--dataset", "tiny",
                 "--method", "lora", "--gpus", "zero", "--no-start"]) == 2
    assert "gpus: expected a number or 'all'" in capsys.readouterr().err
