"""One line that says whether the engine runs, whether the queue is paused, and what to press.

The app never blocks on the engine: this bar shows the last thing a background poll saw,
and when the daemon is down it says so and names the key that starts it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.text import Text
from textual.widgets import Static


@dataclass(frozen=True)
class EngineState:
    """What a poll learned; `error` is set when the engine's state could not be read."""

    running: bool = False
    pid: int | None = None
    queue_paused: bool = False
    counts: dict = field(default_factory=dict)
    starting: bool = False
    error: str | None = None
    paused_reason: str | None = None


def describe(state: EngineState) -> Text:
    counts = state.counts
    n_run, n_queued = counts.get("running", 0), counts.get("queued", 0)
    text = Text()
    if state.error:
        text.append("engine ? ", style="bold yellow")
        text.append(state.error)
        return text
    if state.starting:
        text.append("engine ◌ starting…", style="bold yellow")
    elif state.running:
        text.append("engine ● running", style="bold green")
        if state.pid:
            text.append(f" (pid {state.pid})")
    else:
        text.append("engine ○ stopped", style="bold red")
        text.append(" · press s to start it" if n_queued or n_run else " · s starts it")
    text.append(f" · {n_run} running, {n_queued} queued")
    if state.queue_paused:
        text.append(" · queue PAUSED (p resumes)", style="bold yellow")
    return text


class EngineBar(Static):
    def show(self, state: EngineState) -> None:
        self.state = state
        self.set_class(not state.running and not state.starting, "-down")
        self.update(describe(state))
