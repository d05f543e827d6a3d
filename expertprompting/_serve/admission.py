"""Admission: at most ``concurrency`` calls run, at most ``max_queue`` wait, the rest are refused.

A refusal is immediate (:class:`QueueFull`, which the app answers with 429 and ``Retry-After``),
so a burst past the queue costs no memory. Waiters are served in arrival order. Event-loop
only: every method runs on the server's one loop, so plain counters need no lock.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["Admission", "QueueFull"]


class QueueFull(Exception):
    """Every slot is taken and the queue is full."""


class Admission:
    """Slots for ``concurrency`` calls and a FIFO queue of ``max_queue`` waiters."""

    def __init__(self, concurrency: int, max_queue: int) -> None:
        self.concurrency = concurrency
        self.max_queue = max_queue
        self.running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def full(self) -> bool:
        """Whether a new call would be refused now."""
        return self.running >= self.concurrency and len(self._waiters) >= self.max_queue

    async def acquire(self) -> None:
        """Take a slot, waiting in line if need be; :class:`QueueFull` at once if the line is
        full. Cancelled while waiting, the place (or a slot just handed over) is given back."""
        if self.running < self.concurrency and not self._waiters:
            self.running += 1
            return
        if len(self._waiters) >= self.max_queue:
            raise QueueFull
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # release() hands its slot over: ``running`` stays as it is
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot arrived as we were cancelled: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a slot back: to the oldest waiter, else to the pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.running -= 1
