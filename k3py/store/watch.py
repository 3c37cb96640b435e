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

from collections.abc import Awaitable, Callable

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
    a write sees that write even if the consumer starts reading later. ``aclose`` (also from
    another task while a read is pending) or cancelling the consumer ends it; an error
    (CompactedError, StoreClosedError) ends it too. A plain state machine rather than an
    async generator: with 1,000 watchers, every layer per wake-up counts.
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
        self._read_history = read_history
        self._prefix = prefix
        self._sub = broadcaster.subscribe(prefix)
        # Next revision to read from the table (0: none, follow the broadcaster).
        self._history_from = start_revision
        # Highest revision already yielded or covered by history.
        self._seen = now_revision if start_revision == 0 else 0
        self._done = False

    def __aiter__(self) -> WatchStream:
        return self

    async def __anext__(self) -> list[Event]:
        if self._done:
            raise StopAsyncIteration
        try:
            while True:
                if self._history_from:
                    events = await self._next_history_page()
                    if events:
                        return events
                    continue
                try:
                    batch = await self._sub.next_events()
                except SubscriptionOverflow:
                    # The consumer fell far behind: subscribe afresh, then catch up from
                    # the table (the same ordering argument as the initial handoff).
                    self._broadcaster.unsubscribe(self._sub)
                    self._sub = self._broadcaster.subscribe(self._prefix)
                    self._history_from = self._seen + 1
                    continue
                if batch[0].kv.mod_revision <= self._seen:
                    batch = [e for e in batch if e.kv.mod_revision > self._seen]
                    if not batch:
                        continue
                self._seen = batch[-1].kv.mod_revision
                return batch
        except WatchEnded:
            self._finish()
            raise StopAsyncIteration from None
        except BaseException:
            self._finish()
            raise

    async def _next_history_page(self) -> list[Event]:
        start = self._history_from
        events, upto, more = await self._read_history(self._prefix, start, HISTORY_PAGE_ROWS)
        if more:
            self._history_from = upto + 1
        else:
            self._seen = max(self._seen, upto, start - 1)
            self._history_from = 0
        return events

    def _finish(self) -> None:
        self._done = True
        self._broadcaster.unsubscribe(self._sub)

    async def aclose(self) -> None:
        self._finish()
        self._sub.end()  # a read pending in another task ends with StopAsyncIteration
