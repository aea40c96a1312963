"""Runs, the home screen: what is running, what waits and why, what finished and how well.

State comes from a background Poller (store + run files + daemon status) so a big
workspace or a slow disk never freezes the keys. Every action goes through engine.queue,
the same validated operations the CLI uses; the daemon picks the changes up.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Header, Static

from engine.runfiles import RunFiles
from engine.enums import FINAL
from engine.store import Store
from engine.workspace import Workspace
from tui.poller import Poller
from tui.widgets.engine_bar import EngineBar, EngineState
from tui.widgets.run_table import RunRow, RunTable, build_rows, queue_order
from engine.enums import RunStatus
from tui.widgets.footer import KeysFooter


@dataclass
class RunsView:
    rows: list[RunRow]
    engine: EngineState
    runs: dict[str, dict] = field(default_factory=dict)
    hidden: int = 0  # ended runs not listed here (History lists them)


def engine_state(ws: Workspace, store: Store, counts: dict) -> EngineState:
    """Is the engine up, is the queue paused: from the pid file and the store, never waiting
    on the engine itself."""
    paused = bool(store.get_meta("queue_paused", False))
    try:
        from engine import daemon

        pid = daemon.engine_pid(ws)
    except Exception as e:  # noqa: BLE001 - a broken pid file must not break the screen
        return EngineState(queue_paused=paused, counts=counts, error=f"cannot read engine status: {e}")
    return EngineState(running=pid is not None, pid=pid, queue_paused=paused, counts=counts,
                       paused_reason=store.get_meta("queue_paused_reason"))


class ProgressCache:
    """read_progress for live runs every poll; for finished ones once (they no longer change)."""

    def __init__(self) -> None:
        self._final: dict[tuple, dict] = {}
        self.rows: dict[tuple, object] = {}  # build_rows' cache of rows that did not change
        self.base: tuple | None = None  # (store stamp, counts, runs shown, ended runs not shown)

    def get(self, ws: Workspace, run: dict) -> dict:
        try:
            from engine.progress import read_progress
        except ImportError:
            return {}
        status = run.get("status")
        if status == RunStatus.QUEUED and not run.get("resume"):
            return {}
        key = (run.get("id"), status, run.get("finished_at"))
        if status in FINAL and key in self._final:
            return self._final[key]
        try:
            prog = read_progress(RunFiles(ws.run_dir(run["id"]))) or {}
        except Exception:  # noqa: BLE001 - one unreadable run folder must not hide the others
            prog = {}
        if status in FINAL:
            self._final[key] = prog
        return prog


# Ended runs the home screen lists (newest first); History (4) lists every run. At this size
# the table fills in well under a second even with 10,000 runs in the store.
RECENT_ENDED = 300


def load_view(ws: Workspace, cache: ProgressCache, recent: int = RECENT_ENDED) -> RunsView:
    """Everything the Runs screen shows, read off the UI thread. The store part is reused
    while the store file is unchanged; live runs' progress is read every poll."""
    store = Store(ws)
    stamp = store.stamp()
    if cache.base is None or cache.base[0] != stamp:
        runs = store.list_runs()
        counts: dict[str, int] = {}
        for r in runs:
            counts[r.get("status", "?")] = counts.get(r.get("status", "?"), 0) + 1
        ordered = queue_order(runs)
        live = [r for r in ordered if r.get("status") not in FINAL]
        ended = [r for r in ordered if r.get("status") in FINAL]
        cache.base = (stamp, counts, live + ended[:recent], max(0, len(ended) - recent))
    _, counts, shown, hidden = cache.base
    engine = engine_state(ws, store, counts)
    progress = {r["id"]: cache.get(ws, r) for r in shown}
    rows = build_rows(shown, progress, queue_paused=engine.queue_paused, cache=cache.rows)
    return RunsView(rows=rows, engine=engine, runs={r["id"]: r for r in shown}, hidden=hidden)


def confirm_delete(screen: Screen, run: dict, do: Callable[..., None]) -> None:
    """Ask, then remove `run` through engine.queue.remove (what `voxtune runs rm` does); `do`
    runs it in a thread and reports. A running run is refused before asking."""
    from engine import queue
    from tui.screens.confirm import ConfirmScreen

    run_id = run["id"]
    if run.get("status") == RunStatus.RUNNING:
        screen.notify(f"{run_id} is running; cancel it first (c).", severity="warning")
        return
    trash = screen.app.workspace.engine_dir / "trash"  # type: ignore[attr-defined]
    question = f"Delete run {run_id} ({run.get('status')})?\nIts folder moves to {trash}."
    screen.app.push_screen(ConfirmScreen(question, yes="delete"),
                           lambda yes: do(f"Deleted {run_id}; its folder is in {trash}.", queue.remove,
                                          screen.app.workspace, run_id) if yes else None)  # type: ignore[attr-defined]


class RunsScreen(Screen):
    """Home: the queue and every past run. Enter opens a run's live dashboard."""

    BINDINGS = [
        Binding("enter", "open_run", "Open", show=False),
        Binding("c", "cancel_run", "Cancel"),
        Binding("d", "delete_run", "Delete", show=False),
        Binding("r", "retry_run", "Retry", show=False),
        Binding("e", "resume_run", "Resume", show=False),
        Binding("y", "clone_run", "Clone", show=False),
        Binding("K", "move_up", "Move up", show=False),
        Binding("J", "move_down", "Move down", show=False),
        Binding("x", "export_run", "Export", show=False),
        Binding("t", "transcribe", "Transcribe", show=False),
        Binding("p", "pause_queue", "Pause queue", tooltip="Running runs go on, nothing new starts"),
        Binding("p", "resume_queue", "Resume queue", tooltip="Start queued runs again"),
        Binding("s", "start_engine", "Start engine"),
        Binding("f5", "refresh", "Refresh", show=False),
    ]

    POLL_SECONDS = 1.0

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.view: RunsView | None = None
        self._cache = ProgressCache()
        self._starting = False
        self.poller: Poller | None = None

    @property
    def workspace(self) -> Workspace:
        return self.app.workspace  # type: ignore[attr-defined]

    def compose(self) -> ComposeResult:
        yield Header()
        yield EngineBar("engine: checking…", id="engine-bar")
        yield RunTable(id="runs-table")
        yield Static("Loading runs…", id="run-detail")
        yield KeysFooter()

    def on_screen_resume(self) -> None:
        """Hidden screens do not poll (tui.poller); catch up at once when shown again."""
        if self.poller is not None:
            self.poller.poke()

    def on_mount(self) -> None:
        self.query_one(RunTable).focus()
        self.poller = Poller(
            self,
            fetch=lambda: load_view(self.workspace, self._cache),
            apply=self._apply,
            interval=self.POLL_SECONDS,
            on_error=self._poll_failed,
            name="runs-poll",
        ).start()

    # -- showing state ----------------------------------------------------------------
    def _apply(self, view: RunsView) -> None:
        if self._starting and view.engine.running:
            self._starting = False
        if self._starting:
            view.engine = EngineState(**{**view.engine.__dict__, "starting": True})
        first = self.view is None
        if first or self.view.engine.queue_paused != view.engine.queue_paused:
            self.call_later(self.refresh_bindings)  # Pause queue <-> Resume queue
        self.view = view
        if first:
            self._say_what_needs_doing(view.engine)
        self.query_one(EngineBar).show(view.engine)
        table = self.query_one(RunTable)
        table.show(view.rows)
        self._move_to_wanted()
        self._show_detail()

    def _say_what_needs_doing(self, engine: EngineState) -> None:
        """Once, on opening: an engine that is down while runs wait, a queue paused by recovery."""
        waiting = engine.counts.get("queued", 0) + engine.counts.get("running", 0)
        if not engine.running and not engine.error and waiting:
            self.notify(f"The engine is not running and {waiting} run(s) wait. Press s to start it.",
                        title="Engine stopped", severity="warning", timeout=10)
        if engine.queue_paused and engine.paused_reason:
            self.notify(f"{engine.paused_reason}. Press p to resume the queue.", title="Queue paused",
                        severity="warning", timeout=10)

    def _poll_failed(self, error: BaseException) -> None:
        self.query_one("#run-detail", Static).update(f"Cannot read the workspace: {error}")

    def _show_detail(self) -> None:
        table = self.query_one(RunTable)
        row = table.row_for(table.current_key)
        if row is not None:
            text = row.detail
        elif self.view is not None and not self.view.rows:
            text = "No runs yet. Press n to queue one (2 lists models, 3 datasets)."
        elif self.view is not None and self.view.hidden:
            text = f"{self.view.hidden} older ended runs are not listed here; 4 (History) lists every run."
        else:
            text = ""
        self.query_one("#run-detail", Static).update(text)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open_run()

    def select_run(self, run_id: str) -> None:
        """Put the cursor on `run_id` now, or as soon as a poll lists it (a run just queued)."""
        self._want = run_id
        self._move_to_wanted()
        if self.poller is not None:
            self.poller.poke()

    def _move_to_wanted(self) -> None:
        want = getattr(self, "_want", None)
        table = self.query_one(RunTable)
        if want is not None and want in table._order:
            table.move_cursor(row=table._order.index(want), animate=False)
            self._want = None
            self._show_detail()

    # -- helpers ----------------------------------------------------------------------
    def selected_run(self) -> dict | None:
        key = self.query_one(RunTable).current_key
        if key is None or self.view is None:
            return None
        return self.view.runs.get(key)

    def _need_run(self) -> dict | None:
        run = self.selected_run()
        if run is None:
            self.notify("No run selected.", severity="warning")
        return run

    def _do(self, done: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run an engine.queue operation in a thread; report the outcome; refresh."""

        async def work() -> None:
            try:
                result = await asyncio.to_thread(fn, *args, **kwargs)
            except Exception as e:  # noqa: BLE001 - the engine's message is meant for the user
                self.app.show_error(e, title="Not done")  # type: ignore[attr-defined]
                return
            self.notify(done.format(result=result))
            if self.poller is not None:
                self.poller.poke()

        self.run_worker(work, group="runs-action", exit_on_error=False)

    @staticmethod
    def _queue():
        from engine import queue

        return queue

    # -- actions ----------------------------------------------------------------------
    def action_refresh(self) -> None:
        if self.poller is not None:
            self.poller.poke()

    def action_open_run(self) -> None:
        run = self._need_run()
        if run is None:
            return
        try:
            from tui.screens.dashboard import DashboardScreen
        except ImportError:
            self.notify("The run dashboard is not installed.", severity="error")
            return
        self.app.push_screen(DashboardScreen(run["id"]))

    def action_cancel_run(self) -> None:
        """A queued run is cancelled at once; a running one only after a yes (its training stops
        at a checkpoint and cannot be taken back)."""
        run = self._need_run()
        if run is None:
            return
        run_id = run["id"]

        def cancel() -> None:
            self._do(f"Cancel requested for {run_id}.", self._queue().cancel, self.workspace, run_id)

        if run.get("status") == RunStatus.RUNNING:
            from tui.screens.confirm import ConfirmScreen

            self.app.push_screen(ConfirmScreen(f"Stop the running run {run_id}?\nIt checkpoints and stops; "
                                               "e resumes it later.", yes="stop it"),
                                 lambda yes: cancel() if yes else None)
        else:
            cancel()

    def action_delete_run(self) -> None:
        """`voxtune runs rm`: after a yes, the run leaves the store and its folder moves to the trash."""
        run = self._need_run()
        if run is not None:
            confirm_delete(self, run, self._do)

    def action_retry_run(self) -> None:
        run = self._need_run()
        if run is not None:
            self._do("Queued {result} (retry of %s)." % run["id"], self._queue().retry, self.workspace, run["id"])

    def action_resume_run(self) -> None:
        run = self._need_run()
        if run is not None:
            self._do(f"{run['id']} will resume from its last checkpoint.", self._queue().resume, self.workspace, run["id"])

    def action_clone_run(self) -> None:
        run = self._need_run()
        if run is not None:
            self.app.open_new_run(clone_of=run["id"])  # type: ignore[attr-defined]

    def action_move_up(self) -> None:
        self._move(+1)

    def action_move_down(self) -> None:
        self._move(-1)

    def _move(self, delta: int) -> None:
        """engine.queue.move counts towards the front: +1 is up the list."""
        run = self._need_run()
        if run is None:
            return
        if run.get("status") != RunStatus.QUEUED:
            self.notify("Only queued runs can be moved.", severity="warning")
            return
        self._do(f"Moved {run['id']} {'up' if delta > 0 else 'down'}.", self._queue().move, self.workspace, run["id"], delta)

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """p pauses a running queue and resumes a paused one: one of the two is offered."""
        if action in ("pause_queue", "resume_queue"):
            paused = self.view.engine.queue_paused if self.view else False
            return (action == "resume_queue") == paused
        return True

    def action_pause_queue(self) -> None:
        self.action_toggle_queue()

    def action_resume_queue(self) -> None:
        self.action_toggle_queue()

    def action_export_run(self) -> None:
        run = self._need_run()
        if run is not None:
            from tui.screens.tools import export_run

            export_run(self, run["id"])

    def action_transcribe(self) -> None:
        run = self._need_run()
        if run is not None:
            from tui.screens.tools import transcribe_with_run

            transcribe_with_run(self, run["id"])

    def action_toggle_queue(self) -> None:
        paused = self.view.engine.queue_paused if self.view else False
        if paused:
            self._do("Queue resumed.", self._queue().unpause, self.workspace)
        else:
            self._do("Queue paused: running runs go on, nothing new starts.", self._queue().pause, self.workspace)

    def action_start_engine(self) -> None:
        if self.view is not None and self.view.engine.running:
            self.notify("The engine is already running.")
            return
        from engine import daemon

        self._starting = True
        if self.view is not None:
            self._apply(self.view)

        def start():
            daemon.ensure_running(self.workspace)

        async def work() -> None:
            try:
                await asyncio.to_thread(start)
            except Exception as e:  # noqa: BLE001
                self._starting = False
                self.notify(f"The engine did not start: {e}", severity="error")
            else:
                self.notify("Engine started.")
            if self.poller is not None:
                self.poller.poke()

        self.run_worker(work, group="engine-start", exit_on_error=False)
