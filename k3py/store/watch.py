"""A watch: history from the table, then live events from the broadcaster, with no gap.

The handoff is ordered so nothing can fall between the two sources: subscribe to the
broadcaster first (live batches start buffering), then read history from the database up
to the head revision that read saw, then replay the buffer skipping what history already
returned. Every commit after the history snapshot is published after the subscription
existed (publishing happens on the event loop after commit), so it is in the buffer; every
commit before it is in the history. Revisions are strictly increasing across the seam.
(With PostgreSQL the publisher is the poller, which publishes every row once, in revision
order, after it committed: a row published before the subscription was committed before
it, so the later history snapshot holds it too — the same argument.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from k3py.store.broadcaster import Broadcaster, SubscriptionOverflow, WatchEnded
from k3py.store.types import Event

# read_history(prefix, from_revision, limit) -> (events with revision >= from_revision in
# order from at most `limit` rows, the revision the read covered up to, whether more rows
# follow). When nothing more follows, "covered up to" is the snapshot's head revision. It
# raises CompactedError when from_revision is at or below the compact revision.
HistoryReader = Callable[[str, int, int], Awaitable[tuple[list[Event], int, bool]]]

HISTORY_PAGE_ROWS = 2000


class WatchStream:
    """The async iterator ``Store.watch`` returns.

    It subscribes when created, not on first iteration, so a watch "from now" opened before
    a write sees that write even if the consumer starts reading later. ``aclose`` (or
    cancelling the consumer) unsubscribes, also when iteration never started.
    """

    def __init__(
        self,
        broadcaster: Broadcaster,
        read_history: HistoryReader,
        prefix: str,
        start_revision: int,
        now_revision: int = 0,
    ) -> None:
        """``now_revision``: for a watch "from now" (start 0), the newest revision the caller
        knows is committed; a commit whose publication is still in flight is not "new"."""
        self._broadcaster = broadcaster
        self._sub = broadcaster.subscribe(prefix)
        self._events = self._stream(read_history, prefix, start_revision, now_revision)

    def __aiter__(self) -> WatchStream:
        return self

    async def __anext__(self) -> list[Event]:
        return await anext(self._events)

    async def aclose(self) -> None:
        self._broadcaster.unsubscribe(self._sub)
        self._sub.end()
        if self._events.ag_running:
            # Another task is inside __anext__; end() makes it finish (StopAsyncIteration).
            return
        await self._events.aclose()

    async def _stream(
        self, read_history: HistoryReader, prefix: str, start_revision: int, now_revision: int
    ) -> AsyncIterator[list[Event]]:
        # Highest revision already yielded (or covered by history); "from now" starts above
        # the caller's committed revision.
        seen = now_revision if start_revision == 0 else 0
        next_revision = start_revision
        try:
            while True:
                if next_revision > 0:
                    while True:
                        events, upto, more = await read_history(
                            prefix, next_revision, HISTORY_PAGE_ROWS
                        )
                        if events:
                            yield events
                        if not more:
                            seen = max(seen, upto, next_revision - 1)
                            break
                        next_revision = upto + 1
                try:
                    while True:
                        batch = await self._sub.next_events()
                        if batch[0].kv.mod_revision <= seen:
                            batch = [e for e in batch if e.kv.mod_revision > seen]
                            if not batch:
                                continue
                        seen = batch[-1].kv.mod_revision
                        yield batch
                except SubscriptionOverflow:
                    # The consumer fell far behind: subscribe afresh, then catch up from the
                    # table (same ordering argument as the initial handoff).
                    self._broadcaster.unsubscribe(self._sub)
                    self._sub = self._broadcaster.subscribe(prefix)
                    next_revision = seen + 1
        except WatchEnded:
            return
        finally:
            self._broadcaster.unsubscribe(self._sub)
