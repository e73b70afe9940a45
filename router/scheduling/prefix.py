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
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass

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


@dataclass(slots=True)
class _Computing:
    """The replicas that hold one block but have not computed it yet, and when each will have."""

    mask: int  # their bits
    earliest: float  # no time in `at` is earlier (a bound: checking the times is needed only from then on)
    latest: float  # none is later
    at: dict[int, float]  # slot -> when that replica will have computed the block

    def set(self, slot: int, at: float) -> None:
        self.at[slot] = at
        self.mask |= 1 << slot
        self.earliest, self.latest = min(self.earliest, at), max(self.latest, at)


class PrefixIndex:
    def __init__(self, capacity: int = LRU_BLOCKS):
        self.capacity = capacity
        self.table = ReplicaTable()  # slots only: bit `slot` of a mask is that replica
        self._lru: dict[str, OrderedDict[int, None]] = {}
        self._holders: dict[int, int] = {}  # block hash -> mask of the replicas holding it
        self._computing: dict[int, _Computing] = {}  # block hash -> the replicas that have not computed it yet

    def __len__(self) -> int:
        """Replicas with blocks in the index."""
        return len(self._lru)

    def matches(self, blocks: tuple[int, ...], now: float | None = None) -> np.ndarray | None:
        """Per table slot, how many leading blocks that replica is believed to hold (with `now`: to hold and to have
        computed by then); None when no replica does for the first block."""
        holders = self._holders
        computing = self._computing if now is not None else None
        held = holders.get(blocks[0], 0) if blocks else 0
        if computing and held:
            held &= ~self._still(blocks[0], now)
        if not held:
            return None
        counts = np.zeros(self.table.capacity, dtype=np.int64)
        run = 1  # how many consecutive depths `held` has been the mask
        for block in blocks[1:]:
            deeper = held & holders.get(block, 0)
            if computing and deeper:
                pending = computing.get(block)
                if pending is not None:
                    deeper &= ~(pending.mask if pending.earliest > now else self._still(block, now))
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

    def record(self, replica: str, blocks: tuple[int, ...], ready_at: float | None = None) -> None:
        """The replica holds these blocks, computed from `ready_at` on (None: already computed). A block it already
        holds keeps the earlier of its two times: the first request to compute it finishes first."""
        slot = self.table.slot(replica)
        bit = 1 << slot
        lru = self._lru.setdefault(replica, OrderedDict())
        holders, computing = self._holders, self._computing
        for b in blocks:
            if b in lru:
                lru.move_to_end(b)
                if ready_at is not None and b in computing and computing[b].at.get(slot, ready_at) > ready_at:
                    computing[b].set(slot, ready_at)
            else:
                lru[b] = None
                holders[b] = holders.get(b, 0) | bit
                if ready_at is None:
                    continue
                if b in computing:
                    computing[b].set(slot, ready_at)
                else:
                    computing[b] = _Computing(bit, ready_at, ready_at, {slot: ready_at})
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
        pending = self._computing.get(block)
        if pending is not None and pending.mask & bit:
            del pending.at[bit.bit_length() - 1]
            pending.mask &= ~bit
            if not pending.mask:
                del self._computing[block]

    def _still(self, block: int, now: float) -> int:
        """The mask of the replicas still computing `block` at `now` (forgetting those done)."""
        pending = self._computing.get(block)
        if pending is None:
            return 0
        if pending.earliest > now:
            return pending.mask
        if pending.latest > now:
            pending.at = {slot: at for slot, at in pending.at.items() if at > now}
            if pending.at:
                pending.mask = sum(1 << slot for slot in pending.at)
                pending.earliest, pending.latest = min(pending.at.values()), max(pending.at.values())
                return pending.mask
        del self._computing[block]  # every replica holding it has computed it
        return 0

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
