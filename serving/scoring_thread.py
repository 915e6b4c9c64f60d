"""The one thread that owns the service's SQLite: the scorer, its online state and its decision record.

The online state must see applications one at a time, in arrival order, as the point-in-time
replay assumes, and an SQLite connection must not be used from two threads at once. Both hold
when every use of the :class:`duanka.serving.scorer.Scorer` runs on one dedicated thread. That is not
left to remembering: the scorer is reachable only through :meth:`ScoringThread.run`, which hands
it to a function running on that thread, and :attr:`ScoringThread.scorer` raises
:class:`WrongThread` on any other thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from duanka.serving.scorer import Scorer

T = TypeVar("T")


class WrongThread(RuntimeError):
    """The scorer was reached from a thread other than the scoring thread."""


class ScoringThread:
    """A single-thread executor that holds the scorer and runs every use of it, in submission order.

    The service opens the scorer with :meth:`start`, uses it with
    ``await scoring.run(lambda scorer: scorer.score(...))`` and closes it with :meth:`stop`.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="duanka-scorer")
        self._ident: int | None = None
        self._scorer: Scorer | None = None

    @property
    def started(self) -> bool:
        """Whether the scorer is open (:meth:`start` returned and :meth:`stop` was not called)."""
        return self._scorer is not None

    @property
    def scorer(self) -> Scorer:
        """The scorer, on the scoring thread only.

        Raises
        ------
        WrongThread
            Called from any other thread: the caller's SQLite use would race the scoring thread's.
        RuntimeError
            The scorer is not open.
        """
        if threading.get_ident() != self._ident:
            raise WrongThread(
                f"the scorer was reached from thread {threading.current_thread().name!r}; "
                "it is used only through ScoringThread.run"
            )
        if self._scorer is None:
            raise RuntimeError("the scorer is not open")
        return self._scorer

    async def start(self, open_scorer: Callable[[], Scorer]) -> None:
        """Open the scorer on the scoring thread (``open_scorer`` makes its SQLite connections there)."""

        def on_thread() -> None:
            self._ident = threading.get_ident()
            self._scorer = open_scorer()

        await self._submit(on_thread)

    async def run(self, fn: Callable[[Scorer], T]) -> T:
        """``fn(scorer)`` on the scoring thread, after everything submitted before it."""
        return await self._submit(lambda: fn(self.scorer))

    async def stop(self, close_scorer: Callable[[Scorer], None]) -> None:
        """``close_scorer(scorer)`` on the scoring thread after everything submitted, then end the thread."""
        if self._scorer is not None:

            def on_thread() -> None:
                close_scorer(self.scorer)
                self._scorer = None

            await self._submit(on_thread)
        self._executor.shutdown(wait=True)

    async def _submit(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
