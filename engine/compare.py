"""Which run is best: run summaries, filtering, sorting, comparison and its export.

Pure functions over run records and run files, with no Textual, so the History screen and
the CLI share them. Summaries come from the TinyDB record only (cheap for 10,000 runs);
the comparison and the run detail also read each run's files.
"""

from __future__ import annotations

import csv
import io
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from engine import clips as clips_mod
from engine.runfiles import RunFiles, atomic_write_text, read_json, read_jsonl
from engine.workspace import Workspace
from engine.errors import VoxtuneError
from engine.enums import RunStatus, Split

# Columns of a run summary: (key, heading). Metric columns sort numerically. "split" is the
# split the WER was measured on: shown next to it, so a test-split WER never passes for a
# validation-split one.
TEXT_COLUMNS = [("id", "Run"), ("model", "Model"), ("method", "Method"), ("dataset", "Dataset"), ("status", "Status"),
                ("split", "Split")]
METRIC_COLUMNS = [
    ("wer", "WER"),
    ("best_wer", "Best WER"),
    ("cer", "CER"),
    ("wer_normalized", "WER norm"),
    ("eval_loss", "Eval loss"),
    ("final_loss", "Train loss"),
    ("filler_rate", "Fillers"),
    ("deletion_rate", "Deletions"),
    ("duration_s", "Duration"),
    ("peak_gb", "Peak GiB"),
    ("estimate_gb", "Est. GiB"),
    ("created_at", "Created"),
]
COLUMNS = TEXT_COLUMNS + METRIC_COLUMNS
COLUMN_KEYS = [k for k, _ in COLUMNS]
FILTER_FIELDS = ("model", "method", "dataset", "status", "split")
# Metrics stored as fractions (metrics.jsonl) and shown as percentages everywhere (fmt_value).
PERCENT_METRICS = ("wer", "best_wer", "cer", "wer_normalized", "filler_rate", "deletion_rate")
NUMERIC_FILTERS = tuple(k for k, _ in METRIC_COLUMNS if k != "created_at")
OPS = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, ">": lambda a, b: a > b}
COMPARISON_RE = re.compile(r"^([a-z_]+)(<=|>=|<|>)([0-9]*\.?[0-9]+)(%?)$")
EVAL_LABEL = "eval"  # the "method" of an eval-only run: it trains nothing
# Metrics compared side by side, in this order (record keys of an eval entry).
EVAL_METRICS = ("wer", "cer", "wer_normalized", "eval_loss", "filler_rate", "deletion_rate")


class CompareError(VoxtuneError):
    """Runs that cannot be compared (unknown ids, nothing to show)."""


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def peak_gb(peak: dict | None) -> float | None:
    """Measured peak: reserved (what the allocator held) beats allocated; CPU runs give rss."""
    peak = peak or {}
    for key in ("reserved_gb", "allocated_gb", "rss_gb"):
        if _num(peak.get(key)) is not None:
            return float(peak[key])
    return None


def scored_split(record: dict) -> str:
    """The split a run's WER, CER, ... were measured on: an eval-only run's `--split`
    (default validation); a training run evaluates on validation (engine.training)."""
    if record.get("eval_only"):
        return str(record.get("split") or Split.VALIDATION.value)
    return Split.VALIDATION.value


SPLIT_SHORT = {Split.VALIDATION.value: "val", Split.TEST.value: "test", Split.ALL.value: "all"}


def split_short(split: str | None) -> str:
    """A split's tag next to a WER in narrow columns: val, test, all."""
    return SPLIT_SHORT.get(str(split), str(split or "val"))


def split_tag(split: str | None) -> str:
    """The tag after a WER in the narrow Runs and History columns: nothing for the validation
    split (what every training run scores), " test" / " all" otherwise, so a test-split WER is
    never shown beside validation WERs as if they were comparable."""
    tag = split_short(split)
    return "" if tag == "val" else f" {tag}"


def method_label(record: dict) -> str:
    """What a run does: its method, or "eval" for an eval-only run (whose method is None)."""
    if record.get("eval_only"):
        return EVAL_LABEL
    return str(record.get("method") or "?")


def summarize(record: dict, now: float | None = None) -> dict:
    """One flat row of a run record: the columns History shows and sorts by."""
    metrics = record.get("metrics") or {}
    best = record.get("best") or {}
    started, finished = _num(record.get("started_at")), _num(record.get("finished_at"))
    duration = None
    if started is not None:
        end = finished if finished is not None else (now if now is not None else time.time())
        duration = max(0.0, end - started) if record.get("status") == RunStatus.RUNNING or finished is not None else None
    row = {
        "id": record.get("id", ""),
        "model": str(record.get("model", "")),
        "method": method_label(record),
        "dataset": str(record.get("dataset", "")),
        "status": str(record.get("status", "")),
        "split": scored_split(record),
        "eval_only": bool(record.get("eval_only")),
        "best_wer": _num(best.get("wer")),
        "final_loss": _num(record.get("final_loss", metrics.get("loss"))),
        "duration_s": duration,
        "peak_gb": peak_gb(record.get("peak_memory")),
        "estimate_gb": _num(record.get("estimate_gb")),
        "created_at": _num(record.get("created_at")),
    }
    for key in EVAL_METRICS:
        row[key] = _num(metrics.get(key))
    return row


# -- filtering --------------------------------------------------------------------------
@dataclass
class Filter:
    """`model=whisper status=finished lora`: field=value must be a substring of that field,
    bare words must appear in any text field. Case-insensitive."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    words: list[str] = field(default_factory=list)
    # `wer<30%`, `wer<0.3`, `peak_gb<=10`: (key, op, value in the stored unit); a run without
    # the metric does not match
    comparisons: list[tuple[str, str, float]] = field(default_factory=list)

    def matches(self, row: dict) -> bool:
        for key, op, value in self.comparisons:
            have = row.get(key)
            if not isinstance(have, (int, float)) or not OPS[op](have, value):
                return False
        for key, wanted in self.fields.items():
            value = str(row.get(key, "")).lower()
            if not any(w in value for w in wanted):
                return False
        if self.words:
            hay = " ".join(str(row.get(k, "")) for k, _ in TEXT_COLUMNS).lower()
            if not all(w in hay for w in self.words):
                return False
        return True


def parse_filter(text: str) -> Filter:
    """Raises CompareError naming the unknown field, so the screen can say what to type.
    Percent metrics (WER, CER, ...) compare in percent when the number has `%` or is above 1
    (`wer<30%`, `wer<30`), as a fraction otherwise (`wer<0.3`): both mean WER below 30%."""
    try:
        tokens = shlex.split(text)
    except ValueError:
        tokens = text.split()
    flt = Filter()
    for tok in tokens:
        cmp = COMPARISON_RE.match(tok.lower())
        if cmp is None and any(op in tok for op in OPS):
            raise CompareError(f"cannot read {tok!r}; compare a metric with a number, e.g. wer<30% or wer<0.3 "
                               f"(metrics: {', '.join(NUMERIC_FILTERS)})")
        if cmp is not None:
            key, op, number, pct = cmp.groups()
            if key not in NUMERIC_FILTERS:
                raise CompareError(f"cannot compare {key!r}; use one of {', '.join(NUMERIC_FILTERS)} (e.g. wer<30%)")
            value = float(number)
            if key in PERCENT_METRICS and (pct or value > 1):  # 30% or 30: a percentage; 0.3: a fraction
                value /= 100
            flt.comparisons.append((key, op, value))
            continue
        key, sep, value = tok.partition("=")
        if not sep:
            key, sep, value = tok.partition(":")
        if sep:
            key = key.lower().strip()
            if key not in FILTER_FIELDS:
                raise CompareError(f"unknown filter field {key!r}; use {', '.join(FILTER_FIELDS)} (e.g. status=finished)")
            # status=finished,failed means either
            flt.fields.setdefault(key, []).extend(v.lower() for v in value.split(",") if v)
        elif tok:
            flt.words.append(tok.lower())
    return flt


def describe_comparisons(flt: Filter) -> str:
    """`WER < 30.0%, Peak GB <= 10`: how the numbers of a filter were read."""
    headings = dict(METRIC_COLUMNS)
    return ", ".join(f"{headings[k]} {op} {fmt_value(k, v)}" for k, op, v in flt.comparisons)


def filter_rows(rows: Iterable[dict], text: str) -> list[dict]:
    flt = parse_filter(text)
    return [r for r in rows if flt.matches(r)]


def sort_rows(rows: list[dict], key: str, reverse: bool = False) -> list[dict]:
    """Missing values always sort last, whichever the direction (a run without WER is not best)."""
    if key not in COLUMN_KEYS:
        raise CompareError(f"cannot sort by {key!r}; choose one of {', '.join(COLUMN_KEYS)}")
    present = [r for r in rows if r.get(key) is not None]
    missing = [r for r in rows if r.get(key) is None]
    if key in dict(METRIC_COLUMNS):
        present.sort(key=lambda r: r[key], reverse=reverse)
    else:
        present.sort(key=lambda r: str(r[key]).lower(), reverse=reverse)
    return present + missing


# -- formatting shared by the screens and exports ------------------------------------------
def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def fmt_value(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "duration_s":
        return fmt_duration(value)
    if key == "created_at":
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(value))
    if key.endswith("_gb"):
        return f"{value:.1f}"
    if isinstance(value, float):
        if key in PERCENT_METRICS:
            return f"{value * 100:.1f}%"  # fractions in metrics.jsonl; WER may pass 100%
        return f"{value:.4g}"
    return str(value)


# -- run detail and comparison (read run files) -----------------------------------------------
def curves(metrics: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """(step, value) series per plotted quantity: train loss, eval loss, WER."""
    out: dict[str, list[tuple[float, float]]] = {"loss": [], "eval_loss": [], "wer": []}
    for rec in metrics:
        step = _num(rec.get("step"))
        if step is None:
            continue
        if rec.get("kind") == "train" and _num(rec.get("loss")) is not None:
            out["loss"].append((step, float(rec["loss"])))
        elif rec.get("kind") == "eval":
            for key in ("eval_loss", "wer"):
                if _num(rec.get(key)) is not None:
                    out[key].append((step, float(rec[key])))
    return out


def final_samples(samples: list[dict]) -> dict[str, dict]:
    """The latest prediction per sample id (samples.jsonl is append-only, in step order)."""
    out: dict[str, dict] = {}
    for rec in samples:
        sid = rec.get("sample_id")
        if sid is None:
            continue
        prev = out.get(sid)
        if prev is None or (_num(rec.get("step")) or 0) >= (_num(prev.get("step")) or 0):
            out[sid] = rec
    return out


def _read_json_or_note(path: Path, problems: list[str]) -> dict:
    """A damaged file must not hide the rest of a run: note it and carry on."""
    try:
        data = read_json(path, {})
    except (ValueError, OSError) as e:
        problems.append(f"{path} is unreadable ({e}); the run's other files are shown")
        return {}
    return data if isinstance(data, dict) else {}


def run_detail(ws: Workspace, record: dict) -> dict:
    """Everything the run detail view shows, read once off the UI thread."""
    rf = RunFiles(ws.run_dir(record["id"]))
    problems: list[str] = []
    result = _read_json_or_note(rf.result, problems)
    config = _read_json_or_note(rf.config, problems)
    metrics = read_jsonl(rf.metrics)
    evals = [m for m in metrics if m.get("kind") == "eval"]
    row = summarize(record)
    # result.json is the source of truth once written; the record is a copy made at the end
    if result.get("duration_s") is not None:
        row["duration_s"] = _num(result.get("duration_s"))
    if row["peak_gb"] is None:
        row["peak_gb"] = peak_gb(result.get("peak_memory"))
    if row["estimate_gb"] is None:
        row["estimate_gb"] = _num(config.get("estimate_gb"))
    final_metrics = dict(record.get("metrics") or result.get("metrics") or (evals[-1] if evals else {}))
    for key in EVAL_METRICS:
        if row.get(key) is None:
            row[key] = _num(final_metrics.get(key))
    if row["final_loss"] is None:
        row["final_loss"] = _num(result.get("final_loss"))
    if row["best_wer"] is None:
        row["best_wer"] = _num((result.get("best") or {}).get("wer"))
    return {
        "record": record,
        "row": row,
        "config": config,
        "result": result,
        "metrics": final_metrics,
        "curves": curves(metrics),
        "samples": final_samples(read_jsonl(rf.samples)),
        "clips": clips_mod.latest(read_jsonl(rf.clips)),
        "peak_memory": record.get("peak_memory") or result.get("peak_memory") or {},
        "problems": problems,
    }


@dataclass
class Comparison:
    details: list[dict]

    @property
    def run_ids(self) -> list[str]:
        return [d["record"]["id"] for d in self.details]

    def metric_table(self) -> list[tuple[str, list[str]]]:
        """Rows of (heading, one formatted value per run): metrics side by side."""
        keys = [k for k, _ in METRIC_COLUMNS if k != "created_at"]
        rows = [(h, [str(d["row"].get(k) or "-") for d in self.details]) for k, h in TEXT_COLUMNS[1:]]
        rows += [(dict(METRIC_COLUMNS)[k], [fmt_value(k, d["row"].get(k)) for d in self.details]) for k in keys]
        return rows

    def config_differences(self) -> list[tuple[str, list[str]]]:
        """Configuration keys whose values differ between the runs (ids and paths left out)."""
        skip = {"run_id", "workspace", "dataset_manifest", "versions"}
        keys = sorted({k for d in self.details for k in d["config"]} - skip)
        out = []
        for k in keys:
            vals = [_short(d["config"].get(k)) for d in self.details]
            if len(set(vals)) > 1:
                out.append((k, vals))
        return out

    def sample_table(self) -> list[tuple[str, str, list[str]]]:
        """(sample id, reference, final prediction per run), for samples any run has."""
        ids = sorted({sid for d in self.details for sid in d["samples"]})
        out = []
        for sid in ids:
            ref = next((d["samples"][sid].get("reference", "") for d in self.details if sid in d["samples"]), "")
            preds = [d["samples"].get(sid, {}).get("prediction", "-") for d in self.details]
            out.append((sid, ref, preds))
        return out


def _short(v: Any) -> str:
    return "-" if v is None else str(v)


def load_comparison(ws: Workspace, records: list[dict]) -> Comparison:
    if len(records) < 2:
        raise CompareError("pick at least two runs to compare (space marks a run)")
    return Comparison([run_detail(ws, r) for r in records])


def _md_cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def to_markdown(comp: Comparison) -> str:
    ids = comp.run_ids
    parts = [f"# voxtune comparison: {len(ids)} runs", "", "## Metrics", ""]
    parts.append(_md_table(["", *ids], [[h, *vals] for h, vals in comp.metric_table()]))
    diffs = comp.config_differences()
    parts += ["", "## Configuration differences", ""]
    parts.append(_md_table(["key", *ids], [[k, *v] for k, v in diffs]) if diffs else "(identical configurations)")
    parts += ["", "## Samples (final predictions)", ""]
    for sid, ref, preds in comp.sample_table():
        parts += [f"### {sid}", "", _md_table(["", "text"], [["reference", ref], *[[i, p] for i, p in zip(ids, preds)]]), ""]
    return "\n".join(parts).rstrip() + "\n"


def to_csv(comp: Comparison) -> str:
    """One row per run, raw numbers (not formatted) so a spreadsheet can sort them."""
    buf = io.StringIO()
    keys = [k for k, _ in COLUMNS]
    writer = csv.writer(buf)
    writer.writerow(keys)
    for d in comp.details:
        writer.writerow(["" if d["row"].get(k) is None else d["row"][k] for k in keys])
    return buf.getvalue()


def export(ws: Workspace, comp: Comparison, fmt: str, when: float | None = None) -> Path:
    """Write the comparison under <home>/exports/ and return the path (never overwrites)."""
    if fmt not in ("md", "csv"):
        raise CompareError(f"unknown export format {fmt!r}; use md or csv")
    text = to_markdown(comp) if fmt == "md" else to_csv(comp)
    folder = ws.home / "exports"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when if when is not None else time.time()))
    path = folder / f"compare-{stamp}.{fmt}"
    n = 2
    while path.exists():
        path = folder / f"compare-{stamp}-{n}.{fmt}"
        n += 1
    atomic_write_text(path, text)
    return path
