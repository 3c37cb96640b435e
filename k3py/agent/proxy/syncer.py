"""Makes the kernel's table equal to the rendered groups, changing only what changed.

The desired state is the union of ``ruleset.Group``s — the node's own and one per Service port
— kept here incrementally: ``sync(changes)`` takes the groups that changed (None: gone) and
applies the difference in three steps, each one transaction:

1. ``nft -f``: the chains (with their rules) and sets that do not exist yet. A chain's name
   is a digest of its rules (``ruleset``), so an existing chain never needs rewriting.
2. netlink (``netlink.NftNetlink.commit``): set elements. The whole contents of a group's own
   sets (a Service port's endpoints map) are flushed and rewritten when they change; entries
   of the node's shared maps (``service-ips`` and the like) are deleted and added one by one.
   This is the only step an endpoint change needs, and it reads nothing back from the kernel.
3. ``nft -f``: chains and sets nothing refers to any more, once step 2 pointed the maps away.

Several Services may claim one entry of a shared map (two LoadBalancers on the same node
address and port, clashing externalIPs): the oldest Service (``ServicePort.rank``) gets it, the
next one when it goes away.

After a restart (or a failed step) what the kernel holds is read back — only the names of the
chains and sets, through netlink — and every set's elements are rewritten in one transaction:
the table is reconciled, never flushed, so established connections, the ones being made and
the session-affinity sets live through it. ``SyncStats`` says what a sync did.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field

from k3py.agent.proxy import nft, ruleset
from k3py.agent.proxy.netlink import Element, ElementOp, NftNetlink
from k3py.agent.proxy.ruleset import Chain, Group, NftSet

log = logging.getLogger("k3py.agent.proxy")

GroupKey = Hashable
Rank = tuple[int, tuple[str, str]]


@dataclass
class SyncStats:
    chains_added: int = 0
    chains_removed: int = 0
    sets_added: int = 0
    sets_removed: int = 0
    element_messages: int = 0
    full: bool = False  # the kernel's state was read back and every set rewritten
    seconds: float = 0.0
    structural_seconds: float = 0.0
    elements_seconds: float = 0.0


def _send_order(element: Element) -> tuple[bytes, int]:
    # Interval sets: at a boundary the end of one range goes before the start of the next,
    # as nft sends them.
    return (element.key, 0 if element.interval_end else 1)


@dataclass
class _Claims:
    """Who claims which entries of the shared sets, and what the kernel holds for them."""

    by_key: dict[str, dict[bytes, dict[GroupKey, tuple[Rank, Element]]]] = field(default_factory=dict)
    dirty: dict[str, set[bytes]] = field(default_factory=dict)

    def set(self, set_name: str, key: bytes, owner: GroupKey, rank: Rank, element: Element | None) -> None:
        owners = self.by_key.setdefault(set_name, {}).setdefault(key, {})
        if element is None:
            owners.pop(owner, None)
            if not owners:
                del self.by_key[set_name][key]
        else:
            owners[owner] = (rank, element)
        self.dirty.setdefault(set_name, set()).add(key)

    def winner(self, set_name: str, key: bytes) -> Element | None:
        owners = self.by_key.get(set_name, {}).get(key)
        if not owners:
            return None
        return min(owners.values(), key=lambda entry: entry[0])[1]


class RulesetSyncer:
    """See the module docstring. Not thread-safe: one sync at a time (the proxy runs them on a
    worker thread, one after the other)."""

    def __init__(
        self,
        table: str,
        comment: str = "",
        run_nft: Callable[[str], None] = nft.apply,
        netlink: Callable[[], NftNetlink] = NftNetlink,
    ) -> None:
        self.table = table
        self.comment = comment or "k3py service proxy"
        self._run_nft = run_nft
        self._netlink_factory = netlink
        self._netlink: NftNetlink | None = None
        # Threads made by the syncing thread share its network namespace.
        self._structure_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="proxy-nft")
        # desired
        self.groups: dict[GroupKey, Group] = {}
        self._ranks: dict[GroupKey, Rank] = {}
        self._chains: dict[str, Chain] = {}
        self._sets: dict[str, NftSet] = {}
        self._owned: dict[str, frozenset[Element]] = {}
        self._claims = _Claims()
        # applied (None: unknown — read back from the kernel at the next sync)
        self._applied_chains: set[str] | None = None
        self._applied_sets: set[str] | None = None
        self._applied_owned: dict[str, frozenset[Element]] = {}
        self._applied_shared: dict[str, dict[bytes, Element]] = {}
        self._dirty_owned: set[str] = set()
        self._dirty_structure: set[str] = set()  # chain or set names added or dropped

    # -- desired state ----------------------------------------------------------------------

    def _replace(self, key: GroupKey, new: Group | None, rank: Rank) -> None:
        old = self.groups.pop(key, None)
        if old is not None:
            for name in old.chains:
                self._chains.pop(name, None)
                self._dirty_structure.add(name)
            for name in old.sets:
                self._sets.pop(name, None)
                self._dirty_structure.add(name)
            for name in old.owned:
                self._owned.pop(name, None)
                self._dirty_owned.add(name)
            for set_name, entries in old.shared.items():
                for element_key in entries:
                    self._claims.set(set_name, element_key, key, self._ranks.get(key, rank), None)
            self._ranks.pop(key, None)
        if new is None:
            return
        self.groups[key] = new
        self._ranks[key] = rank
        self._chains.update(new.chains)
        self._sets.update(new.sets)
        self._dirty_structure.update(new.chains)
        self._dirty_structure.update(new.sets)
        for name, elements in new.owned.items():
            self._owned[name] = elements
            self._dirty_owned.add(name)
        for set_name, entries in new.shared.items():
            for element_key, element in entries.items():
                self._claims.set(set_name, element_key, key, rank, element)

    def reset(self) -> None:
        """Forget what the kernel holds: the next sync reads it back and rewrites every set."""
        self._applied_chains = None
        self._applied_sets = None
        self._applied_owned.clear()
        self._applied_shared.clear()
        if self._netlink is not None:
            self._netlink.close()
            self._netlink = None

    def close(self) -> None:
        self.reset()
        self._structure_pool.shutdown(wait=False)

    # -- applying ---------------------------------------------------------------------------

    def _socket(self) -> NftNetlink:
        if self._netlink is None:
            self._netlink = self._netlink_factory()
        return self._netlink

    def sync(self, changes: Mapping[GroupKey, tuple[Group | None, Rank]]) -> SyncStats:
        """Takes ``{key: (group or None, rank)}`` and brings the kernel in line with everything
        desired so far. On failure the state is kept and the next call (even with no changes)
        reads the kernel back and retries from there."""
        for key, (group, rank) in changes.items():
            self._replace(key, group, rank)
        started = time.monotonic()
        stats = SyncStats()
        try:
            self._apply(stats)
        except (nft.NftError, OSError):
            self.reset()
            raise
        stats.seconds = time.monotonic() - started
        return stats

    def _apply(self, stats: SyncStats) -> None:
        sock = self._socket()
        prefix = ""
        if self._applied_chains is None or self._applied_sets is None:
            stats.full = True
            if not sock.table_exists(self.table):
                prefix = nft.render_table(self.table, self.comment)
                self._applied_chains, self._applied_sets = set(), set()
            else:
                self._applied_chains = sock.chain_names(self.table)
                self._applied_sets = sock.set_names(self.table)
            names_to_check = set(self._chains) | set(self._sets) | self._applied_chains | self._applied_sets
            owned_to_check = set(self._owned)
            shared_full = True
        else:
            names_to_check = self._dirty_structure
            owned_to_check = self._dirty_owned
            shared_full = False
        applied_chains, applied_sets = self._applied_chains, self._applied_sets

        new_chains = [self._chains[n] for n in sorted(names_to_check) if n in self._chains and n not in applied_chains]
        new_sets = [self._sets[n] for n in sorted(names_to_check) if n in self._sets and n not in applied_sets]
        stale_chains = {n for n in names_to_check if n in applied_chains and n not in self._chains}
        stale_sets = {n for n in names_to_check if n in applied_sets and n not in self._sets}

        # 1. structure — nft runs in a helper thread while step 2's batch is encoded here (its
        # elements do not depend on what nft does, only on it succeeding first).
        began = time.monotonic()
        script = prefix + ruleset.render_script(self.table, new_chains, new_sets)
        running = self._structure_pool.submit(self._run_nft, script) if script else None
        for nft_set in new_sets:
            if not nft_set.dynamic:
                self._applied_owned[nft_set.name] = frozenset()
        ops = self._element_ops(owned_to_check, shared_full, fresh={s.name for s in new_sets})
        batch = sock.encode(self.table, ops)
        if running is not None:
            try:
                running.result()
            except BaseException:
                for nft_set in new_sets:
                    self._applied_owned.pop(nft_set.name, None)
                raise
        applied_chains.update(c.name for c in new_chains)
        applied_sets.update(s.name for s in new_sets)
        stats.chains_added, stats.sets_added = len(new_chains), len(new_sets)
        stats.structural_seconds = time.monotonic() - began

        # 2. elements
        began = time.monotonic()
        sock.send_batch(batch)
        stats.element_messages = len(ops)
        self._dirty_owned.clear()
        stats.elements_seconds = time.monotonic() - began

        # 3. what nothing refers to any more
        if stale_chains or stale_sets:
            began = time.monotonic()
            try:
                self._run_nft(ruleset.render_removal(self.table, stale_chains, stale_sets))
            except nft.NftError as exc:
                # A kernel before 6.2 frees a chain some time after the last map entry pointing
                # to it went: keep the names dirty and try again at the next sync.
                log.warning("service proxy: removing %d unused chains/sets failed, will retry: %s",
                            len(stale_chains) + len(stale_sets), exc)
                self._dirty_structure = stale_chains | stale_sets
                stats.structural_seconds += time.monotonic() - began
                return
            applied_chains.difference_update(stale_chains)
            applied_sets.difference_update(stale_sets)
            for name in stale_sets:
                self._applied_owned.pop(name, None)
                self._applied_shared.pop(name, None)
            stats.chains_removed, stats.sets_removed = len(stale_chains), len(stale_sets)
            stats.structural_seconds += time.monotonic() - began
        self._dirty_structure = set()

    def _element_ops(self, owned_to_check: set[str], shared_full: bool, fresh: set[str]) -> list[ElementOp]:
        ops: list[ElementOp] = []
        for name in sorted(owned_to_check):
            desired = self._owned.get(name)
            if desired is None or self._sets.get(name) is None or self._sets[name].dynamic:
                continue  # the set itself goes (step 3), or the kernel owns its elements
            if self._applied_owned.get(name) == desired:
                continue
            if name not in fresh:  # a set created just now is empty: nothing to flush
                ops.append(ElementOp(name, True, flush=True))
            if desired:
                ops.append(ElementOp(name, True, tuple(sorted(desired, key=_send_order))))
            self._applied_owned[name] = desired
        shared_names = [s.name for s in ruleset.SHARED_SETS]
        if shared_full:
            for name in shared_names:
                if name not in self._sets:
                    continue
                winners = {key: self._claims.winner(name, key) for key in self._claims.by_key.get(name, {})}
                elements = tuple(sorted((e for e in winners.values() if e is not None), key=_send_order))
                ops.append(ElementOp(name, True, flush=True))
                if elements:
                    ops.append(ElementOp(name, True, elements))
                self._applied_shared[name] = {e.key: e for e in elements}
            self._claims.dirty.clear()
            return ops
        removals: list[ElementOp] = []
        additions: list[ElementOp] = []
        for name, keys in sorted(self._claims.dirty.items()):
            applied = self._applied_shared.setdefault(name, {})
            gone: list[Element] = []
            added: list[Element] = []
            for key in sorted(keys):
                want = self._claims.winner(name, key)
                have = applied.get(key)
                if want == have:
                    continue
                if have is not None:
                    gone.append(have)
                    del applied[key]
                if want is not None:
                    added.append(want)
                    applied[key] = want
            if gone:
                removals.append(ElementOp(name, False, tuple(gone)))
            if added:
                additions.append(ElementOp(name, True, tuple(added)))
        self._claims.dirty.clear()
        return removals + ops + additions
