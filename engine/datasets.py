"""Datasets: import the user's recordings, check them, split them, describe them.

Import reads a folder or a manifest where it is and never writes there: what voxtune keeps
is a normalised manifest (data/<name>/manifest.jsonl, usable rows only) and a record in the
store (problems, splits, pinned samples). Splits are drawn once from a seed and then stay
put until someone changes them on purpose, so runs stay comparable.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import random
import re
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from engine.audio import AUDIO_EXTS, TARGET_SR, AudioError, content_hash, is_silent, probe, read_native
from engine.runfiles import atomic_write_text
from engine.store import Store
from engine.workspace import Workspace
from engine.errors import VoxtuneError

SPLITS = ("train", "validation", "test")
MIN_DURATION_S = 0.5
MAX_DURATION_S = 30 * 60
DEFAULT_SPLIT = "auto"  # auto_split_counts: 80/10/10 from 50 clips, a usable validation split below
MIN_VALIDATION = 5  # fewer validation clips than this get a warning (validation_warning)
DEFAULT_SEED = 0
DEFAULT_PINNED = 3
DEMO_NAME = "demo"
DEMO_SPLIT = "10/2/2"  # two validation clips to pin, two held out for testing
DEMO_DIR = Path(__file__).resolve().parents[1] / "data" / "demo_clips"

AUDIO_COLUMNS = ("audio", "file_name", "path", "file", "audio_path")
TEXT_COLUMNS = ("text", "transcription", "transcript", "sentence", "clean")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class DatasetError(VoxtuneError):
    """Bad input or an unknown name; the message names the file/field and what to do."""


# -- reading the user's layout ---------------------------------------------------------------
def _problem(file: Any, reason: str) -> dict:
    return {"file": str(file), "reason": reason}


def _clean_text(text: str) -> str:
    """Targets are compared word by word: collapse line breaks and runs of spaces."""
    return " ".join(text.split())


def _read_text_file(path: Path) -> tuple[str | None, str | None]:
    """(text, problem reason)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        return None, f"cannot read transcript ({e.strerror})"
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        return None, f"transcript is not UTF-8 (byte {e.start}); re-save it as UTF-8"
    return text, None


def _read_segments_file(path: Path) -> list[dict] | None:
    if not path.exists():
        return None
    try:
        segs = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: not a JSON list of {{start, end, text}} ({e})") from e
    return _check_segments(segs, str(path))


def _check_segments(segs: Any, where: str) -> list[dict] | None:
    if segs is None:
        return None
    ok = isinstance(segs, list) and all(
        isinstance(s, dict) and {"start", "end", "text"} <= set(s) for s in segs
    )
    if not ok:
        raise DatasetError(f"{where}: verbatim_segments must be a list of {{\"start\", \"end\", \"text\"}} objects")
    return [{"start": float(s["start"]), "end": float(s["end"]), "text": str(s["text"])} for s in segs]


def _dangling(path: Path) -> str | None:
    """The problem reason for a symlink whose target is gone (None for anything else)."""
    if path.is_symlink() and not path.exists():
        try:
            target = path.readlink()
        except OSError:
            target = "?"
        return f"dangling symlink (points to {target}, which does not exist): restore the file or remove the link"
    return None


def _audio_files(root: Path) -> tuple[list[Path], list[Path]]:
    """(audio files, dangling audio symlinks) under root, hidden folders skipped."""
    found, dangling = [], []
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() not in AUDIO_EXTS or any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        if p.is_file():
            found.append(p)
        elif _dangling(p):
            dangling.append(p)
    return found, dangling


def _from_folder(root: Path) -> tuple[list[dict], list[dict]]:
    """clip.wav + clip.txt (+ clip.verbatim.txt, + clip.verbatim.json with timings)."""
    rows, problems = [], []
    audio_files, dangling = _audio_files(root)
    problems += [_problem(p, _dangling(p)) for p in dangling]
    for audio in audio_files:
        rel = audio.relative_to(root).with_suffix("")
        txt = audio.with_suffix(".txt")
        row = {"id": rel.as_posix(), "audio": audio, "text": None, "verbatim": None, "speaker": None,
               "verbatim_segments": None}
        if not txt.exists():
            why = _dangling(txt)
            problems.append(_problem(txt, f"transcript is a {why}") if why else
                            _problem(audio, f"missing transcript: expected {txt.name} next to it"))
            continue
        row["text"], why = _read_text_file(txt)
        if why:
            problems.append(_problem(txt, why))
            continue
        vpath = audio.with_name(audio.stem + ".verbatim.txt")
        if vpath.exists():
            verb, why = _read_text_file(vpath)
            if why:
                row["note"] = f"{vpath}: {why}; verbatim ignored"
            else:
                row["verbatim"] = verb
        row["verbatim_segments"] = _read_segments_file(audio.with_name(audio.stem + ".verbatim.json"))
        rows.append(row)
    if not audio_files and not dangling:
        raise DatasetError(
            f"{root}: no audio files found (looked for {', '.join(sorted(AUDIO_EXTS))}); "
            "point at a folder of clips with same-named .txt transcripts, a .jsonl/.csv manifest, "
            "or an audiofolder with metadata.csv"
        )
    return rows, problems


def _pick(row: dict, names: Iterable[str]) -> Any:
    for n in names:
        if row.get(n) not in (None, ""):
            return row[n]
    return None


def _manifest_records(path: Path) -> list[tuple[int, dict]]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: manifest is not UTF-8 (byte {e.start}); re-save it as UTF-8") from e
    if path.suffix.lower() in (".jsonl", ".json"):
        stripped = text.lstrip()
        if path.suffix.lower() == ".json" and stripped.startswith("["):
            data = json.loads(stripped)
            return list(enumerate(data, 1))
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}:{n}: not valid JSON ({e.msg}); one JSON object per line") from e
            if not isinstance(rec, dict):
                raise DatasetError(f"{path}:{n}: expected a JSON object with \"audio\" and \"text\"")
            out.append((n, rec))
        return out
    reader = csv.DictReader(io.StringIO(text))
    return [(n, dict(r)) for n, r in enumerate(reader, 2)]


def _from_manifest(path: Path, base: Path) -> tuple[list[dict], list[dict]]:
    records = _manifest_records(path)
    if not records:
        raise DatasetError(f"{path}: manifest has no rows")
    columns = set().union(*(r.keys() for _, r in records))
    if not columns & set(AUDIO_COLUMNS):
        raise DatasetError(f"{path}: no audio column; name one of {', '.join(AUDIO_COLUMNS)}")
    if not columns & set(TEXT_COLUMNS):
        raise DatasetError(f"{path}: no transcript column; name one of {', '.join(TEXT_COLUMNS)} (the clean target)")
    rows, problems = [], []
    for n, rec in records:
        audio = _pick(rec, AUDIO_COLUMNS)
        where = f"{path}:{n}"
        if audio is None:
            problems.append(_problem(where, "no audio path in this row"))
            continue
        audio_path = Path(str(audio)).expanduser()
        if not audio_path.is_absolute():
            audio_path = base / audio_path
        text = _pick(rec, TEXT_COLUMNS)
        if text is None:
            problems.append(_problem(audio_path, f"missing transcript ({where}: empty text)"))
            continue
        rows.append({
            "id": str(rec.get("id") or Path(str(audio)).with_suffix("").as_posix()),
            "audio": audio_path,
            "text": str(text),
            "verbatim": rec.get("verbatim") or None,
            "speaker": rec.get("speaker") or None,
            "verbatim_segments": _check_segments(rec.get("verbatim_segments"), where),
        })
    return rows, problems


def _unlisted(root: Path, manifest: Path, rows: list[dict], problems: list[dict]) -> list[dict]:
    """Audio files (and dangling audio symlinks) in the dataset folder that the manifest does
    not name: they are not imported, and the report says so instead of skipping them silently."""
    named = {Path(os.path.abspath(r["audio"])) for r in rows}
    named |= {Path(os.path.abspath(p["file"])) for p in problems}
    found, dangling = _audio_files(root)
    out = [_problem(p, _dangling(p)) for p in dangling if Path(os.path.abspath(p)) not in named]
    out += [_problem(p, f"not listed in {manifest.name}: add a row for it to import it")
            for p in found if Path(os.path.abspath(p)) not in named]
    return out


def discover(path: str | Path) -> tuple[list[dict], list[dict], str]:
    """Raw rows, early problems, and the layout name for a folder or manifest path."""
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() not in (".jsonl", ".json", ".csv"):
            raise DatasetError(f"{path}: expected a folder or a .jsonl/.csv manifest")
        rows, problems = _from_manifest(path, path.parent)
        return rows, problems, "manifest"
    meta = path / "metadata.csv"
    if meta.exists():
        rows, problems = _from_manifest(meta, path)
        return rows, problems + _unlisted(path, meta, rows, problems), "audiofolder"
    for name in ("manifest.jsonl", "manifest.csv"):
        if (path / name).exists():
            rows, problems = _from_manifest(path / name, path)
            return rows, problems + _unlisted(path, path / name, rows, problems), "manifest"
    rows, problems = _from_folder(path)
    return rows, problems, "folder"


# -- validation ------------------------------------------------------------------------------
# Decoder label limits of the families that have one: Whisper's decoder has 448 positions
# (config.max_target_positions of every OpenAI/Distil-Whisper checkpoint) per 30 s window.
LABEL_LIMITS = {"Whisper": (448, 30.0)}
TOKENS_PER_WORD = 1.5  # GPT-2/Whisper BPE on English prose is ~1.3; rounded up to warn early


def estimated_tokens(text: str) -> int:
    """Label tokens of a transcript, estimated from its words (no tokenizer at import)."""
    return math.ceil(len(text.split()) * TOKENS_PER_WORD)


def _label_limit_warning(text: str, duration_s: float) -> str | None:
    """A warning when the transcript cannot fit a family's label limit: a clip longer than the
    window is segmented, so each window gets its share of the words."""
    for family, (limit, window_s) in LABEL_LIMITS.items():
        per_window = estimated_tokens(text) / max(1, math.ceil(duration_s / window_s))
        if per_window > limit:
            return (f"warning: transcript of {len(text.split())} words (~{per_window:.0f} tokens per {window_s:.0f} s "
                    f"window, at ~{TOKENS_PER_WORD} tokens/word) is over {family}'s {limit}-token label limit for "
                    f"{duration_s:.1f} s of audio: {family} runs will refuse it; check the transcript belongs to this clip")
    return None


def validate(raw_rows: list[dict]) -> tuple[list[dict], list[dict], list[str]]:
    """Manifest rows for the usable clips, problems for the rest, and conversion notes."""
    rows, problems = [], []
    by_id: dict[str, str] = {}
    by_hash: dict[str, str] = {}
    rates: Counter = Counter()
    multichannel = 0
    notes = [raw["note"] for raw in raw_rows if raw.get("note")]
    for raw in raw_rows:
        audio = Path(raw["audio"])
        text = _clean_text(raw["text"] or "")
        if not text:
            problems.append(_problem(audio, "empty transcript: write the clean text for this clip"))
            continue
        if raw["id"] in by_id:
            problems.append(_problem(audio, f"duplicate id {raw['id']!r} (already used by {by_id[raw['id']]})"))
            continue
        why = _dangling(audio)
        if why:
            problems.append(_problem(audio, why))
            continue
        try:
            info = probe(audio)
            if info.duration <= 0:
                raise AudioError(f"{audio}: audio has no samples (zero length)")
            digest = content_hash(audio)
            if digest in by_hash:
                problems.append(_problem(audio, f"identical audio to {by_hash[digest]}"))
                continue
            if info.duration < MIN_DURATION_S:
                problems.append(_problem(audio, f"too short ({info.duration:.2f} s < {MIN_DURATION_S} s)"))
                continue
            if info.duration > MAX_DURATION_S:
                problems.append(_problem(
                    audio, f"too long ({info.duration / 60:.0f} min > {MAX_DURATION_S // 60} min): split the recording"))
                continue
            samples, sr = read_native(audio)
        except AudioError as e:
            problems.append(_problem(audio, str(e).removeprefix(f"{audio}: ")))
            continue
        bad = ~np.isfinite(samples)
        if bad.any():
            first = int(np.argmax(bad)) / sr
            problems.append(_problem(audio, f"{int(bad.sum())} non-finite sample(s) (NaN/Inf), the first at {first:.2f} s: "
                                            "the file is damaged; re-export it (training on it would give NaN losses)"))
            continue
        if is_silent(samples, sr):
            problems.append(_problem(audio, "silence only (no sound above -50 dBFS)"))
            continue
        by_id[raw["id"]] = str(audio)
        by_hash[digest] = str(audio)
        rates[info.sample_rate] += 1
        multichannel += info.channels > 1
        verbatim = _clean_text(raw["verbatim"]) if raw.get("verbatim") else None
        row = {"id": raw["id"], "audio": str(audio), "duration": round(info.duration, 3),
               "sample_rate": info.sample_rate, "channels": info.channels, "sha256": digest,
               "text": text, "verbatim": verbatim or None, "speaker": raw.get("speaker")}
        if raw.get("verbatim_segments"):
            row["verbatim_segments"] = raw["verbatim_segments"]
        rows.append(row)
        over = _label_limit_warning(text, info.duration)
        if over:
            notes.append(f"{raw['id']}: {over}")
    notes += [f"{n} clip(s) at {r} Hz are resampled to {TARGET_SR} Hz when loaded"
             for r, n in sorted(rates.items()) if r != TARGET_SR]
    if multichannel:
        notes.append(f"{multichannel} clip(s) with several channels are mixed down to mono when loaded")
    return rows, problems, notes


# -- splits and pinned samples ---------------------------------------------------------------
def parse_split(spec: str | None) -> tuple[str, list[float]]:
    """"auto", counts "8/1/1" or fractions "0.8/0.1/0.1" (separators / : ,) -> ("auto"|"count"|
    "fraction", three numbers). Whole numbers adding up to more than 1 are counts (exact: they
    must add up to the number of clips, `split_counts`); otherwise numbers in [0, 1] adding up to
    1 are fractions. Anything else raises DatasetError."""
    spec = spec or DEFAULT_SPLIT
    if str(spec).strip().lower() == "auto":
        return "auto", []
    parts = re.split(r"[/:,]", str(spec))
    try:
        nums = [float(p) for p in parts]
    except ValueError:
        nums = []
    usage = "give train/validation/test as counts that add up to the clips (8/1/1), fractions (0.8/0.1/0.1) or auto"
    if len(nums) != 3 or any(not math.isfinite(n) or n < 0 for n in nums) or sum(nums) <= 0:
        raise DatasetError(f"--split {spec!r}: {usage}")
    if all(n.is_integer() for n in nums) and sum(nums) > 1:
        return "count", nums
    if abs(sum(nums) - 1) > 1e-6:
        raise DatasetError(f"--split {spec!r}: fractions must add up to 1 (they add up to {sum(nums):g}); {usage}")
    return "fraction", nums


def auto_split_counts(n: int) -> tuple[int, int, int]:
    """The default split: 80/10/10 once there are 50 clips; below that the validation split
    keeps up to MIN_VALIDATION clips (30% of the data at most) so the best checkpoint is not
    chosen on one clip, and the test split 10% (at least 1 clip from 3 clips on); training keeps
    at least half of the rest. 4 clips -> 2/1/1, 10 -> 6/3/1, 20 -> 13/5/2, 50 -> 40/5/5,
    100 -> 80/10/10."""
    if n < 2:
        return n, 0, 0
    val = max(round(0.1 * n), min(MIN_VALIDATION, math.ceil(0.3 * n)))
    test = max(round(0.1 * n), 1) if n >= 3 else 0
    val = min(val, (n - test) // 2)  # training keeps at least half of what the test split leaves
    return n - val - test, val, test


def split_counts(n: int, spec: str | None = None) -> tuple[int, int, int]:
    """How many of `n` clips go to train/validation/test. Counts are exact and must add up to n
    (DatasetError otherwise: nothing is silently rescaled); fractions are rounded, keeping one
    validation and one test clip when asked for any (3 clips at 0.8/0.1/0.1 -> 1/1/1); "auto"
    (the default) is `auto_split_counts`."""
    kind, nums = parse_split(spec)
    if kind == "auto":
        return auto_split_counts(n)
    if kind == "count":
        if sum(nums) != n:
            raise DatasetError(f"--split {spec}: the counts add up to {sum(nums):g} but the dataset has {n} usable "
                               f"clips", field="split",
                               hint=f"give counts that add up to {n}, fractions (0.8/0.1/0.1) or auto")
        return int(nums[0]), int(nums[1]), int(nums[2])
    fr = nums
    val = round(n * fr[1])
    test = round(n * fr[2])
    if fr[1] > 0 and val == 0 and n >= 2:
        val = 1
    if fr[2] > 0 and test == 0 and n >= 3:
        test = 1
    if fr[0] > 0:
        while val + test > n - 1 and (val or test):
            if test >= val and test:
                test -= 1
            else:
                val -= 1
    return n - val - test, val, test


def stored_spec(rec: dict | None, n: int) -> str:
    """The split spec a redraw without --split uses: the dataset's own, unless it was counts for
    a different number of clips (then the default)."""
    spec = (rec or {}).get("split_spec") or DEFAULT_SPLIT
    try:
        split_counts(n, spec)
    except DatasetError:
        return DEFAULT_SPLIT
    return spec


def validation_warning(n_val: int, name: str | None = None) -> str | None:
    """A one-line warning when a validation split is too small to choose a checkpoint on
    (fewer than MIN_VALIDATION clips), else None."""
    if n_val >= MIN_VALIDATION:
        return None
    where = f"dataset {name!r}: " if name else ""
    return (f"{where}validation split has {n_val} clip(s) (< {MIN_VALIDATION}): its WER, and the best checkpoint "
            f"chosen on it, are noisy; redraw with `voxtune data split {name or 'NAME'} --split ...` or evaluate "
            f"on another dataset with --eval-dataset NAME[:SPLIT]")


def make_splits(ids: list[str], seed: int = DEFAULT_SEED, spec: str | None = None) -> dict[str, list[str]]:
    """Same ids + seed + spec -> same splits, whatever order the files were found in."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    n_train, n_val, _ = split_counts(len(order), spec)
    return {"train": order[:n_train], "validation": order[n_train:n_train + n_val],
            "test": order[n_train + n_val:]}


def default_pinned(splits: dict[str, list[str]], n: int = DEFAULT_PINNED) -> list[str]:
    for split in ("validation", "test", "train"):
        if splits.get(split):
            return list(splits[split][:n])
    return []


# -- import ----------------------------------------------------------------------------------
def _manifest_text(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)


def _changes(old_rows: list[dict], new_rows: list[dict]) -> dict:
    old = {r["id"]: r for r in old_rows}
    new = {r["id"]: r for r in new_rows}
    changed = [i for i in new if i in old and any(old[i].get(k) != new[i].get(k)
                                                   for k in ("sha256", "text", "verbatim", "audio"))]
    return {"added": sorted(set(new) - set(old)), "removed": sorted(set(old) - set(new)), "changed": sorted(changed)}


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise DatasetError(f"dataset name {name!r}: use letters, digits, '.', '_' or '-' (up to 64 characters)")
    return name


def summary_lines(report: dict) -> list[str]:
    """The import report's summary as `voxtune data import` and the Datasets screen word it:
    clips and minutes, the splits (once stored), what changed on a re-import, then `note:` lines.
    The problems (clips left out) are listed by the caller, where it shows them."""
    s = report.get("splits") or {}
    lines = [f"{report['name']}: {report['clips_usable']} of {report['clips_total']} clips usable, "
             f"{report['hours'] * 60:.1f} min ({report['layout']} layout)"]
    if report.get("stored"):
        lines.append(f"splits: train {s.get('train', 0)} / validation {s.get('validation', 0)} / test "
                     f"{s.get('test', 0)} (seed {report.get('split_seed')}); pinned: "
                     f"{', '.join(report.get('pinned') or []) or '-'}")
    ch = report.get("changes")
    if ch:
        lines.append(f"updated: {len(ch['added'])} added, {len(ch['removed'])} removed, {len(ch['changed'])} "
                     f"changed; splits {ch['splits']}")
    return lines + [f"note: {n}" for n in report.get("notes") or []]


def import_dataset(ws: Workspace, path: str | Path, name: str, seed: int | None = None,
                   split: str | None = None, pinned: list[str] | None = None, replace: bool = False) -> dict:
    """Import (or re-import) PATH as NAME; returns the report the CLI prints.

    On re-import, clips already assigned keep their split unless `seed` or `split` is given;
    new clips join train. Nothing is written when no clip is usable. Re-importing NAME from
    another source than the first import needs `replace` (DatasetError otherwise): runs queued
    on the old data refuse to start once its manifest changed (engine.queue.dataset_drift).
    """
    check_name(name)
    prev = Store(ws).get_dataset(name)
    source = str(Path(path).expanduser().resolve())
    if prev is not None and prev.get("source") and prev["source"] != source and not replace:
        raise DatasetError(f"dataset {name!r} was imported from {prev['source']}, not {source}",
                           hint=f"`voxtune data import {path} --name {name} --replace` replaces it (runs queued on it "
                                "must then be re-queued), or choose another --name")
    raw_rows, problems, layout = discover(path)
    rows, more_problems, notes = validate(raw_rows)
    problems += more_problems
    store = Store(ws)
    old = store.get_dataset(name)
    report = {"name": name, "source": str(Path(path).expanduser().resolve()), "layout": layout,
              "clips_total": len(rows) + len(problems), "clips_usable": len(rows), "hours": round(sum(r["duration"] for r in rows) / 3600, 4),
              "problems": problems, "notes": notes, "stored": False, "changes": None}
    if not rows:
        report["splits"] = {s: 0 for s in SPLITS}
        return report

    ids = [r["id"] for r in rows]
    explicit = seed is not None or split is not None or old is None
    if explicit:
        seed = seed if seed is not None else (old or {}).get("split_seed", DEFAULT_SEED)
        split = split or stored_spec(old, len(ids))
        splits = make_splits(ids, seed, split)
    else:
        seed, split = old.get("split_seed", DEFAULT_SEED), old.get("split_spec", DEFAULT_SPLIT)
        present = set(ids)
        splits = {s: [i for i in old["splits"].get(s, []) if i in present] for s in SPLITS}
        assigned = {i for s in SPLITS for i in splits[s]}
        splits["train"] += [i for i in sorted(ids) if i not in assigned]
    if pinned is not None:
        pins = _checked_pins(pinned, ids)
    elif old is not None and old.get("pinned") and set(old["pinned"]) <= set(splits["validation"] + splits["test"]):
        pins = list(old["pinned"])
    else:
        pins = default_pinned(splits)

    ds_dir = ws.dataset_dir(name)
    manifest = ds_dir / "manifest.jsonl"
    old_rows = _read_manifest(manifest) if old and manifest.exists() else []
    text = _manifest_text(rows)
    atomic_write_text(manifest, text)
    t = time.time()
    record = {
        "name": name, "source": report["source"], "layout": layout, "manifest": str(manifest),
        "manifest_hash": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "clips_total": report["clips_total"], "clips_usable": len(rows), "hours": report["hours"],
        "problems": problems, "notes": notes, "splits": splits, "split_seed": seed, "split_spec": split,
        "pinned": pins, "imported_at": (old or {}).get("imported_at", t), "updated_at": t,
    }
    store.upsert_dataset(record)
    if old is not None:
        report["changes"] = _changes(old_rows, rows)
        report["changes"]["splits"] = "recomputed" if explicit else "kept"
    report.update(stored=True, manifest=str(manifest), splits={s: len(splits[s]) for s in SPLITS},
                  split_seed=seed, pinned=pins, warning=validation_warning(len(splits["validation"]), name))
    return report


def _checked_pins(pins: list[str], ids: Iterable[str]) -> list[str]:
    known = set(ids)
    unknown = [p for p in pins if p not in known]
    if unknown:
        raise DatasetError(f"pinned samples {', '.join(unknown)} are not usable clips of this dataset")
    return list(pins)


# -- reading back ----------------------------------------------------------------------------
def _read_manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def list_all(ws: Workspace) -> list[dict]:
    return sorted(Store(ws).list_datasets(), key=lambda d: d["name"])


def get(ws: Workspace, name: str, store: Store | None = None) -> dict:
    """The dataset record; `demo` is imported on first use. Unknown names list the known ones.

    Pass `store` when already holding its lock: a second Store would wait on its own lock."""
    rec = (store or Store(ws)).get_dataset(name)
    if rec is None and name == DEMO_NAME:
        return ensure_demo(ws)
    if rec is None:
        known = sorted({d["name"] for d in list_all(ws)} | {DEMO_NAME})  # demo is always available
        raise DatasetError(
            f"no dataset {name!r}; known: {', '.join(known)}. "
            f"Import one with `voxtune data import PATH --name {name}`")
    return rec


def load_rows(ws: Workspace, name: str, split: str = "all", store: Store | None = None) -> list[dict]:
    """Manifest rows of a split (train|validation|test|all), in split order."""
    rec = get(ws, name, store)
    manifest = Path(rec["manifest"])
    if not manifest.exists():
        raise DatasetError(f"{manifest}: manifest of dataset {name!r} is missing; re-import it")
    rows = _read_manifest(manifest)
    if split == "all":
        return rows
    if split not in SPLITS:
        raise DatasetError(f"split {split!r}: use one of train, validation, test, all")
    by_id = {r["id"]: r for r in rows}
    return [by_id[i] for i in rec["splits"].get(split, []) if i in by_id]


def set_splits(ws: Workspace, name: str, seed: int | None = None, spec: str | None = None,
               splits: dict[str, list[str]] | None = None) -> dict:
    """The one way splits change: redraw from a seed/spec, or assign ids explicitly."""
    get(ws, name)  # imports `demo` on first use, before taking the lock
    store = Store(ws)
    with store.locked():
        rec = get(ws, name, store)
        ids = [r["id"] for r in load_rows(ws, name, "all", store)]
        if splits is not None:
            given = [i for s in SPLITS for i in splits.get(s, [])]
            if sorted(given) != sorted(ids):
                missing, extra = set(ids) - set(given), set(given) - set(ids)
                raise DatasetError(
                    f"splits for {name!r} must list every usable clip exactly once"
                    f" (missing: {sorted(missing) or '-'}, unknown or repeated: {sorted(extra) or '-'})")
            new = {s: list(splits.get(s, [])) for s in SPLITS}
        else:
            seed = rec.get("split_seed", DEFAULT_SEED) if seed is None else seed
            spec = spec or stored_spec(rec, len(ids))
            new = make_splits(ids, seed, spec)
            rec["split_seed"], rec["split_spec"] = seed, spec
        rec["splits"] = new
        if not set(rec.get("pinned", [])) <= set(new["validation"] + new["test"]):
            rec["pinned"] = default_pinned(new)
        rec["updated_at"] = time.time()
        store.upsert_dataset(rec)
    return rec


def set_pinned(ws: Workspace, name: str, ids: list[str] | None = None, n: int = DEFAULT_PINNED) -> dict:
    """Pin these clips (or the first `n` validation clips) for every run to record."""
    get(ws, name)  # imports `demo` on first use, before taking the lock
    store = Store(ws)
    with store.locked():
        rec = get(ws, name, store)
        all_ids = [r["id"] for r in load_rows(ws, name, "all", store)]
        rec["pinned"] = _checked_pins(ids, all_ids) if ids is not None else default_pinned(rec["splits"], n)
        rec["updated_at"] = time.time()
        store.upsert_dataset(rec)
    return rec


def pinned_rows(ws: Workspace, name: str) -> list[dict]:
    rec = get(ws, name)
    by_id = {r["id"]: r for r in load_rows(ws, name, "all")}
    return [by_id[i] for i in rec.get("pinned", []) if i in by_id]


def ensure_demo(ws: Workspace) -> dict:
    """The shipped demo as dataset `demo`; a no-op when it is already imported and intact."""
    rec = Store(ws).get_dataset(DEMO_NAME)
    manifest = DEMO_DIR / "manifest.jsonl"
    if rec is not None and Path(rec["manifest"]).exists():
        moved = rec.get("source") != str(manifest.resolve()) and Path(rec.get("source", "")).name == "manifest.jsonl" \
            and Path(rec.get("source", "")).parent.name == "demo_clips"
        if not moved:  # the user's own `demo`, or ours where it was: keep it
            return rec
    if not manifest.exists():
        raise DatasetError(f"{manifest}: the demo dataset is missing from this install; run `python data/make_demo.py`")
    import_dataset(ws, manifest, DEMO_NAME, seed=DEFAULT_SEED, split=DEMO_SPLIT, replace=True)
    return Store(ws).get_dataset(DEMO_NAME)  # type: ignore[return-value]


# -- stats -----------------------------------------------------------------------------------
HIST_BINS = [(0, 10, "<10s"), (10, 30, "10-30s"), (30, 60, "30s-1m"), (60, 120, "1-2m"),
             (120, 300, "2-5m"), (300, 600, "5-10m"), (600, float("inf"), ">10m")]
FILLER_WORDS = {"um", "uh", "uhm", "umm", "erm", "er", "ah", "eh", "hmm", "mm", "mhm"}
FILLER_PHRASES = (("you", "know"), ("i", "mean"))
_WORD_RE = re.compile(r"[\w']+")


def words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def filler_share(text: str) -> float:
    """Share of words that are fillers (um, uh, ... and 'you know', 'I mean')."""
    ws_ = words(text)
    if not ws_:
        return 0.0
    n = sum(w in FILLER_WORDS for w in ws_)
    for a, b in FILLER_PHRASES:
        n += 2 * sum(1 for x, y in zip(ws_, ws_[1:]) if x == a and y == b)
    return n / len(ws_)


def _summary(values: list[float]) -> dict:
    if not values:
        return {"min": 0, "median": 0, "max": 0}
    return {"min": round(min(values), 2), "median": round(statistics.median(values), 2), "max": round(max(values), 2)}


def stats(ws: Workspace, name: str) -> dict:
    """Everything `data show` and the Datasets screen display."""
    rec = get(ws, name)
    rows = load_rows(ws, name, "all")
    durations = [r["duration"] for r in rows]
    n_words = [len(words(r["text"])) for r in rows]
    minutes = sum(durations) / 60
    by_id = {r["id"]: r for r in rows}
    hist = [{"bin": label, "count": sum(lo <= d < hi for d in durations)} for lo, hi, label in HIST_BINS]
    both = [r for r in rows if r.get("verbatim")]
    fillers = None
    if both:
        fillers = {"clips": len(both),
                   "verbatim": round(statistics.mean(filler_share(r["verbatim"]) for r in both), 4),
                   "clean": round(statistics.mean(filler_share(r["text"]) for r in both), 4)}
    return {
        "name": name, "source": rec.get("source"), "manifest": rec.get("manifest"),
        "clips_total": rec["clips_total"], "clips_usable": rec["clips_usable"],
        "hours": rec["hours"], "duration_s": _summary(durations), "histogram": hist,
        "words_per_minute": round(sum(n_words) / minutes, 1) if minutes else 0.0,
        "transcript_words": _summary([float(n) for n in n_words]),
        "vocabulary": len({w for r in rows for w in words(r["text"])}),
        "splits": {s: len(rec["splits"].get(s, [])) for s in SPLITS},
        "split_hours": {s: round(sum(by_id[i]["duration"] for i in rec["splits"].get(s, []) if i in by_id) / 3600, 4)
                        for s in SPLITS},
        "split_seed": rec.get("split_seed"), "pinned": rec.get("pinned", []),
        "problems": rec.get("problems", []), "notes": rec.get("notes", []), "fillers": fillers,
        "imported_at": rec.get("imported_at"), "updated_at": rec.get("updated_at"),
    }
