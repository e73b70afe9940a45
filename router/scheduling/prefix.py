"""An approximate index of which prompt prefixes each replica has cached.

As the Gateway API Inference Extension's prefix-cache scorer: the request's messages are
serialised and cut into blocks of 64 characters (16 tokens x 4 characters), each block
hashed with the previous block's hash (seeded with the model name), at most 256 blocks;
each replica keeps an LRU of 31,250 block hashes, and the index is updated with the
replica actually chosen. It is a guess: the router never sees the replicas' real caches.
"""

from __future__ import annotations

from collections import OrderedDict

from switchpoint.router.request import RouteInput

BLOCK_CHARS = 64
TOKENS_PER_BLOCK = 16
MAX_BLOCKS = 256
LRU_BLOCKS = 31_250


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
        piece = f"<|{m.role}|>{m.content}"
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
        self._replicas: dict[str, OrderedDict[int, None]] = {}

    def match(self, replica: str, blocks: tuple[int, ...]) -> int:
        """How many leading blocks the replica is believed to hold."""
        lru = self._replicas.get(replica)
        if not lru:
            return 0
        n = 0
        for b in blocks:
            if b not in lru:
                break
            n += 1
        return n

    def record(self, replica: str, blocks: tuple[int, ...]) -> None:
        lru = self._replicas.setdefault(replica, OrderedDict())
        for b in blocks:
            lru[b] = None
            lru.move_to_end(b)
        while len(lru) > self.capacity:
            lru.popitem(last=False)
