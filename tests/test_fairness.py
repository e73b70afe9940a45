"""Large requests take turns; a short one never waits (router/core/fairness.py)."""

from __future__ import annotations

import asyncio

from switchpoint.router.core.fairness import LargeRequestGate


def test_short_requests_pass_while_a_large_one_is_held_and_large_ones_take_turns() -> None:
    async def main() -> list[str]:
        gate, events = LargeRequestGate(large_bytes=100), []
        first_in, release = asyncio.Event(), asyncio.Event()

        async def large(name: str) -> None:
            async with gate.turn(1_000):
                events.append(f"{name} in")
                first_in.set()
                await release.wait()
                events.append(f"{name} out")

        async def short() -> None:
            async with gate.turn(10):
                events.append("short")

        a = asyncio.create_task(large("a"))
        await first_in.wait()
        b = asyncio.create_task(large("b"))
        await asyncio.sleep(0.01)  # b is queued behind a
        await asyncio.wait_for(short(), 2.0)  # no wait at all (a wait here would time out: a holds the turn)
        release.set()
        await asyncio.gather(a, b)
        return events

    assert asyncio.run(main()) == ["a in", "short", "a out", "b in", "b out"]


def test_the_size_bound_is_inclusive_for_short_requests() -> None:
    gate = LargeRequestGate(large_bytes=100)
    assert gate.turn(100) is gate.turn(0)  # the shared no-op
    assert gate.turn(101) is not gate.turn(101)
