"""`voxtune transcribe`: a run's model (or any model) applied to recordings of any length."""

from __future__ import annotations

import argparse
import sys

from tui.cli import CliError, emit, run_workspace


def cmd_transcribe(args: argparse.Namespace) -> int:
    from engine import transcribe as tr  # torch is imported only inside its functions

    if bool(args.run) == bool(args.model):
        raise CliError("give exactly one of --run ID or --model M")
    target = tr.target_for_run(run_workspace(args, 'run'), args.run) if args.run else tr.target_for_model(args.model)
    results = tr.transcribe_detailed(args.audio, target, device=args.device, max_new_tokens=args.max_new_tokens,
                                     progress=lambda line: print(f"transcribe: {line}", file=sys.stderr, flush=True))
    if args.json:
        emit(results, True)
        return 0
    for r in results:
        if len(results) > 1:
            sys.stdout.write(f"== {r['audio']}\n")
        sys.stdout.write(r["text"] + "\n")
    return 0


def register(sub) -> None:
    p = sub.add_parser("transcribe", help="transcribe and clean up recordings with a run's model or any model",
                       description="Print the cleaned transcript of each AUDIO file (any length: long "
                                   "recordings are cut at pauses and joined).")
    p.add_argument("audio", nargs="+", metavar="AUDIO", help="audio files (wav, flac, mp3, ogg; m4a/opus with ffmpeg)")
    p.add_argument("--run", metavar="ID", help="use this run's best checkpoint (or last)")
    p.add_argument("--model", metavar="M", help="catalog name, hub id, local checkpoint or exported folder")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: the GPU when there is one")
    p.add_argument("--max-new-tokens", type=int, metavar="N", help="longest output per 30 s piece")
    p.add_argument("--json", action="store_true", help='print [{"audio", "text", "duration_s", "pieces"}] as JSON')
    p.set_defaults(func=cmd_transcribe)
