"""`voxtune data`: import, list, show, re-split and pin datasets."""

from __future__ import annotations

import argparse
import sys

from tui.cli import emit, read_workspace, workspace


def register(sub) -> None:
    p = sub.add_parser("data", help="import and inspect datasets")
    g = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    imp = g.add_parser("import", help="import a folder or manifest of recordings (your files are never changed)")
    imp.add_argument("path", metavar="PATH", help="folder of clips + same-named .txt, a .jsonl/.csv manifest, "
                     "or an audiofolder with metadata.csv")
    imp.add_argument("--name", required=True, help="dataset name")
    imp.add_argument("--seed", type=int, default=None, help="split seed (default 0; re-import keeps splits unless given)")
    imp.add_argument("--split", default=None, metavar="SPEC",
                     help="train/validation/test as counts that add up to the clips (8/1/1 for 10), fractions "
                          "(0.8/0.1/0.1) or auto (the default: 80/10/10 from 50 clips; below that a validation "
                          "split of up to 5 clips, e.g. 6/3/1 for 10)")
    imp.add_argument("--pin", nargs="+", metavar="ID", help="pinned sample ids (default: first validation clips)")
    imp.add_argument("--replace", action="store_true",
                     help="NAME exists and came from another source: replace it (queued runs on it must be re-queued)")
    imp.add_argument("--json", action="store_true", help="print the import report as JSON")
    imp.set_defaults(func=cmd_import)

    ls = g.add_parser("ls", help="list datasets")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_ls)

    show = g.add_parser("show", help="statistics, splits, problems; with --model, how long clips are handled")
    show.add_argument("name", metavar="NAME")
    show.add_argument("--model", metavar="M", help="catalog model name, hub id or local folder")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)

    sp = g.add_parser("split", help="redraw the train/validation/test splits (the only way they change)")
    sp.add_argument("name", metavar="NAME")
    sp.add_argument("--seed", type=int, default=None)
    sp.add_argument("--split", default=None, metavar="SPEC",
                    help="counts that add up to the clips (8/1/1), fractions (0.8/0.1/0.1) or auto")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_split)

    pin = g.add_parser("pin", help="choose the pinned samples every run records")
    pin.add_argument("name", metavar="NAME")
    pin.add_argument("ids", nargs="*", metavar="ID", help="clip ids (none: the first validation clips)")
    pin.add_argument("--json", action="store_true")
    pin.set_defaults(func=cmd_pin)


def _datasets():
    from engine import datasets

    return datasets


def _call(fn, *args, **kwargs):
    return fn(*args, **kwargs)


def _problems_text(problems: list[dict], limit: int = 20) -> str:
    lines = [f"  {p['file']}: {p['reason']}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more (--json lists all)")
    return "\n".join(lines)


def cmd_import(args: argparse.Namespace) -> int:
    d = _datasets()
    ws = workspace(args)
    report = _call(d.import_dataset, ws, args.path, args.name, seed=args.seed, split=args.split, pinned=args.pin,
                   replace=args.replace)
    out = {k: report.get(k) for k in ("name", "clips_total", "clips_usable", "hours", "problems", "splits",
                                      "notes", "changes", "pinned", "manifest", "layout")}
    text = d.summary_lines(report)
    emit(out, args.json, "\n".join(text))
    if report.get("warning"):
        print(f"voxtune: warning: {report['warning']}", file=sys.stderr)
    if report["problems"]:
        verdict = "nothing imported" if not report["clips_usable"] else "left out"
        print(f"voxtune: warning: {len(report['problems'])} clip(s) {verdict}:\n{_problems_text(report['problems'])}",
              file=sys.stderr)
    if not report["clips_usable"]:
        print(f"voxtune: no usable clip in {args.path}", file=sys.stderr)
        return 2
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    d = _datasets()
    ws = read_workspace(args)  # never created here: `demo` is imported with the workspace's first write
    if ws is None:
        emit([], args.json, f"{d.DEMO_NAME} (bundled; imported when first used)")
        return 0
    _call(d.ensure_demo, ws)
    recs = d.list_all(ws)
    rows = [{"name": r["name"], "clips_usable": r["clips_usable"], "clips_total": r["clips_total"],
             "hours": r["hours"], "splits": {s: len(r["splits"].get(s, [])) for s in d.SPLITS},
             "problems": len(r.get("problems", [])), "source": r.get("source")} for r in recs]
    lines = [f"{'NAME':<20} {'CLIPS':>9} {'MIN':>7}  {'SPLITS':<10} {'PROBLEMS':>8}  SOURCE"]
    for r in rows:
        sp = "/".join(str(r["splits"][s]) for s in d.SPLITS)
        lines.append(f"{r['name']:<20} {r['clips_usable']:>4}/{r['clips_total']:<4} {r['hours'] * 60:>7.1f}  "
                     f"{sp:<10} {r['problems']:>8}  {r['source']}")
    emit(rows, args.json, "\n".join(lines))
    return 0


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def show_text(st: dict, plan: dict | None = None) -> str:
    """Human-readable `data show`; the Datasets screen shows the same facts."""
    s, h = st["splits"], st["split_hours"]
    d = st["duration_s"]
    peak = max([b["count"] for b in st["histogram"]] + [1])
    lines = [
        f"{st['name']}: {st['clips_usable']} of {st['clips_total']} clips usable, {st['hours'] * 60:.1f} min",
        f"source     {st['source']}",
        f"splits     train {s['train']} ({h['train'] * 60:.1f} min) / validation {s['validation']} "
        f"({h['validation'] * 60:.1f} min) / test {s['test']} ({h['test'] * 60:.1f} min), seed {st['split_seed']}",
        f"pinned     {', '.join(st['pinned']) or '-'}",
        f"durations  min {_fmt_s(d['min'])}, median {_fmt_s(d['median'])}, max {_fmt_s(d['max'])}",
    ]
    for b in st["histogram"]:
        if b["count"]:
            lines.append(f"  {b['bin']:>7} {'#' * max(1, round(20 * b['count'] / peak)):<20} {b['count']}")
    t = st["transcript_words"]
    lines.append(f"speech     {st['words_per_minute']:.0f} words/min; transcript words min {t['min']:.0f}, "
                 f"median {t['median']:.0f}, max {t['max']:.0f}; vocabulary {st['vocabulary']}")
    f = st.get("fillers")
    if f:
        lines.append(f"fillers    {f['verbatim']:.1%} of verbatim words, {f['clean']:.1%} of clean words "
                     f"({f['clips']} clips with both)")
    for n in st.get("notes", []):
        lines.append(f"note       {n}")
    probs = st.get("problems", [])
    lines.append(f"problems   {len(probs) or 'none'}")
    if probs:
        lines.append(_problems_text(probs))
    if plan:
        lines.append(f"model      {plan['summary']}")
        for c in plan["handling"]:
            lines.append(f"  {c['id']} ({_fmt_s(c['duration'])}): {c['how']}")
    return "\n".join(lines)


def cmd_show(args: argparse.Namespace) -> int:
    d = _datasets()
    ws = workspace(args)
    st = _call(d.stats, ws, args.name)
    plan = None
    if args.model:
        from engine import catalog, segment

        entry = catalog.get_model(args.model)
        plan = segment.plan(_call(d.load_rows, ws, args.name, "all"), entry)
        st = {**st, "plan": plan}
    emit(st, args.json, show_text(st, plan))
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    d = _datasets()
    ws = workspace(args)
    rec = _call(d.set_splits, ws, args.name, seed=args.seed, spec=args.split)
    counts = {s: len(rec["splits"][s]) for s in d.SPLITS}
    emit({"name": rec["name"], "splits": counts, "split_seed": rec["split_seed"], "pinned": rec["pinned"]}, args.json,
         f"{rec['name']}: train {counts['train']} / validation {counts['validation']} / test {counts['test']} "
         f"(seed {rec['split_seed']}); pinned: {', '.join(rec['pinned']) or '-'}")
    warning = d.validation_warning(counts["validation"], rec["name"])
    if warning:
        print(f"voxtune: warning: {warning}", file=sys.stderr)
    return 0


def cmd_pin(args: argparse.Namespace) -> int:
    d = _datasets()
    ws = workspace(args)
    rec = _call(d.set_pinned, ws, args.name, args.ids or None)
    emit({"name": rec["name"], "pinned": rec["pinned"]}, args.json, f"{rec['name']}: pinned {', '.join(rec['pinned']) or '-'}")
    return 0
