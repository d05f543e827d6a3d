"""One :class:`~expertprompting._io.async_driver.AsyncDriver` per event loop, for one prompter.

An async HTTP client belongs to the event loop it first ran in, so a prompter used from several
loops (``asyncio.run()`` per call, a loop per thread, a notebook's loop) needs a driver, and a
client, per loop; and each must be closed when its loop ends, or a web app that calls
``asyncio.run()`` per request piles up sockets and dead loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine

from .async_driver import AsyncDriver

__all__ = ["Close", "LoopDrivers"]

Close = Callable[[], Awaitable[None]]
"""How to close a driver's transport (its HTTP client), or None when it is not ours."""

_Entries = dict[asyncio.AbstractEventLoop, tuple[AsyncDriver, AsyncGenerator[None, None]]]


class LoopDrivers:
    """One :class:`AsyncDriver` per running event loop, for one prompter; thread-safe.

    Each loop's driver and client are made at its first call. The client is closed when its
    loop shuts down: ``asyncio.run()``, ``asyncio.Runner`` and pytest-asyncio close a loop's
    async generators then, and a started async generator is the only shutdown hook asyncio
    offers. A loop closed without that shutdown is let go at the next lookup (its sockets can
    then only be freed, with a ``ResourceWarning``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the loops of other threads look up at the same time
        self._entries: _Entries = {}
        # a prompter dropped while it holds closed loops lets them go too
        weakref.finalize(self, _let_go, self._entries)

    def get(self, make: Callable[[], tuple[AsyncDriver, Close | None]]) -> AsyncDriver:
        """The running loop's driver, made (with how to close it) by ``make`` the first time."""
        loop = asyncio.get_running_loop()
        with self._lock:
            gone = {lp: self._entries.pop(lp) for lp in list(self._entries) if lp.is_closed()}
            entry = self._entries.get(loop)
            if entry is None:
                driver, close = make()
                watcher = _watch(self._entries, self._lock, loop, close)
                # run it to its yield: that registers it with the loop, which holds it weakly
                # and closes it at shutdown (the entry holds it strongly until then)
                with contextlib.suppress(StopIteration):
                    watcher.asend(None).send(None)
                entry = self._entries[loop] = (driver, watcher)
        _let_go(gone)
        return entry[0]


async def _watch(
    entries: _Entries,
    lock: threading.Lock,
    loop: asyncio.AbstractEventLoop,
    close: Close | None,
) -> AsyncGenerator[None, None]:
    """Waits at its ``yield`` for the loop's shutdown; then drops the entry, closes the client.

    It must not hold the :class:`LoopDrivers` (whose finalizer would then never run).
    """
    try:
        yield
    finally:
        with lock:
            entries.pop(loop, None)
        if close is not None:
            if loop.is_closed():
                _close_by_hand(close)
            else:
                await close()


def _close_by_hand(close: Close) -> None:
    """Close a client whose loop is closed, as far as that goes without a loop.

    Its sockets can only be freed, but it is marked closed first, so the SDK does not try to
    close it later on whatever loop is then running (which fails, and logs an error).
    """
    step = close()
    if not isinstance(step, Coroutine):
        return
    try:
        step.send(None)
    except Exception:  # done (StopIteration), or the closed loop refused a step
        return
    step.close()  # it waits for a loop: abandon the rest


def _let_go(entries: _Entries) -> None:
    """End the watchers of closed loops here (no loop can run them).

    Those of live loops are left to their loop, which closes a dropped one's client.
    """
    for loop, (_, watcher) in list(entries.items()):
        if loop.is_closed():
            with contextlib.suppress(StopIteration, RuntimeError):
                watcher.aclose().send(None)
