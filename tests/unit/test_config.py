"""RunConfig: one definition of every run option, shared by the CLI, the form, the queue, the
estimator and the training driver; config.json round-trips, and every older config.json loads."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from engine import catalog, config, estimator, queue
from engine.config import OPTIONS, RunConfig, USER_OPTIONS
from engine.errors import VoxtuneError
from engine.store import Store
from tests.engine_helpers import add_dataset
from tui.cli import build_parser
from tui.screens.new_run import FORM, layout

# config.json exactly as voxtune 0.1 (commit 65b73c4) wrote it: no schema_version, untyped.
CONFIG_V1 = {
    "batch_size": 2, "dataset": "demo", "dataset_manifest": "/w/data/demo/manifest.jsonl",
    "dataset_manifest_hash": "abc", "epochs": None, "estimate_gb": 2.8, "eval_every": 50, "eval_only": False,
    "family": "seq2seq", "freeze_audio_encoder": False, "grad_accum": 2, "gradient_checkpointing": True,
    "language": None, "lora_alpha": 64, "lora_dropout": 0.05, "lora_rank": 32, "lora_targets": None, "lr": 0.001,
    "max_new_tokens": 440, "max_steps": 300, "method": "lora", "model": "whisper-small",
    "model_ref": "openai/whisper-small", "optimizer": "adamw", "precision": "auto", "recipe": "whisper",
    "resume_from_checkpoint": "last", "run_id": "1125-0412-whisper-small-lora", "save_every": 50, "seed": 42,
    "split": "validation", "trust_remote_code": False, "versions": {"python": "3.11.7", "torch": "2.14.1"},
    "warmup_steps": 30, "workspace": "/w", "attention": "math", "eval_batch_size": 8,
}


def _cli_dests(sub: str) -> set[str]:
    parser = build_parser()
    actions = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    group = actions[sub.split()[0]]
    for word in sub.split()[1:]:
        group = group._subparsers._group_actions[0].choices[word]  # type: ignore[union-attr]
    return {a.dest for a in group._actions}


def test_cli_flags_and_form_fields_come_from_the_same_field_list():
    options = set(USER_OPTIONS)
    assert options <= _cli_dests("queue add"), options - _cli_dests("queue add")
    assert options <= _cli_dests("runs clone")
    assert set(FORM) == options  # every option is in the form, nothing else is
    laid_out = {name for row in layout() for name in row}
    assert laid_out == options | {"gpu"}  # gpu: where to estimate, not a run option
    for name, opt in OPTIONS.items():
        assert opt.flag and opt.label and opt.help, name


def test_the_options_the_issue_names_are_reachable():
    parser = build_parser()
    help_text = parser.parse_args(["queue", "add", "--model", "m", "--dataset", "d"])  # parses
    assert help_text.model == "m"
    add = _cli_dests("queue add")
    assert {"lora_targets", "lora_dropout", "trust_remote_code"} <= add
    assert {"lora_targets", "lora_dropout", "trust_remote_code"} <= set(FORM)


def test_old_config_json_loads_and_round_trips():
    cfg = RunConfig.from_dict(CONFIG_V1)
    assert cfg.method == "lora" and cfg.lora_rank == 32 and cfg.resume_from_checkpoint == "last"
    assert cfg.get("attention") == "math" and cfg.get("eval_batch_size") == 8  # unknown keys survive
    out = cfg.to_dict()
    assert out["schema_version"] == config.SCHEMA_VERSION
    assert {k: out[k] for k in CONFIG_V1} == CONFIG_V1  # every old value written back unchanged
    assert set(out) - set(CONFIG_V1) <= {"schema_version"} | set(config.FIELD_NAMES)  # plus the new fields
    assert RunConfig.from_dict(json.loads(json.dumps(out))) == cfg


def test_newer_config_is_refused_with_the_file_named(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**CONFIG_V1, "schema_version": config.SCHEMA_VERSION + 1}))
    with pytest.raises(VoxtuneError, match="newer voxtune") as e:
        RunConfig.load(path)
    assert e.value.file == str(path)
    with pytest.raises(VoxtuneError, match="is missing"):
        RunConfig.load(tmp_path / "nope.json")


@pytest.mark.parametrize("name, text, message", [
    ("lr", "nan", "lr: must be a finite number"),
    ("lr", "inf", "lr: must be a finite number"),
    ("epochs", "nan", "epochs: must be a finite number"),
    ("lora_dropout", "1", "lora_dropout: must be in [0, 1)"),
    ("max_steps", "2.5", "max_steps: expected a whole number"),
    ("warmup_steps", "-1", "warmup_steps: must be >= 0"),
])
def test_parse_rejects_non_finite_and_out_of_range_values(name, text, message):
    with pytest.raises(VoxtuneError, match=message.replace("[", r"\[").replace(")", r"\)")) as e:
        config.parse(name, text)
    assert e.value.field == name


def test_coerce_rejects_non_finite_values_from_any_caller():
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(VoxtuneError, match="lr: must be a finite number"):
            config.coerce("lr", bad)


def test_one_set_of_defaults_for_queue_estimator_and_driver():
    whisper, voxtral = catalog.get_model("whisper-small"), catalog.get_model("voxtral-mini-3b")
    for entry in (whisper, voxtral):
        d = config.defaults(entry, "lora")
        assert d["gradient_checkpointing"] is True
        assert d["lora_rank"] == config.lora_defaults(entry.family)[0]
        # the estimator, given no rank, assumes the one `queue add` uses
        assert estimator.rank_of(entry, estimator.FitConfig()) == d["lora_rank"]
        assert estimator.FitConfig().gradient_checkpointing is d["gradient_checkpointing"]
    assert config.defaults(whisper, "lora")["max_new_tokens"] == config.SEQ2SEQ_MAX_NEW_TOKENS


def test_config_fields_not_applying_are_cleared():
    entry = catalog.get_model("whisper-small")
    full = config.with_defaults({"model": "whisper-small", "dataset": "d", "method": "full", "lora_rank": 8}, entry)
    full.check(entry)
    assert full.lora_rank is None and full.lora_alpha is None
    ev = config.with_defaults({"model": "whisper-small", "dataset": "d", "eval_only": True, "split": "test"}, entry)
    ev.check(entry)
    assert ev.method is None and ev.max_steps is None and ev.split == "test"


def test_eval_only_needs_no_method_and_training_does(ws):
    add_dataset(ws, "tiny")
    rid = queue.add(ws, model="whisper-small", dataset="tiny", eval_only=True, split="test")
    cfg = RunConfig.load(ws.run_dir(rid) / "config.json")
    assert cfg.eval_only and cfg.split == "test" and cfg.method is None
    assert Store(ws).require_run(rid)["split"] == "test"
    with pytest.raises(VoxtuneError, match="method: required") as e:
        queue.add(ws, model="whisper-small", dataset="tiny")
    assert e.value.field == "method"


def test_every_option_field_is_typed_in_one_place():
    names = [f.name for f in dataclasses.fields(RunConfig)]
    assert set(USER_OPTIONS) <= set(names)
    for name in USER_OPTIONS:
        assert OPTIONS[name].kind in config.KINDS
