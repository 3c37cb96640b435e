"""Leader election on a Lease: one leader at a time, takeover after expiry or release."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from k3py.api.meta import now_rfc3339_micro
from k3py.client.interface import LEASES, NAMESPACES, Client
from k3py.client.leaderelection import LeaderElector
from k3py.client.memory import MemoryTransport


async def setup() -> Client:
    client = Client(MemoryTransport())
    await client.create(NAMESPACES, {"metadata": {"name": "kube-system"}})
    return client


async def test_only_one_candidate_leads() -> None:
    client = await setup()
    a, b = LeaderElector(client, "lock", "a"), LeaderElector(client, "lock", "b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    assert await a.try_acquire_or_renew()  # renewal
    lease = await client.get(LEASES, "lock", "kube-system")
    assert lease["spec"]["holderIdentity"] == "a" and lease["spec"]["leaseTransitions"] == 0


async def test_expired_lease_is_taken_over() -> None:
    client = await setup()
    a, b = LeaderElector(client, "lock", "a", lease_duration=15), LeaderElector(client, "lock", "b")
    assert await a.try_acquire_or_renew()
    lease = await client.get(LEASES, "lock", "kube-system")
    lease["spec"]["renewTime"] = now_rfc3339_micro(datetime.now(UTC) - timedelta(seconds=30))
    await client.update(LEASES, lease)
    assert await b.try_acquire_or_renew()
    lease = await client.get(LEASES, "lock", "kube-system")
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1


async def test_release_hands_over_immediately_and_run_leads() -> None:
    client = await setup()
    a, b = LeaderElector(client, "lock", "a", retry_period=0.01), LeaderElector(client, "lock", "b", retry_period=0.01)
    led = asyncio.Event()

    async def lead() -> None:
        led.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(a.run(lead))
    await asyncio.wait_for(led.wait(), 2)
    assert a.is_leader
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await a.release()
    assert await b.try_acquire_or_renew()
