"""An approximate index of which prompt prefixes each replica has cached.

As the Gateway API Inference Extension's prefix-cache scorer: the request's messages are
serialised and cut into blocks of 64 characters (16 tokens x 4 characters), each block
hashed with the previous block's hash (seeded with the model name), at most 256 blocks;
each replica keeps an LRU of 31,250 block hashes, and the index is updated with the
replica actually chosen. It is a guess: the router never sees the replicas' real caches.

The index is kept both ways: per replica its LRU (for eviction), and per block the set of
replicas holding it, as a bit mask over the replicas' table slots. A lookup then costs one
AND per block of the request, whatever the fleet size: the replicas that hold the first d
blocks are the AND of the first d masks, and the masks only shrink as d grows.

A block is believed held from the moment its request is committed, but the replica computes it
later: once the prefill queued ahead of that request and the request's own are done. A request
sent there before then finds nothing cached (the model server matches its prefix cache when it
admits a request, against blocks already computed) and prefills the prompt again. So `record`
takes the time the blocks will have been computed (`ready_at`, predicted from the router's prefill
backlog), and `matches(blocks, now)` counts only the blocks computed by `now`: what spares a replica
prefill. Without `now`, `matches` counts every block believed held, as GIE's approximate
prefix-cache scorer does (it records at pick time and scores on that alone). llm-d's precise
prefix-cache scorer learns of a block only when the model server reports it stored (vLLM's KV
events), which is where `matches(blocks, now)` stands, predicted rather than reported. A block
still being computed costs one more mask per block of a lookup (one dict lookup); the times to come
are a heap, let go of as they pass.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Collection

import numpy as np

from switchpoint.router.request import RouteInput
from switchpoint.router.scheduling.table import ReplicaTable

BLOCK_CHARS = 64
TOKENS_PER_BLOCK = 16
MAX_BLOCKS = 256
LRU_BLOCKS = 31_250
FEW_HOLDERS = 16  # up to this many replicas holding a block, their counts are set one by one


def request_blocks(req: RouteInput, model: str) -> tuple[int, ...]:
    """The request's block hashes for `model` (memoised on the request)."""
    cache = req.__dict__.setdefault("_prefix_blocks", {})
    if model not in cache:
        cache[model] = _blocks(req, model)
    return cache[model]


def _blocks(req: RouteInput, model: str) -> tuple[int, ...]:
    limit = BLOCK_CHARS * MAX_BLOCKS
    parts, size = [], 0
    for m in req.messages:
        piece = f"<|{m.role}|>"
        piece += m.content[: max(0, limit - size - len(piece))]  # never copy more of a long message than is hashed
        parts.append(piece[: limit - size])
        size += len(parts[-1])
        if size >= limit:
            break
    text = "".join(parts)
    out, prev = [], hash(model)
    for start in range(0, len(text) - BLOCK_CHARS + 1, BLOCK_CHARS):
        prev = hash((prev, text[start:start + BLOCK_CHARS]))
        out.append(prev)
    return tuple(out)


class PrefixIndex:
    def __init__(self, capacity: int = LRU_BLOCKS):
        self.capacity = capacity
        self.table = ReplicaTable()  # slots only: bit `slot` of a mask is that replica
        self._lru: dict[str, OrderedDict[int, None]] = {}
        self._holders: dict[int, int] = {}  # block hash -> mask of the replicas holding it
        # blocks held but not computed yet: per block the mask of those replicas and when each will have computed
        # it; and the times to come as a heap of (time, order, slot, blocks), let go of as they pass
        self._computing: dict[int, int] = {}
        self._ready_at: dict[int, dict[int, float]] = {}
        self._due: list[tuple[float, int, int, tuple[int, ...]]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        """Replicas with blocks in the index."""
        return len(self._lru)

    def matches(self, blocks: tuple[int, ...], now: float | None = None) -> np.ndarray | None:
        """Per table slot, how many leading blocks that replica is believed to hold (with `now`: to hold and to have
        computed by then); None when no replica does for the first block."""
        holders = self._holders
        computing = None
        if now is not None:
            self._computed(now)
            computing = self._computing
        held = holders.get(blocks[0], 0) if blocks else 0
        if computing and held:
            held &= ~computing.get(blocks[0], 0)
        if not held:
            return None
        counts = np.zeros(self.table.capacity, dtype=np.int64)
        run = 1  # how many consecutive depths `held` has been the mask
        holding = holders.get
        for block in blocks[1:]:
            deeper = held & holding(block, 0)
            if computing and deeper:
                deeper &= ~computing.get(block, 0)
            if deeper == held:
                run += 1
                continue
            self._count(counts, held, run)
            held, run = deeper, 1
            if not held:
                break
        if held:
            self._count(counts, held, run)
        return counts

    def match(self, replica: str, blocks: tuple[int, ...]) -> int:
        """How many leading blocks one replica is believed to hold."""
        counts = self.matches(blocks)
        return int(counts[self.table.slot_of[replica]]) if counts is not None and replica in self.table else 0

    def record(self, replica: str, blocks: tuple[int, ...], ready_at: float | None = None,
               now: float | None = None) -> None:
        """The replica holds these blocks, computed from `ready_at` on (None: already computed). A block it already
        holds keeps the earlier of its two times: the first request to compute it finishes first. `now`: the times
        before it are let go of (a router that only hears its peers' commits never asks `matches`)."""
        if now is not None:
            self._computed(now)
        slot = self.table.slot(replica)
        bit = 1 << slot
        lru = self._lru.setdefault(replica, OrderedDict())
        holders, computing, ready = self._holders, self._computing, self._ready_at
        timed = []  # the blocks that take this time
        touch = lru.move_to_end
        for b in blocks:
            if b in lru:
                touch(b)
                if ready_at is not None and (times := ready.get(b)) is not None and \
                        times.get(slot, ready_at) > ready_at:
                    times[slot] = ready_at  # still computing there: now sooner
                    timed.append(b)
            else:
                lru[b] = None
                holders[b] = holders.get(b, 0) | bit
                if ready_at is not None:
                    computing[b] = computing.get(b, 0) | bit
                    ready.setdefault(b, {})[slot] = ready_at
                    timed.append(b)
        if timed:
            heapq.heappush(self._due, (ready_at, next(self._order), slot, tuple(timed)))
        while len(lru) > self.capacity:
            self._release(lru.popitem(last=False)[0], bit)

    def retain(self, replicas: Collection[str]) -> None:
        """Forget the replicas not in `replicas` (their slots are reused: their bits are cleared first)."""
        for replica in [r for r in self._lru if r not in replicas]:
            bit = 1 << self.table.slot_of[replica]
            for b in self._lru.pop(replica):
                self._release(b, bit)
        self.table.retain(replicas)

    def _release(self, block: int, bit: int) -> None:
        left = self._holders[block] & ~bit
        if left:
            self._holders[block] = left
        else:
            del self._holders[block]
        self._done(block, bit.bit_length() - 1)

    def _done(self, block: int, slot: int) -> None:
        """The replica in `slot` has computed `block` (or let go of it)."""
        times = self._ready_at.get(block)
        if times is None or times.pop(slot, None) is None:
            return
        left = self._computing[block] & ~(1 << slot)
        if left:
            self._computing[block] = left
        else:
            del self._computing[block], self._ready_at[block]

    def _computed(self, now: float) -> None:
        """Let go of the blocks computed by `now` (a time superseded by an earlier one has already passed)."""
        due = self._due
        while due and due[0][0] <= now:
            at, _, slot, blocks = heapq.heappop(due)
            for block in blocks:
                if self._ready_at.get(block, {}).get(slot) == at:
                    self._done(block, slot)

    def _count(self, counts: np.ndarray, mask: int, run: int) -> None:
        """Add `run` to the count of every slot in `mask`: bit by bit for a few replicas, else unpacked at once."""
        if mask.bit_count() <= FEW_HOLDERS:
            while mask:
                low = mask & -mask
                counts[low.bit_length() - 1] += run
                mask ^= low
            return
        raw = np.frombuffer(mask.to_bytes((self.table.capacity + 7) // 8, "little"), dtype=np.uint8)
        counts[np.unpackbits(raw, bitorder="little")[: self.table.capacity].view(bool)] += run
