"""The `voxtune` command: no arguments opens the TUI, subcommands form the CLI.

Each command group lives in its own module with a `register(subparsers)` function.
Errors meant for the user raise CliError: the message goes to stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from engine.workspace import open_workspace

__version__ = "0.1.0"


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit code `code`."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def emit(obj: Any, as_json: bool, text: str | None = None) -> None:
    """--json prints only JSON on stdout; otherwise the human-readable `text`."""
    if as_json:
        sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    elif text is not None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def workspace(args: argparse.Namespace):
    return open_workspace(getattr(args, "home", None))


def build_parser() -> argparse.ArgumentParser:
    from tui.cli import data, engine_cmd, models, queue, runs, transcribe

    parser = argparse.ArgumentParser(
        prog="voxtune",
        description="Terminal experiment manager for fine-tuning audio-to-text models. "
        "Run without arguments to open the TUI.",
    )
    parser.add_argument("--version", action="version", version=f"voxtune {__version__}")
    parser.add_argument("--home", metavar="DIR", help="workspace folder (default: $VOXTUNE_HOME or the current directory)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (models, data, queue, runs, engine_cmd, transcribe):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        from tui.app import run_app

        return run_app(workspace(args)) or 0
    func = getattr(args, "func", None)
    if func is None:  # a group given without its subcommand
        parser.parse_args([*(argv if argv is not None else sys.argv[1:]), "--help"])
        return 2
    try:
        return func(args) or 0
    except CliError as e:
        print(f"voxtune: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
