"""The `voxtune` command: no arguments opens the TUI, subcommands form the CLI.

Each command group lives in its own module with a `register(subparsers)` function.
Errors meant for the user raise CliError: the message goes to stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from engine.errors import VoxtuneError
from engine.workspace import CREATE_HINT, Workspace, existing_workspace, open_workspace, resolve_home

__version__ = "0.1.0"


class CliError(VoxtuneError):
    """A user-facing error raised by the CLI layer itself: printed without a traceback."""

    def __init__(self, message: str, code: int = 2, **kw) -> None:
        super().__init__(message, **kw)
        self.code = code


def emit(obj: Any, as_json: bool, text: str | None = None) -> None:
    """--json prints only JSON on stdout; otherwise the human-readable `text`."""
    if as_json:
        sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    elif text is not None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


# The workspace the running command used, stated on stderr when it returns (run_command).
_used: dict = {}


def workspace(args: argparse.Namespace) -> Workspace:
    """The workspace of a command that writes (created when missing)."""
    ws = open_workspace(getattr(args, "home", None))
    _used["home"] = ws.home
    return ws


def read_workspace(args: argparse.Namespace) -> Workspace | None:
    """The workspace of a read-only command, never created. None (with a one-line note on
    stderr) when there is none yet; a --home or VOXTUNE_HOME folder that does not exist is
    an error (exit 2): a typo must not look like an empty workspace."""
    ws = existing_workspace(getattr(args, "home", None))
    if ws is None:
        home = resolve_home(getattr(args, "home", None))
        _used["home"] = None
        print(f"voxtune: no workspace at {home} yet; {CREATE_HINT}", file=sys.stderr)
        return None
    _used["home"] = ws.home
    return ws


def need_workspace(args: argparse.Namespace) -> Workspace:
    """The existing workspace of a command about something in it (a run, the queue): never
    created; VoxtuneError (exit 2) when there is none."""
    ws = existing_workspace(getattr(args, "home", None))
    if ws is None:
        home = resolve_home(getattr(args, "home", None))
        raise CliError(f"no workspace at {home} yet", file=home, hint=CREATE_HINT)
    _used["home"] = ws.home
    return ws


def run_workspace(args: argparse.Namespace, attr: str = "id") -> Workspace:
    """need_workspace for a command about one run: `args.<attr>` may be any unique prefix of a
    run id (as git takes commit prefixes) and is replaced by the full id; an ambiguous prefix
    is one line listing the candidates (exit 2)."""
    from engine.store import Store

    ws = need_workspace(args)
    setattr(args, attr, Store(ws).resolve_run_id(getattr(args, attr)))
    return ws


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line plus a hint (exit 2) like every other bad input,
    instead of the whole usage text. Sub-command parsers are this class too."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        where = self.prog.removeprefix("voxtune").strip()
        print(f"voxtune: {where + ': ' if where else ''}{message}", file=sys.stderr)
        print(f"  hint: `{self.prog} --help` lists the options", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from tui.cli import data, engine_cmd, models, queue, runs, transcribe

    parser = Parser(
        prog="voxtune",
        description="Terminal experiment manager for fine-tuning audio-to-text models. "
        "Run without arguments to open the TUI.",
    )
    parser.add_argument("--version", action="version", version=f"voxtune {__version__}")
    parser.add_argument("--home", metavar="DIR", help="workspace folder (default: $VOXTUNE_HOME, else $XDG_DATA_HOME/voxtune, i.e. "
                        "~/.local/share/voxtune)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (models, data, queue, runs, engine_cmd, transcribe):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from engine.workspace import private_umask

    private_umask()  # what voxtune writes is 0700/0600 (engine.workspace's policy)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        from tui.app import run_app

        return run_app(workspace(args)) or 0
    func = getattr(args, "func", None)
    if func is None:  # a group given without its subcommand
        parser.parse_args([*(argv if argv is not None else sys.argv[1:]), "--help"])
        return 2
    return run_command(func, args)


def run_command(func, args: argparse.Namespace) -> int:
    """The one error handler of the CLI: a VoxtuneError (or an OSError the environment caused:
    full disk, read-only folder, permissions) is one line plus its hint, exit 2; anything else
    is a bug: one line with the path of a log holding the traceback, exit 1."""
    from engine.errors import from_os_error

    _used.clear()
    try:
        code = func(args) or 0
        if _used.get("home") is not None:
            print(f"workspace: {_used['home']}", file=sys.stderr)
        return code
    except VoxtuneError as e:
        return report(e)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `voxtune runs ls | head`
        return 0
    except OSError as e:
        user = from_os_error(e)
        if user is not None:
            return report(user)
        return crash(e)
    except Exception as e:  # noqa: BLE001 - the last resort: never a traceback on the terminal
        return crash(e)


def report(e: VoxtuneError) -> int:
    print(f"voxtune: {e.one_line()}", file=sys.stderr)
    if e.hint:
        print(f"  hint: {e.hint}", file=sys.stderr)
    return getattr(e, "code", None) or e.exit_code


def crash(e: BaseException) -> int:
    """Write the traceback to a log file and print one line pointing at it."""
    import os
    import tempfile
    import time
    import traceback

    text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    path = None
    for folder in (os.path.join(base, "voxtune"), tempfile.gettempdir()):
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            fd, path = tempfile.mkstemp(prefix=time.strftime("crash-%Y%m%d-%H%M%S-"), suffix=".log", dir=folder)
            with os.fdopen(fd, "w") as f:
                f.write(f"voxtune {__version__}: {' '.join(sys.argv)}\n{text}")
            break
        except OSError:
            path = None
    first = (str(e).strip().splitlines() or [""])[0][:200]
    where = f"; the traceback is in {path}" if path else ""
    print(f"voxtune: internal error: {type(e).__name__}: {first}{where} (please report it)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
