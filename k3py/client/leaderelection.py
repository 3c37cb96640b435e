"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does.

Several servers (HA over PostgreSQL) run the same scheduler and controllers; only the holder
of the Lease acts. A candidate takes the Lease when it is absent, already its own, or expired
(``renewTime + leaseDurationSeconds`` in the past), and then renews it every
``retry_period``; optimistic concurrency (the update carries the resourceVersion it read)
makes two candidates racing for an expired lease end with one winner. A leader that cannot
renew for ``renew_deadline`` stops leading — the ``lead`` coroutine is cancelled — before the
lease can expire and another candidate take over. On a clean shutdown ``release`` empties the
holder so a restarted or standby server takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from k3py.api.errors import ApiError
from k3py.api.meta import now_rfc3339_micro, parse_rfc3339
from k3py.client.interface import LEASES, Client

log = logging.getLogger("k3py.client.leaderelection")


class LeaderElector:
    """Run ``lead()`` only while holding the Lease ``namespace/name``."""

    def __init__(
        self,
        client: Client,
        name: str,
        identity: str,
        *,
        namespace: str = "kube-system",
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
    ) -> None:
        self.client = client
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.is_leader = False

    def _expired(self, spec: dict[str, Any], now: datetime) -> bool:
        renew = spec.get("renewTime") or spec.get("acquireTime")
        if not renew:
            return True
        try:
            renewed = parse_rfc3339(renew)
        except ValueError:
            return True
        duration = int(spec.get("leaseDurationSeconds") or self.lease_duration)
        return renewed + timedelta(seconds=duration) < now

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this candidate holds the lease afterwards."""
        now = datetime.now(UTC)
        stamp = now_rfc3339_micro(now)
        try:
            lease = await self.client.get(LEASES, self.name, self.namespace)
        except ApiError as e:
            if e.code != 404:
                raise
            lease = None
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {
                    "holderIdentity": self.identity,
                    "leaseDurationSeconds": int(self.lease_duration),
                    "acquireTime": stamp,
                    "renewTime": stamp,
                    "leaseTransitions": 0,
                },
            }
            try:
                await self.client.create(LEASES, body, self.namespace)
                return True
            except ApiError as e:
                if e.code == 409:
                    return False
                raise
        spec = dict(lease.get("spec") or {})
        holder = spec.get("holderIdentity")
        if holder and holder != self.identity and not self._expired(spec, now):
            return False
        if holder != self.identity:
            spec["acquireTime"] = stamp
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update({"holderIdentity": self.identity, "renewTime": stamp,
                     "leaseDurationSeconds": int(self.lease_duration)})
        try:
            await self.client.update(LEASES, {**lease, "spec": spec})
            return True
        except ApiError as e:
            if e.code in (404, 409):
                return False
            raise

    async def release(self) -> None:
        """Give the lease up at once (clean shutdown), so a successor need not wait for expiry."""
        try:
            lease = await self.client.get(LEASES, self.name, self.namespace)
        except ApiError:
            return
        spec = dict(lease.get("spec") or {})
        if spec.get("holderIdentity") != self.identity:
            return
        stamp = now_rfc3339_micro()
        spec.update({"holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": stamp, "acquireTime": stamp})
        try:
            await self.client.update(LEASES, {**lease, "spec": spec})
        except ApiError as e:
            log.info("releasing lease %s/%s failed: %s", self.namespace, self.name, e.message)

    async def _attempt(self) -> bool:
        try:
            return await self.try_acquire_or_renew()
        except ApiError as e:
            log.info("lease %s/%s: %s", self.namespace, self.name, e.message)
            return False

    async def run(self, lead: Callable[[], Awaitable[None]]) -> None:
        """Campaign forever; while leading, run ``lead`` (cancelled on losing the lease)."""
        while True:
            while True:
                if await self._attempt():
                    break
                await asyncio.sleep(self.retry_period)  # poll the lease: nothing notifies us
            self.is_leader = True
            log.info("%s became leader of %s/%s", self.identity, self.namespace, self.name)
            leading = asyncio.create_task(lead())
            try:
                await self._renew_until_lost(leading)
            finally:
                self.is_leader = False
                leading.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await leading
            if leading.done() and not leading.cancelled():
                return

    async def _renew_until_lost(self, leading: asyncio.Task[None]) -> None:
        loop = asyncio.get_running_loop()
        last_renew = loop.time()
        while not leading.done():
            await asyncio.wait({leading}, timeout=self.retry_period)
            if leading.done():
                return
            if await self._attempt():
                last_renew = loop.time()
            elif loop.time() - last_renew > self.renew_deadline:
                log.warning("%s lost the lease %s/%s", self.identity, self.namespace, self.name)
                return
