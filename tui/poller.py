"""Read state off the UI thread, apply it on the UI thread.

Every screen that shows engine state polls files (TinyDB, run files, the daemon's pid
file). Reading them can take a while (a big store, a slow disk over NFS), so a Poller
runs `fetch` in a thread and hands the result to `apply` back on the event loop, inside a
Textual worker that dies with its screen. One fetch at a time: a slow fetch delays the
next tick instead of piling threads up, and nothing here ever waits on the engine.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from textual.dom import DOMNode


class Poller:
    """Call `fetch()` in a thread every `interval` seconds and `apply(result)` on the UI.

    `poke()` asks for a fetch now (after a user action); `await refresh()` waits for one
    complete fetch+apply cycle (for actions and tests). Errors from `fetch` go to
    `on_error` so one bad file never kills the loop.
    """

    def __init__(
        self,
        owner: DOMNode,
        fetch: Callable[[], Any],
        apply: Callable[[Any], None],
        interval: float = 1.0,
        on_error: Callable[[BaseException], None] | None = None,
        name: str = "poller",
    ) -> None:
        self.owner = owner
        self.fetch = fetch
        self.apply = apply
        self.interval = interval
        self.on_error = on_error
        self.name = name
        self.cycles = 0
        self.last_error: BaseException | None = None
        self._wake: asyncio.Event | None = None
        self._done: asyncio.Condition | None = None
        self._worker = None

    def start(self) -> "Poller":
        if self._worker is None:
            self._wake = asyncio.Event()
            self._done = asyncio.Condition()
            self._worker = self.owner.run_worker(self._loop(), name=self.name, group=self.name, exit_on_error=False)
        return self

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None

    def _visible(self) -> bool:
        screen = getattr(self.owner, "screen", None)
        try:
            return screen is None or bool(screen.is_current)
        except Exception:  # noqa: BLE001 - not mounted yet / being removed
            return True

    def poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def refresh(self, timeout: float = 10.0) -> None:
        """Fetch now and return once the result has been applied."""
        if self._done is None:
            self.start()
        assert self._done is not None
        target = self.cycles + (2 if self._busy else 1)
        self._forced = True
        self.poke()
        async with self._done:
            await asyncio.wait_for(self._done.wait_for(lambda: self.cycles >= target), timeout)

    _busy = False
    _forced = False  # refresh() asked for a fetch even while the screen is hidden

    async def _loop(self) -> None:
        assert self._wake is not None and self._done is not None
        while True:
            self._wake.clear()
            if not self._visible() and self.cycles and not self._forced:
                # a screen nobody looks at (another mode, a dashboard on top) does not poll;
                # it catches up as soon as it is shown again (poke() from on_screen_resume)
                try:
                    await asyncio.wait_for(self._wake.wait(), self.interval)
                except asyncio.TimeoutError:
                    pass
                continue
            self._busy = True
            try:
                result = await asyncio.to_thread(self.fetch)
            except Exception as e:  # noqa: BLE001 - shown to the user, loop goes on
                self.last_error = e
                if self.on_error is not None:
                    self.on_error(e)
            else:
                self.last_error = None
                try:
                    self.apply(result)
                except Exception as e:  # noqa: BLE001
                    self.last_error = e
                    if self.on_error is not None:
                        self.on_error(e)
            finally:
                self._busy = False
            self.cycles += 1
            self._forced = False
            async with self._done:
                self._done.notify_all()
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except asyncio.TimeoutError:
                pass
