"""The readiness cache: one query per period however many probes arrive, and a bound on each."""

from __future__ import annotations

import asyncio

from pgstack_api.health import ReadinessCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Check:
    def __init__(self, delay: float = 0.01, fail: bool = False) -> None:
        self.calls = 0
        self.delay = delay
        self.fail = fail

    async def __call__(self) -> float:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.fail:
            raise ConnectionRefusedError("down")
        return 1.5


def test_concurrent_probes_share_one_check() -> None:
    check = Check(delay=0.05)
    cache = ReadinessCache(check, ttl=1.0, timeout=1.0, clock=Clock())

    async def burst() -> list[bool]:
        return [p.ok for p in await asyncio.gather(*(cache.get() for _ in range(50)))]

    assert asyncio.run(burst()) == [True] * 50
    assert check.calls == 1


def test_the_answer_is_reused_until_it_expires() -> None:
    check, clock = Check(), Clock()
    cache = ReadinessCache(check, ttl=1.0, timeout=1.0, clock=clock)

    async def probes() -> None:
        await cache.get()
        clock.now += 0.9
        await cache.get()
        assert check.calls == 1
        clock.now += 2.0  # past ttl + timeout: the caller waits for a fresh answer
        await cache.get()
        assert check.calls == 2

    asyncio.run(probes())


def test_a_just_expired_answer_is_served_while_one_refresh_runs() -> None:
    check, clock = Check(delay=0.05), Clock()
    cache = ReadinessCache(check, ttl=1.0, timeout=1.0, clock=clock)

    async def probes() -> None:
        first = await cache.get()
        clock.now += 1.5  # expired, but younger than ttl + timeout
        served = await asyncio.gather(*(cache.get() for _ in range(20)))
        assert all(p is first for p in served)  # nobody waited for the database
        await asyncio.sleep(0.1)  # the one background refresh finishes
        assert check.calls == 2
        assert (await cache.get()) is not first

    asyncio.run(probes())


def test_an_outage_shows_within_ttl_plus_timeout() -> None:
    check, clock = Check(), Clock()
    cache = ReadinessCache(check, ttl=1.0, timeout=1.0, clock=clock)

    async def probes() -> None:
        assert (await cache.get()).ok
        check.fail = True
        clock.now += 1.5
        assert (await cache.get()).ok  # stale, while the refresh finds the outage
        await asyncio.sleep(0.05)
        assert not (await cache.get()).ok

    asyncio.run(probes())


def test_a_slow_database_is_not_ready_within_the_timeout() -> None:
    cache = ReadinessCache(Check(delay=5), ttl=1.0, timeout=0.05, clock=Clock())

    async def probe() -> None:
        result = await asyncio.wait_for(cache.get(), timeout=2)
        assert not result.ok and result.error == "timeout"

    asyncio.run(probe())


def test_a_failing_database_is_not_ready_and_names_the_error() -> None:
    cache = ReadinessCache(Check(fail=True), ttl=1.0, timeout=1.0, clock=Clock())
    result = asyncio.run(cache.get())
    assert not result.ok and result.error == "ConnectionRefusedError"
