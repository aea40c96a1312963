"""Optional metric reporting: a run's numbers in TensorBoard and trackio, next to voxtune's own
metrics.jsonl (which stays the source of truth for the TUI and the CLI).

A run asks for it with the run option `report_to` (`voxtune queue add --report-to
tensorboard,trackio`). Both sinks write inside the run folder and need no network:

- TensorBoard: event files in runs/<id>/tensorboard/ (`tensorboard --logdir runs/` shows every
  run). Train loss, learning rate, grad norm and epoch come from transformers' own
  `TensorBoardCallback` (what `report_to="tensorboard"` installs), given our writer so that
  the evaluation scalars (`eval/wer`, `eval/cer`, `eval/wer_normalized`, `eval/filler_rate`,
  `eval/deletion_rate`, `eval/loss`) and the pinned clips' predictions (`eval/samples`, text)
  land in the same event file, on the same global-step axis.
- trackio: a local SQLite project `voxtune` in runs/<id>/trackio/ (`TRACKIO_DIR=runs/<id>/trackio
  trackio show --project voxtune`). trackio is driven through its own API (`init`/`log`/
  `finish`) with explicit steps rather than transformers' `TrackioCallback`: that callback
  logs without a step (its points would not line up with the evaluation's) and carries the
  Space deploy/freeze paths, which voxtune must never reach. `init` gets no Space, server or
  bucket, and the TRACKIO_* variables that would point it at one are removed first.

Light part (module level): the names, parsing and the "is it installed" check used by
`engine.queue` at queue time. Heavy part (`Reporter`): imported libraries only inside the
worker process. A reporting failure never fails a run: it is one line in the log.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Iterable

from engine.errors import VoxtuneError

# name -> (module that must be importable, the pyproject extra that installs it)
REPORTERS: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "trackio": ("trackio", "trackio"),
}
TENSORBOARD_DIR = "tensorboard"  # inside the run folder
TRACKIO_DIR = "trackio"  # inside the run folder
TRACKIO_PROJECT = "voxtune"
# environment variables that would send trackio to a Space, a server or a bucket
TRACKIO_REMOTE_ENV = ("TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL", "TRACKIO_WRITE_TOKEN", "TRACKIO_DATASET_ID",
                      "TRACKIO_BUCKET_ID")
EVAL_SCALARS = ("wer", "cer", "wer_normalized", "filler_rate", "deletion_rate", "eval_loss")


class ReportingError(VoxtuneError):
    """`report_to` names an unknown sink, or one whose package is not installed."""

    def __init__(self, message: str, **kw) -> None:
        kw.setdefault("field", "report_to")
        super().__init__(message, **kw)


def parse(value: str | Iterable[str] | None) -> list[str]:
    """`"tensorboard,trackio"`, a list of names, None/""/"none" -> sorted unique names.

    Raises ReportingError naming the unknown entry."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    names = []
    for item in items:
        if not isinstance(item, str):
            raise ReportingError(f"report_to: expected names, got {item!r}")
        name = item.strip().lower()
        if name in ("", "none"):
            continue
        if name not in REPORTERS:
            raise ReportingError(f"report_to: {item.strip()!r} is not one of {', '.join(REPORTERS)} (or none)")
        names.append(name)
    return sorted(set(names))


def require_installed(names: Iterable[str]) -> None:
    """Raise ReportingError (one line naming the extra to install) for a sink whose package is missing.
    Looks the package up without importing it."""
    for name in names:
        module, extra = REPORTERS[name]
        if importlib.util.find_spec(module) is None:
            raise ReportingError(f"report_to: {name} is not installed; install it with "
                                 f"pip install 'voxtune[{extra}]' (or pip install {module})")


def _fmt(v: Any) -> str:
    return "-" if v is None else str(v).replace("|", "\\|").replace("\n", " ")


def samples_markdown(samples: list[dict]) -> str:
    """The pinned clips of one evaluation as a Markdown table (what TensorBoard's text tab and
    trackio's Markdown render)."""
    lines = ["| clip | reference | prediction |", "| --- | --- | --- |"]
    lines += [f"| {_fmt(s.get('sample_id'))} | {_fmt(s.get('reference'))} | {_fmt(s.get('prediction'))} |"
              for s in samples]
    return "\n".join(lines)


class Reporter:
    """The sinks a run asked for, opened in the worker. `names` empty: every method is a no-op.

    Use: `start(config)`, `trainer_callbacks()` for the Trainer, `log_train(record)` per logging
    step, `log_eval(record, samples)` per evaluation, `close()` at the end (also on failure)."""

    def __init__(self, names: Iterable[str], run_dir: str | Path, run_name: str) -> None:
        self.names = list(names)
        self.run_dir = Path(run_dir)
        self.run_name = run_name
        self.tb = None  # torch.utils.tensorboard.SummaryWriter
        self.trackio = None  # the trackio module, once its run is open

    @classmethod
    def from_config(cls, cfg: dict, run_dir: str | Path) -> "Reporter":
        """The one place the run option `report_to` is read in the worker."""
        try:
            names = parse(cfg.get("report_to"))
        except ReportingError as e:
            print(f"voxtune: metric reporting off: {e}", flush=True)
            names = []
        return cls(names, run_dir, str(cfg.get("run_id") or Path(run_dir).name))

    @property
    def tensorboard_dir(self) -> Path:
        return self.run_dir / TENSORBOARD_DIR

    @property
    def trackio_dir(self) -> Path:
        return self.run_dir / TRACKIO_DIR

    def start(self, config: dict | None = None) -> "Reporter":
        if "tensorboard" in self.names:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(log_dir=str(self.tensorboard_dir))
                print(f"voxtune: TensorBoard events in {self.tensorboard_dir}", flush=True)
            except Exception as e:  # noqa: BLE001 -- a metrics sink never fails a run
                print(f"voxtune: TensorBoard reporting off: {type(e).__name__}: {e}", flush=True)
        if "trackio" in self.names:
            self._start_trackio(config or {})
        return self

    def _start_trackio(self, config: dict) -> None:
        self.trackio_dir.mkdir(parents=True, exist_ok=True)
        # trackio reads TRACKIO_DIR once, when first imported (one run per worker process)
        os.environ["TRACKIO_DIR"] = str(self.trackio_dir)
        for var in TRACKIO_REMOTE_ENV:
            os.environ.pop(var, None)
        try:
            import trackio
            from trackio import utils as trackio_utils

            if Path(trackio_utils.TRACKIO_DIR).resolve() != self.trackio_dir.resolve():
                raise RuntimeError(f"trackio was already imported with TRACKIO_DIR={trackio_utils.TRACKIO_DIR}")
            trackio.init(project=TRACKIO_PROJECT, name=self.run_name, config=_plain(config), resume="allow",
                         space_id=None, server_url=None, dataset_id=None, bucket_id=None, embed=False,
                         auto_log_gpu=False, auto_log_cpu=False)
            self.trackio = trackio
        except Exception as e:  # noqa: BLE001
            print(f"voxtune: trackio reporting off: {type(e).__name__}: {e}", flush=True)

    def trainer_callbacks(self) -> list:
        """transformers' TensorBoardCallback on our writer (train loss, learning rate, grad norm, epoch)."""
        if self.tb is None:
            return []
        from transformers.integrations import TensorBoardCallback

        return [TensorBoardCallback(tb_writer=self.tb)]

    def log_train(self, rec: dict) -> None:
        """A metrics.jsonl train record to trackio (TensorBoard gets it from TensorBoardCallback)."""
        if self.trackio is None:
            return
        values = {f"train/{k}": rec[k] for k in ("loss", "grad_norm", "epoch", "samples_per_s")
                  if isinstance(rec.get(k), (int, float))}
        if isinstance(rec.get("lr"), (int, float)):
            values["train/learning_rate"] = rec["lr"]
        self._trackio_log(values, int(rec["step"]))

    def log_eval(self, rec: dict, samples: list[dict]) -> None:
        """A metrics.jsonl eval record and the pinned clips' predictions to every open sink."""
        step = int(rec["step"])
        scalars = {("eval/loss" if k == "eval_loss" else f"eval/{k}"): rec[k] for k in EVAL_SCALARS
                   if isinstance(rec.get(k), (int, float))}
        text = samples_markdown(samples) if samples else None
        if self.tb is not None:
            try:
                for k, v in scalars.items():
                    self.tb.add_scalar(k, v, step)
                if text:
                    self.tb.add_text("eval/samples", text, step)
                self.tb.flush()
            except Exception as e:  # noqa: BLE001
                print(f"voxtune: TensorBoard write failed: {type(e).__name__}: {e}", flush=True)
        if self.trackio is not None:
            values: dict[str, Any] = dict(scalars)
            if text:
                values["eval/samples"] = self.trackio.Markdown(text)
            self._trackio_log(values, step)

    def _trackio_log(self, values: dict, step: int) -> None:
        if not values:
            return
        try:
            self.trackio.log(values, step=step)
        except Exception as e:  # noqa: BLE001
            print(f"voxtune: trackio write failed: {type(e).__name__}: {e}", flush=True)

    def close(self) -> None:
        if self.tb is not None:
            try:
                self.tb.close()
            except Exception:  # noqa: BLE001
                pass
            self.tb = None
        if self.trackio is not None:
            try:
                self.trackio.finish()
            except Exception as e:  # noqa: BLE001
                print(f"voxtune: trackio finish failed: {type(e).__name__}: {e}", flush=True)
            self.trackio = None


def _plain(config: dict) -> dict:
    """The run options shown in trackio's run table (hyper-parameters, not paths or versions)."""
    keep = ("model", "method", "dataset", "max_steps", "epochs", "batch_size", "grad_accum", "lr",
            "warmup_steps", "lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "eval_every", "seed",
            "precision", "optimizer", "gradient_checkpointing", "freeze_audio_encoder", "language", "eval_only",
            "split")
    return {k: config.get(k) for k in keep if k in config}
