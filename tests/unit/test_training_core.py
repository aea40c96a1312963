"""The driver's pure decisions: precision, optimizer, evaluation schedule, joining segment
predictions, recognising out-of-memory errors."""

import pytest

from engine import training
from engine.recipes.base import Example


def test_precision_follows_the_device():
    assert training.pick_precision("cpu", "auto", False) == "fp32"
    assert training.pick_precision("cuda", "auto", True) == "bf16"
    assert training.pick_precision("cuda", None, False) == "fp16"
    assert training.pick_precision("cuda", "fp32", True) == "fp32"
    with pytest.raises(training.ConfigError, match="precision fp16 needs a GPU"):
        training.pick_precision("cpu", "fp16", False)
    with pytest.raises(training.ConfigError, match="does not support bf16"):
        training.pick_precision("cuda", "bf16", False)
    with pytest.raises(training.ConfigError, match="precision 'half'"):
        training.pick_precision("cpu", "half", False)


def test_optimizer_names_map_to_trainer_optimizers():
    assert training.optimizer_name("adamw") == "adamw_torch"
    assert training.optimizer_name("adamw8bit") == "adamw_bnb_8bit"
    assert training.optimizer_name("adafactor") == "adafactor"
    with pytest.raises(training.ConfigError, match="optimizer 'sgd'"):
        training.optimizer_name("sgd")


def test_evaluation_every_n_steps_and_at_the_end():
    due = [s for s in range(1, 11) if training.eval_due(s, 4, 10)]
    assert due == [4, 8, 10]
    assert [s for s in range(1, 6) if training.eval_due(s, 0, 5)] == [5]


def test_segment_predictions_join_in_segment_order_per_clip():
    rows = [{"id": "a"}, {"id": "b"}, {"id": "c"}]
    exs = [Example("b", None, "", 1), Example("a", None, "", 0), Example("b", None, "", 0)]
    assert training.join_predictions(rows, exs, ["world.", "Hi", " Hello "]) == ["Hi", "Hello world.", ""]


def test_out_of_memory_errors_are_recognised():
    assert training.is_oom(MemoryError())
    assert training.is_oom(RuntimeError("HIP out of memory. Tried to allocate 20.00 MiB"))
    assert not training.is_oom(ValueError("bad shape"))


def test_oom_advice_suggests_cheaper_configurations():
    text = training.oom_advice({"batch_size": 8, "grad_accum": 1, "method": "full", "optimizer": "adamw"})
    assert "--batch 4 --grad-accum 2" in text and "--method qlora" in text and "gradient checkpointing" in text


def test_training_arguments_validate_config_fields(tmp_path):
    args, total = training.training_arguments(
        {"max_steps": None, "epochs": 2, "batch_size": 2, "grad_accum": 2, "lr": 1e-4, "save_every": 5,
         "optimizer": "adamw", "seed": 3}, tmp_path, "cpu", "fp32", n_train=10)
    assert total == 6 and args.num_train_epochs == 2 and args.save_steps == 5 and args.seed == 3
    with pytest.raises(training.ConfigError, match="lr must be positive"):
        training.training_arguments({"max_steps": 2, "lr": -1}, tmp_path, "cpu", "fp32", 1)
    with pytest.raises(training.ConfigError, match="give max_steps or epochs"):
        training.training_arguments({"lr": 1e-4}, tmp_path, "cpu", "fp32", 1)
