"""The scorer is used on its one thread only, in submission order, and reaching it elsewhere fails loudly."""

from __future__ import annotations

import asyncio
import threading

import pytest

from duanka.serving.scoring_thread import ScoringThread, WrongThread


class FakeScorer:
    """Stands in for a Scorer: records which thread used it, and in what order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.closed = False

    def use(self, n: int) -> int:
        self.calls.append((threading.current_thread().name, n))
        return n


def test_every_use_runs_on_the_one_thread_in_submission_order():
    fake = FakeScorer()

    async def scenario() -> list[int]:
        scoring = ScoringThread()
        await scoring.start(lambda: fake)
        answers = await asyncio.gather(*(scoring.run(lambda s, n=n: s.use(n)) for n in range(20)))
        await scoring.stop(lambda s: setattr(s, "closed", True))
        return answers

    assert asyncio.run(scenario()) == list(range(20))
    assert [n for _, n in fake.calls] == list(range(20))
    assert {name for name, _ in fake.calls} == {"duanka-scorer_0"}
    assert fake.closed


def test_reaching_the_scorer_from_another_thread_raises():
    fake = FakeScorer()

    async def scenario() -> None:
        scoring = ScoringThread()
        await scoring.start(lambda: fake)
        try:
            assert await scoring.run(lambda s: s) is fake
            with pytest.raises(WrongThread, match=r"ScoringThread\.run"):
                scoring.scorer  # noqa: B018 -- from the event loop's thread
            with pytest.raises(WrongThread):
                await asyncio.to_thread(lambda: scoring.scorer)  # from a worker thread
        finally:
            await scoring.stop(lambda s: None)

    asyncio.run(scenario())
    assert fake.calls == []


def test_a_scorer_that_failed_to_open_leaves_nothing_to_run():
    async def scenario() -> None:
        scoring = ScoringThread()

        def fails() -> FakeScorer:
            raise RuntimeError("state made with another key")

        with pytest.raises(RuntimeError, match="another key"):
            await scoring.start(fails)
        assert not scoring.started
        with pytest.raises(RuntimeError, match="not open"):
            await scoring.run(lambda s: s)
        await scoring.stop(lambda s: pytest.fail("nothing was open to close"))

    asyncio.run(scenario())
