"""RunConfig: everything a run needs, defined once.

One dataclass holds every run option with its type, help text, CLI flag, form label and the
rule that checks it (the `Option` in each field's metadata). From that single definition:
- `voxtune queue add` / `runs clone` flags are generated (tui/cli/queue.py: `add_run_options`);
- the new-run form's fields are generated (tui/screens/new_run.py reads `form_options()`);
- `engine.queue` validates and resolves it (`RunConfig.check`), the estimator reads it
  (`engine.estimator.fit_config_from_run`) and the training driver reads it
  (`RunConfig.load(config.json)`).
`config.json` is its serialisation (`to_dict`), with a `schema_version`; files written before
the schema existed (version 1, voxtune 0.1 up to 65b73c4) load unchanged.

Defaults depend on the model family and the method (`defaults`); a field left None is filled
from them at queue time, so config.json always holds the values the run really used.
Light module: no torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from engine.enums import Method, Optimizer, Precision, Split
from engine.errors import VoxtuneError

SCHEMA_VERSION = 2  # 1: the untyped config.json of voxtune 0.1 (no schema_version key)

# LoRA rank/alpha per family: the estimator (`voxtune fit`, the Models screen) assumes exactly
# what `queue add` uses. r=32 on q,v is the PEFT int8 Whisper notebook's set-up; billion-scale
# audio LLMs get r=16 (their adapters are large already: 4 projections x 28-32 layers).
DEFAULT_LORA_RANK = 32
DEFAULT_LORA_ALPHA = 64.0
LLM_LORA_RANK = 16
LLM_LORA_ALPHA = 32.0


def lora_defaults(family: str | None) -> tuple[int, float]:
    """(rank r, alpha) a run of this model family gets unless told otherwise."""
    return (LLM_LORA_RANK, LLM_LORA_ALPHA) if family == "audio-llm" else (DEFAULT_LORA_RANK, DEFAULT_LORA_ALPHA)
# Whisper's decoder has 448 positions; the prompt (<|sot|><|lang|><|transcribe|><|notimestamps|>)
# takes up to 4 of them, and generation needs a few spare (REFERENCE.md s.1).
SEQ2SEQ_MAX_NEW_TOKENS = 440
LLM_MAX_NEW_TOKENS = 1024


class ConfigError(VoxtuneError):
    """A run option is missing, malformed or impossible; `field` names it."""


# -- option metadata --------------------------------------------------------------------------
KINDS = ("text", "int", "int0", "anyint", "float", "frac", "bool", "choice", "list", "count_or_all")


@dataclass(frozen=True)
class Option:
    """How a user sets and checks one RunConfig field.

    kind: text | int (> 0) | int0 (>= 0) | anyint | float (finite, > 0) | frac ([0, 1)) | bool
          | choice (one of `choices`) | list (comma-separated names) | count_or_all (an int >= 1
          or the word "all").
    applies: always | train (ignored and hidden for eval-only runs) | adapter (LoRA methods only)
             | eval (eval-only runs only).
    flag: the CLI flag (None: not settable from the CLI); label: the form's label (None: not in
    the form). Every user option must have both (tests/unit/test_config.py checks it).
    """

    help: str
    kind: str
    flag: str | None = None
    label: str | None = None
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    aliases: tuple[str, ...] = ()
    applies: str = "always"
    optional: bool = False  # may stay empty (None) after defaults are applied
    warning: str | None = None  # shown when the option is switched on (trust_remote_code)
    placeholder: str | None = None  # what an empty form field means

    def __post_init__(self) -> None:
        assert self.kind in KINDS, self.kind


def _opt(default: Any = None, **meta: Any) -> Any:
    return field(default=default, metadata={"option": Option(**meta)})


def _derived(default: Any = None) -> Any:
    """A field voxtune fills in at queue time (not a user option)."""
    return field(default=default, metadata={"derived": True})


@dataclass
class RunConfig:
    """Everything a run needs. User options carry an `Option`; derived fields are filled by
    `engine.queue.resolve`; `extra` keeps keys this version does not know (forward compatible)."""

    # -- what to run ---------------------------------------------------------------------
    model: str | None = _opt(help="catalog name, hub id or local checkpoint folder", kind="text",
                             flag="--model", label="Model", metavar="M",
                             placeholder="catalog name, hub id or local folder")
    dataset: str | None = _opt(help="dataset name (`voxtune data ls`)", kind="text", flag="--dataset",
                               label="Dataset", metavar="NAME")
    method: str | None = _opt(help="full fine-tune, LoRA, QLoRA (4-bit NF4 base) or LoRA on an 8-bit base",
                              kind="choice", choices=Method.values(), flag="--method", label="Method",
                              applies="train")
    eval_only: bool = _opt(False, help="score the model without training (a baseline)", kind="bool",
                           flag="--eval-only", label="Eval only")
    split: str | None = _opt(help="split an eval-only run scores", kind="choice", choices=Split.values(),
                             flag="--split", label="Split", applies="eval")
    eval_dataset: str | None = _opt(help="evaluate a training run on another dataset or split: NAME (all its "
                                         "clips) or NAME:SPLIT (default: the training dataset's validation split)",
                                    kind="text", flag="--eval-dataset", label="Eval on", metavar="NAME[:SPLIT]",
                                    applies="train", optional=True, placeholder="validation split")
    # -- schedule --------------------------------------------------------------------------
    max_steps: int | None = _opt(help="optimizer steps (or give --epochs)", kind="int", flag="--max-steps",
                                 label="Steps", metavar="N", applies="train", optional=True)
    epochs: float | None = _opt(help="passes over the training split (instead of --max-steps)", kind="float",
                                flag="--epochs", label="Epochs", metavar="E", applies="train", optional=True)
    batch_size: int | None = _opt(help="examples per forward pass (micro-batch)", kind="int", flag="--batch",
                                  aliases=("--batch-size",), label="Batch", metavar="B")
    grad_accum: int | None = _opt(help="micro-batches per optimizer step (grad-accum)", kind="int",
                                  flag="--grad-accum", label="Accum", metavar="G", applies="train")
    lr: float | None = _opt(help="peak learning rate", kind="float", flag="--lr", label="LR", metavar="LR",
                            applies="train")
    warmup_steps: int | None = _opt(help="linear warm-up steps", kind="int0", flag="--warmup-steps",
                                    label="Warmup", metavar="N", applies="train")
    eval_every: int | None = _opt(help="evaluate (generate + WER) every N steps, and at the end", kind="int",
                                  flag="--eval-every", label="Eval every", metavar="N", applies="train")
    save_every: int | None = _opt(help="save a checkpoint every N steps, and at the end", kind="int",
                                  flag="--save-every", label="Save every", metavar="N", applies="train")
    early_stop: int | None = _opt(help="stop after N evaluations without a better validation WER (0: never); "
                                       "the best checkpoint is kept either way", kind="int0",
                                  flag="--early-stop", label="Early stop", metavar="N", applies="train",
                                  optional=True, placeholder="never")
    seed: int | None = _opt(help="random seed (data order, initialisation)", kind="int0", flag="--seed",
                            label="Seed", metavar="S")
    # -- LoRA ------------------------------------------------------------------------------
    lora_rank: int | None = _opt(help="LoRA rank r", kind="int", flag="--lora-rank", label="LoRA r",
                                 metavar="R", applies="adapter")
    lora_alpha: float | None = _opt(help="LoRA alpha (scale = alpha / r)", kind="float", flag="--lora-alpha",
                                    label="LoRA α", metavar="A", applies="adapter")
    lora_dropout: float | None = _opt(help="LoRA dropout, in [0, 1)", kind="frac", flag="--lora-dropout",
                                      label="Dropout", metavar="P", applies="adapter")
    lora_targets: list[str] | None = _opt(help="module names LoRA adapts, comma-separated (default: the "
                                               "family's, e.g. q_proj,v_proj)", kind="list",
                                          flag="--lora-targets", label="Targets", metavar="a,b",
                                          applies="adapter", optional=True,
                                          placeholder="family default")
    # -- numerics --------------------------------------------------------------------------
    precision: str | None = _opt(help="auto: bf16 where the GPU supports it, else fp16; fp32 on the CPU",
                                 kind="choice", choices=Precision.values(), flag="--precision",
                                 label="Precision")
    optimizer: str | None = _opt(help="adamw (2 fp32 moments), adamw8bit (bitsandbytes) or adafactor",
                                 kind="choice", choices=Optimizer.values(), flag="--optimizer",
                                 label="Optimizer", applies="train")
    gradient_checkpointing: bool | None = _opt(help="recompute activations in backward (much less memory, "
                                                    "~30% slower)", kind="bool", flag="--gradient-checkpointing",
                                               label="Checkpointing", applies="train")
    freeze_audio_encoder: bool | None = _opt(help="train nothing in the audio encoder", kind="bool",
                                             flag="--freeze-audio-encoder", label="Freeze encoder",
                                             applies="train")
    # -- model loading and decoding -----------------------------------------------------------
    trust_remote_code: bool = _opt(False, help="allow the checkpoint's own Python code to run (needed by "
                                              "models outside transformers)", kind="bool",
                                   flag="--trust-remote-code", label="Remote code",
                                   warning="runs Python code shipped with the checkpoint; only for sources "
                                           "you trust")
    max_new_tokens: int | None = _opt(help="longest generated transcript per piece, in tokens", kind="int",
                                      flag="--max-new-tokens", label="Max tokens", metavar="N")
    language: str | None = _opt(help="transcript language for multilingual models (default: the model's)",
                                kind="text", flag="--language", label="Language", metavar="LANG", optional=True,
                                placeholder="model default")
    report_to: list[str] | None = _opt(help="also write metrics for TensorBoard and/or trackio (comma-separated, or "
                                            "none); local files in the run folder, nothing is sent anywhere",
                                       kind="list", choices=("tensorboard", "trackio"), flag="--report-to",
                                       label="Report to", metavar="a,b", applies="train", optional=True,
                                       placeholder="none")
    # -- queue -----------------------------------------------------------------------------
    priority: int = _opt(0, help="higher runs first", kind="anyint", flag="--priority", label="Priority",
                         metavar="P")
    gpus: int | str = _opt(1, help="devices one run trains on, one process each (DDP, or FSDP when only "
                                   "sharded fits): a number or 'all'", kind="count_or_all", flag="--gpus",
                           label="GPUs", metavar="N|all")

    # -- filled in by engine.queue.resolve ---------------------------------------------------
    run_id: str | None = _derived()
    model_ref: str | None = _derived()  # hub id, or the absolute local folder
    family: str | None = _derived()
    recipe: str | None = _derived()
    dataset_manifest: str | None = _derived()
    dataset_manifest_hash: str | None = _derived()
    workspace: str | None = _derived()
    resume_from_checkpoint: str | None = _derived()  # None | "last"
    estimate_gb: float | None = _derived()
    estimate_devices: dict | None = _derived()  # per-device terms of a multi-device run
    defaults_note: str | None = _derived()  # why the schedule is what it is (engine.config.schedule)
    versions: dict = field(default_factory=dict, metadata={"derived": True})
    extra: dict = field(default_factory=dict, metadata={"derived": True})

    # -- (de)serialisation -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict, *, source: str | None = None) -> "RunConfig":
        """A RunConfig from config.json's dict (any schema version so far). Unknown keys go to
        `extra` and are written back unchanged. Raises ConfigError naming `source`."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source or 'config'}: expected a JSON object, got {type(data).__name__}",
                              file=source, hint="queue the run again")
        data = dict(data)
        version = int(data.pop("schema_version", 1) or 1)
        if version > SCHEMA_VERSION:
            raise ConfigError(f"{source or 'config'} was written by a newer voxtune (schema {version} > "
                              f"{SCHEMA_VERSION})", file=source, hint="upgrade voxtune")
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in data.items() if k in names and k != "extra"}
        extra = dict(data.get("extra") or {}) if isinstance(data.get("extra"), dict) else {}
        extra.update({k: v for k, v in data.items() if k not in names})
        cfg = cls(**known, extra=extra)
        if cfg.versions is None:
            cfg.versions = {}
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        """Read runs/<id>/config.json; ConfigError (naming the file) if missing or unreadable."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path} is missing", file=path, hint="the run cannot be re-created; queue it again") from None
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path} cannot be read ({e})", file=path, hint="queue the run again") from None
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict:
        """config.json's content: every field, `extra`'s keys at the top level, schema_version."""
        out: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            v = getattr(self, f.name)
            out[f.name] = v.value if hasattr(v, "value") else v
        for k, v in self.extra.items():
            out.setdefault(k, v)
        return out

    def options(self) -> dict:
        """The user options (what `runs clone` copies), without None values."""
        return {name: getattr(self, name) for name in USER_OPTIONS if getattr(self, name) is not None}

    def get(self, name: str, default: Any = None) -> Any:
        """A field or an `extra` key (settings older/newer versions wrote), by name."""
        if name in FIELD_NAMES:
            v = getattr(self, name)
            return default if v is None else v
        return self.extra.get(name, default)

    # -- semantics ----------------------------------------------------------------------------
    @property
    def method_enum(self) -> Method | None:
        return Method(self.method) if self.method else None

    @property
    def adapter(self) -> bool:
        return bool(self.method) and Method(self.method).adapter and not self.eval_only

    def total_steps(self, train_examples: int, devices: int = 1) -> int:
        """Optimizer steps of the schedule: max_steps, else ceil(epochs x steps per epoch); with
        several devices each step takes batch_size examples on every device."""
        if self.max_steps:
            return int(self.max_steps)
        per_step = int(self.batch_size or 1) * max(1, devices)
        per_epoch = math.ceil(math.ceil(max(1, train_examples) / per_step) / int(self.grad_accum or 1))
        return max(1, math.ceil(float(self.epochs or 1) * per_epoch))

    # -- checking -----------------------------------------------------------------------------
    def check(self, entry: Any = None) -> "RunConfig":
        """Validate every user option (types, ranges, finiteness, the model's methods); fields
        that do not apply (LoRA fields of a full fine-tune, training fields of an eval-only run)
        are cleared. Raises ConfigError naming the field. Returns self."""
        for name in ("model", "dataset"):
            if not getattr(self, name):
                raise ConfigError(f"{name}: required", field=name, hint=f"give {OPTIONS[name].flag}")
        if not self.eval_only and not self.method:
            raise ConfigError("method: required for a training run (or pass --eval-only)", field="method",
                              hint=f"one of {', '.join(Method.values())}")
        for name in USER_OPTIONS:
            opt = OPTIONS[name]
            value = getattr(self, name)
            if value is not None:  # a given value must be valid, even where it does not apply
                value = coerce(name, value)
                setattr(self, name, value)
            if not self._applies(opt):
                if opt.kind != "bool" and name != "method":  # an eval-only run may score a quantised base
                    setattr(self, name, None)
                continue
            if value is None and not (opt.optional or opt.kind == "bool" or name in ("model", "dataset")):
                raise ConfigError(f"{name}: a value is required", field=name, hint=f"give {opt.flag}")
        if not self.eval_only:
            if self.max_steps is None and self.epochs is None:
                raise ConfigError("max_steps: give --max-steps or --epochs", field="max_steps")
            if self.max_steps is not None and self.epochs is not None:
                raise ConfigError("epochs: give --max-steps or --epochs, not both", field="epochs")
        if entry is not None:
            methods = tuple(getattr(entry, "methods", Method.values()) or ())
            if not self.eval_only and self.method not in methods:
                raise ConfigError(f"method: {self.model} does not support {self.method!r}; it supports "
                                  f"{', '.join(methods) or 'nothing'}", field="method",
                                  hint=None if methods else "score it with --eval-only")
            if not self.eval_only and getattr(entry, "trainable", True) is False:
                why = getattr(entry, "reason", None) or "the catalog marks it as not trainable"
                raise ConfigError(f"model: {self.model} cannot be fine-tuned here ({why})", field="model",
                                  hint="score it with --eval-only")
        return self

    def _applies(self, opt: Option) -> bool:
        if opt.applies == "train":
            return not self.eval_only
        if opt.applies == "adapter":
            return not self.eval_only and bool(self.method) and Method(self.method).adapter
        if opt.applies == "eval":
            return bool(self.eval_only)
        return True

    def warnings(self) -> list[str]:
        """One line per switched-on option that deserves a warning (trust_remote_code)."""
        return [f"{OPTIONS[n].flag}: {OPTIONS[n].warning}" for n in USER_OPTIONS
                if OPTIONS[n].warning and getattr(self, n)]


FIELD_NAMES = tuple(f.name for f in dataclasses.fields(RunConfig))
OPTIONS: dict[str, Option] = {f.name: f.metadata["option"] for f in dataclasses.fields(RunConfig)
                              if "option" in f.metadata}
USER_OPTIONS = tuple(OPTIONS)


def form_options() -> list[tuple[str, Option]]:
    """(field, Option) for every option the new-run form shows, in definition order."""
    return [(n, o) for n, o in OPTIONS.items() if o.label]


def cli_options() -> list[tuple[str, Option]]:
    """(field, Option) for every option the CLI takes, in definition order."""
    return [(n, o) for n, o in OPTIONS.items() if o.flag]


# -- parsing ------------------------------------------------------------------------------------
INTEGER_KINDS = ("int", "int0", "anyint")
NUMBER_KINDS = (*INTEGER_KINDS, "float", "frac")


def parse_text(text: str | None, kind: str, optional: bool = False) -> tuple[Any, str | None]:
    """A user's text -> (value, None), or (None, what is wrong). The message fits after the
    field's name or label. Shared by the new-run form and the CLI (through `parse`)."""
    raw = (text or "").strip()
    if not raw:
        return None, (None if optional else "a value is required")
    if kind == "list":
        return [t.strip() for t in raw.split(",") if t.strip()] or None, None
    if kind == "bool":
        low = raw.lower()
        if low in ("1", "true", "yes", "on"):
            return True, None
        if low in ("0", "false", "no", "off"):
            return False, None
        return None, f"expected yes or no, got {raw!r}"
    if kind == "count_or_all":
        if raw.lower() == "all":
            return "all", None
        value, error = parse_text(raw, "int")
        return value, error and error.replace("expected a whole number", "expected a number or 'all'")
    if kind not in NUMBER_KINDS:
        return raw, None
    raw = raw.replace("_", "")
    try:
        num = float(raw)
    except ValueError:
        want = "a whole number" if kind in INTEGER_KINDS else "a number"
        return None, f"expected {want}, got {text.strip()!r}"  # type: ignore[union-attr]
    if not math.isfinite(num):
        return None, f"must be a finite number, got {raw}"
    if kind in INTEGER_KINDS:
        if num != int(num):
            return None, f"expected a whole number, got {text.strip()!r}"  # type: ignore[union-attr]
        num = int(num)
    if kind in ("int", "float") and num <= 0:
        return None, f"must be > 0, got {raw}"
    if kind == "int0" and num < 0:
        return None, f"must be >= 0, got {raw}"
    if kind == "frac" and not 0 <= num < 1:
        return None, f"must be in [0, 1), got {raw}"
    return num, None


def parse(name: str, text: str | None) -> Any:
    """A user's text for option `name` -> its value (None for an empty optional field).
    Raises ConfigError naming the field."""
    opt = OPTIONS[name]
    value, error = parse_text(text, opt.kind, opt.optional)
    if error:
        raise ConfigError(f"{name}: {error}", field=name)
    return coerce(name, value) if value is not None else None


def coerce(name: str, value: Any) -> Any:
    """Check and convert one option's value (from JSON, the CLI or the form). ConfigError names
    the field: not a number, not finite (nan, inf), out of range, not one of the choices."""
    opt = OPTIONS[name]
    kind = opt.kind
    if kind == "text":
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected text, got {value!r}", field=name)
        return value.strip()
    if kind == "choice":
        if value not in opt.choices:
            raise ConfigError(f"{name}: {value!r} is not one of {', '.join(opt.choices)}", field=name)
        return str(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}", field=name)
        return value
    if kind == "list":
        if isinstance(value, str):
            value = [t.strip() for t in value.split(",") if t.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(t, str) and t.strip() for t in value):
            raise ConfigError(f"{name}: expected a list of names, got {value!r}", field=name)
        items = [t.strip() for t in value]
        if opt.choices:  # a vocabulary (report_to): known names only, "none" means the empty list
            items = sorted({t.lower() for t in items} - {"none"})
            unknown = [t for t in items if t not in opt.choices]
            if unknown:
                raise ConfigError(f"{name}: {unknown[0]!r} is not one of {', '.join(opt.choices)} (or none)",
                                  field=name)
            return items
        return items or None
    if kind == "count_or_all":
        if isinstance(value, str) and value.strip().lower() == "all":
            return "all"
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{name}: expected a number or 'all', got {value!r}", field=name)
        try:
            float(value)
        except ValueError:
            raise ConfigError(f"{name}: expected a number or 'all', got {value!r}", field=name) from None
        kind = "int"
    if isinstance(value, bool):
        raise ConfigError(f"{name}: expected a number, got {value!r}", field=name)
    integer = kind in ("int", "int0", "anyint")
    try:
        num = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected {'an integer' if integer else 'a number'}, got {value!r}",
                          field=name) from None
    if not math.isfinite(num):
        raise ConfigError(f"{name}: must be a finite number, got {value!r}", field=name)
    if integer:
        if num != int(num):
            raise ConfigError(f"{name}: expected an integer, got {value!r}", field=name)
        num = int(num)
    if kind in ("int", "float") and num <= 0:
        raise ConfigError(f"{name}: must be > 0, got {value!r}", field=name)
    if kind == "int0" and num < 0:
        raise ConfigError(f"{name}: must be >= 0, got {value!r}", field=name)
    if kind == "frac" and not 0 <= num < 1:
        raise ConfigError(f"{name}: must be in [0, 1), got {value!r}", field=name)
    return num


# -- defaults ---------------------------------------------------------------------------------
# Whisper's linear layers (attention q/k/v/out and the MLP fc1/fc2, encoder and decoder): LoRA on
# all of them ("all linear layers", QLoRA paper s.4: adapters on every linear layer match full
# fine-tuning where q,v alone fall short) instead of q,v only.
WHISPER_ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
# Schedule from the data. Reasoned starting values, not yet tuned: tests/benchmarks/bench_cleanup.py
# measures them against a bare Seq2SeqTrainer script (its training rows need a GPU). Passes over
# the data fall with its size, EPOCH_SCALE / sqrt(examples) clamped to [MIN_EPOCHS, MAX_EPOCHS] (10 examples -> 15
# epochs, 50 -> 6.8, 300 -> 2.8, 2000 -> 1); steps clamped to [MIN_STEPS, MAX_STEPS].
EPOCH_SCALE = 48.0
MIN_EPOCHS, MAX_EPOCHS = 1.0, 15.0
MIN_STEPS, MAX_STEPS = 20, 3000
EVALS_PER_RUN = 8  # evaluations over a run (and at the end): eval_every = ceil(steps / 8)
EARLY_STOP_EVALS = 3  # evaluations without a better validation WER before stopping
WARMUP_FRACTION = 0.1  # warm-up <= 10% of the steps
SMALL_MODEL_PARAMS = 300e6  # below: "small" (whisper tiny/base/small); full fine-tune lr x3


@dataclass(frozen=True)
class DataSize:
    """What the schedule is derived from: training clips, their minutes, the training examples
    the recipe makes of them (a clip longer than the model's window is several pieces), and the
    number of clips the run evaluates on (0: no evaluation set)."""

    clips: int
    minutes: float
    examples: int
    eval_clips: int = 0


def data_size(train_rows: list[dict], eval_clips: int, entry: Any = None) -> DataSize:
    """DataSize from manifest rows (their `duration` in seconds). Long clips count one example
    per `entry.window_s` piece when the family segments long audio, else one per clip."""
    window = float(getattr(entry, "window_s", 30.0) or 30.0)
    segment = getattr(entry, "long_audio", "segment") == "segment"
    seconds = [float(r.get("duration") or 0.0) for r in train_rows]
    examples = sum(max(1, math.ceil(d / window)) if segment else 1 for d in seconds)
    return DataSize(clips=len(train_rows), minutes=sum(seconds) / 60, examples=examples, eval_clips=eval_clips)


def _fmt_lr(lr: float) -> str:
    return f"{lr:.0e}".replace("e-0", "e-")


def defaults(entry: Any, method: str | None, eval_only: bool = False, data: DataSize | None = None) -> dict:
    """Starting values for a model family, method and (when known) training data: what the form
    pre-fills and what `queue add` uses for options not given.

    - batch: audio LLMs (billions of parameters) 1 x grad-accum 8, a frozen audio encoder;
      seq2seq and CTC models 4 x 1 under 100 examples (more, smaller steps on tiny data), 4 x 2 above.
    - steps: EPOCH_SCALE / sqrt(examples) epochs (in [1, 15]) of the data, in [20, 3000] steps;
      without `data`, 300 steps. Warm-up 10% of the steps; EVALS_PER_RUN evaluations; early stop
      after EARLY_STOP_EVALS evaluations without a better validation WER when there is an
      evaluation set.
    - lr: LoRA 1e-3 (seq2seq), 3e-4 (CTC), 1e-4 (audio LLMs), half for seq2seq models over
      SMALL_MODEL_PARAMS; full fine-tune 1e-5 (5e-5 CTC), x3 for models under SMALL_MODEL_PARAMS.
    - LoRA targets: all linear layers for Whisper; the catalog/recipe's for other families.
    The result's "defaults_note" says why, in one line."""
    family = getattr(entry, "family", "seq2seq")
    big = family == "audio-llm"
    adapter = bool(method) and method != Method.FULL and not eval_only
    params = getattr(entry, "params_total", None)
    small = params is not None and params < SMALL_MODEL_PARAMS
    if adapter:
        lr = 1e-4 if big else 3e-4 if family == "ctc" else (1e-3 if params is None or small else 5e-4)
    else:
        lr = 5e-5 if family == "ctc" else 1e-5
        if small and not big:
            lr *= 3
    whisper = getattr(entry, "recipe", None) == "whisper"
    targets = list(WHISPER_ALL_LINEAR) if adapter and whisper else None
    batch, accum = (1, 8) if big else (4, 2)
    steps, warmup, eval_every, early = 300, 30, 50, 0
    note = None
    if data is not None and data.examples > 0 and not eval_only:
        if not big and data.examples < 100:
            accum = 1
        per_epoch = math.ceil(math.ceil(data.examples / batch) / accum)
        epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, EPOCH_SCALE / math.sqrt(data.examples)))
        steps = int(min(MAX_STEPS, max(MIN_STEPS, math.ceil(epochs * per_epoch))))
        warmup = int(math.floor(WARMUP_FRACTION * steps))
        eval_every = max(1, math.ceil(steps / EVALS_PER_RUN))
        early = EARLY_STOP_EVALS if data.eval_clips > 0 else 0
        pieces = f" ({data.examples} pieces)" if data.examples != data.clips else ""
        what = ("LoRA on all linear layers" if targets else "LoRA on the family's layers") if adapter else "full fine-tune"
        note = (f"{data.clips} clips{pieces}, {data.minutes:.1f} min -> {steps} steps ≈ {steps / per_epoch:.0f} "
                f"epochs of batch {batch} x {accum}, warm-up {warmup}, eval every {eval_every}"
                + (f", early stop after {early} evals without a better WER" if early else ", no evaluation set")
                + f"; lr {_fmt_lr(lr)}, {what}")
    return {
        "max_steps": steps,
        "epochs": None,
        "batch_size": batch,
        "grad_accum": accum,
        "lr": lr,
        "warmup_steps": warmup,
        "lora_rank": lora_defaults(family)[0] if adapter else None,
        "lora_alpha": lora_defaults(family)[1] if adapter else None,
        "lora_dropout": 0.05 if adapter else None,
        "lora_targets": targets,  # None: the family's (recipe default_lora_targets / catalog lora_targets)
        "eval_every": eval_every,
        "save_every": eval_every,
        "early_stop": early,
        "seed": 42,
        "precision": Precision.AUTO.value,
        "optimizer": (Optimizer.ADAMW8BIT if method == Method.QLORA else Optimizer.ADAMW).value,
        "gradient_checkpointing": True,  # the estimator assumes it; it is what fits a 12 GiB card
        "freeze_audio_encoder": big,
        "trust_remote_code": False,
        "max_new_tokens": SEQ2SEQ_MAX_NEW_TOKENS if family in ("seq2seq", "speech-to-text") else LLM_MAX_NEW_TOKENS,
        "language": None,
        "split": Split.VALIDATION.value if eval_only else None,
        "eval_dataset": None,
        "eval_only": eval_only,
        "priority": 0,
        "gpus": 1,
        "report_to": [],  # metric sinks besides metrics.jsonl (engine.reporting)
        "defaults_note": note,
    }


def with_defaults(options: dict, entry: Any, data: DataSize | None = None) -> RunConfig:
    """A RunConfig from user options (None = not given) over the family/method/data defaults;
    `defaults_note` says why when the schedule came from the data and was not overridden."""
    unknown = sorted(set(options) - set(USER_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown option(s): {', '.join(unknown)}", field=unknown[0])
    eval_only = bool(options.get("eval_only"))
    values = defaults(entry, options.get("method"), eval_only, data)
    given = {k: v for k, v in options.items() if v is not None}
    if "epochs" in given:
        values["max_steps"] = None
    elif "max_steps" in given:
        values["epochs"] = None
    base = dict(values)
    if "early_stop" not in given and (given.get("epochs") is not None
                                      or given.get("max_steps", base["max_steps"]) != base["max_steps"]):
        values["early_stop"] = 0  # early stopping belongs to the derived schedule; a set length is run out
    values.update(given)
    cfg = RunConfig(**{k: v for k, v in values.items() if k in USER_OPTIONS})
    overridden = sorted(k for k in set(given) & {"max_steps", "epochs", "batch_size", "grad_accum", "lr", "lora_targets"}
                        if given[k] != base.get(k))  # the form sends the defaults it pre-filled: not an override
    note = values.get("defaults_note")
    if note and overridden:
        note += f" (you set {', '.join(overridden)})"
    cfg.defaults_note = note
    return cfg


def as_config(config: "RunConfig | dict") -> RunConfig:
    """A RunConfig from either a RunConfig or config.json's dict (tests and old callers)."""
    return config if isinstance(config, RunConfig) else RunConfig.from_dict(config)


def iter_flags() -> Iterable[str]:
    for _, o in cli_options():
        yield o.flag  # type: ignore[misc]
        yield from o.aliases
