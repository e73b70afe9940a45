"""What active router replicas tell each other, so that N routers in front of one fleet schedule as one.

A router's scheduling state is its own: the prefill backlog it has sent to each replica, the prompt
prefixes it believes each replica holds, and its in-flight count per replica. With N routers behind one
Service each sees about 1/N of that, and in a burst every router sends to the replica that looked idle at
the last scrape. So each router announces every placement it commits (`PeerCommit`: the replica, the
uncached prefill it added, the prefix blocks it sent), every request that leaves its in-flight ledger
(`PeerRelease`: settled or expired) and, every `LOADS_INTERVAL_S`, its whole in-flight count per replica
(`PeerLoads`, which repairs what a lost message skewed), and every request it settled that another
router had routed (`PeerSettled`: that router then lets go of its in-flight entry at once instead of at
its TTL); the others apply them to their own state (`PeerView`, Scheduler.apply). The counts of a router
that stops announcing (killed, partitioned) are dropped after `LOADS_STALE_S`.

Prefix blocks are Python hashes (router/scheduling/prefix.py): only routers started with the same
PYTHONHASHSEED compute the same blocks. `switchpoint router` starts itself again under the seed
`hash_seed` derives from the replicas' shared settle key (so the seed is as secret as the key: Python
randomises hashes so that clients cannot choose prompts whose block hashes collide in the router's
dicts). Each message carries a fingerprint of the sender's block hashing; a receiver whose fingerprint
differs applies the backlog and the counts but not the blocks, and says so once.

Announcements travel in batches, one per sender and moment (`pack` / `unpack`): the sender's name once,
then each message in a compact binary form (a commit of a long prompt, 256 blocks, is about 2 KB). A
receiver skips its own batches, echoed by the channel, without decoding them. The transport is
router/peering.py (Redis pub/sub) in a router process, and virtual-time delivery in
`switchpoint bench scheduling --routers N`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import struct
from dataclasses import dataclass, field

import numpy as np

LOADS_INTERVAL_S = 0.1
LOADS_STALE_S = 1.0  # a router not heard from for this long has its in-flight counts dropped
BLOCK_KEY = hash((hash("switchpoint"), "prefix-blocks"))  # differs between processes unless PYTHONHASHSEED agrees
MAGIC = b"SPP1"
_ORIGIN = struct.Struct("<H")
_SIZE = struct.Struct("<I")
_COMMIT = struct.Struct("<cqdqHH")  # kind, uncached tokens, rate, block key, len(replica), len(prefill)
_COUNT = struct.Struct("<cH")  # kind, how many strings follow (each as _ORIGIN length + bytes)


def hash_seed(settle_key: bytes) -> int:
    """The PYTHONHASHSEED (0 .. 2**32 - 1) of every router replica that holds this settle key."""
    return int.from_bytes(hmac.new(settle_key, b"switchpoint prefix blocks", hashlib.sha256).digest()[:4], "little")


@dataclass(frozen=True)
class PeerCommit:
    """A placement a peer committed: its replicas now owe this prefill and hold these blocks."""

    origin: str
    replica: str
    prefill: str  # the prefill replica of a disaggregated request, "" otherwise
    uncached_tokens: int
    rate: float  # the pool's prefill tokens per second (how fast that backlog drains)
    blocks: tuple[int, ...]
    block_key: int = BLOCK_KEY


@dataclass(frozen=True)
class PeerRelease:
    """A request a peer placed left its in-flight ledger (settled or expired)."""

    origin: str
    replicas: tuple[str, ...]


@dataclass(frozen=True)
class PeerSettled:
    """A Report reached this peer for a request another router routed: the routing router may let it go."""

    origin: str
    request_id: str


@dataclass(frozen=True)
class PeerLoads:
    """A peer's in-flight count per replica, whole (it replaces what the peer announced before)."""

    origin: str
    loads: dict[str, int]


PeerMessage = PeerCommit | PeerRelease | PeerSettled | PeerLoads


class BadPeerMessage(ValueError):
    """Bytes on the peer channel that are not one of our batches."""


def encode(message: PeerMessage) -> bytes:
    """One message, without its origin (the batch carries it)."""
    if isinstance(message, PeerCommit):
        replica, prefill = message.replica.encode(), message.prefill.encode()
        return (_COMMIT.pack(b"C", message.uncached_tokens, message.rate, message.block_key, len(replica),
                             len(prefill)) + replica + prefill + np.asarray(message.blocks, dtype="<i8").tobytes())
    if isinstance(message, PeerRelease):
        return _COUNT.pack(b"R", len(message.replicas)) + _strings(message.replicas)
    if isinstance(message, PeerSettled):
        return b"S" + message.request_id.encode()
    return b"L" + json.dumps(message.loads, separators=(",", ":")).encode()


def pack(origin: str, messages: list[bytes]) -> bytes:
    name = origin.encode()
    return MAGIC + _ORIGIN.pack(len(name)) + name + b"".join(_SIZE.pack(len(m)) + m for m in messages)


def origin_of(batch: bytes) -> str:
    """Who sent a batch, read without decoding the rest."""
    try:
        if not batch.startswith(MAGIC):
            raise BadPeerMessage(f"not a peer batch ({len(batch)} bytes): it does not start with {MAGIC!r}")
        (size,) = _ORIGIN.unpack_from(batch, len(MAGIC))
        at = len(MAGIC) + _ORIGIN.size
        if at + size > len(batch):
            raise BadPeerMessage(f"not a peer batch: its sender's name runs past its end ({len(batch)} bytes)")
        return batch[at:at + size].decode()
    except (struct.error, UnicodeDecodeError) as exc:
        raise BadPeerMessage(f"not a peer batch ({len(batch)} bytes): {exc}") from exc


def unpack(batch: bytes) -> list[PeerMessage]:
    origin = origin_of(batch)
    at = len(MAGIC) + _ORIGIN.size + len(origin.encode())
    out: list[PeerMessage] = []
    try:
        while at < len(batch):
            (size,) = _SIZE.unpack_from(batch, at)
            at += _SIZE.size
            if at + size > len(batch):
                raise BadPeerMessage(f"not a peer batch: a message of {size} bytes runs past its end")
            out.append(_decode(origin, batch[at:at + size]))
            at += size
    except (struct.error, ValueError, TypeError, AttributeError) as exc:
        if isinstance(exc, BadPeerMessage):
            raise
        raise BadPeerMessage(f"not a peer batch ({len(batch)} bytes): {exc}") from exc
    return out


def _decode(origin: str, data: bytes) -> PeerMessage:
    kind = data[:1]
    if kind == b"C":
        _, uncached, rate, block_key, n_replica, n_prefill = _COMMIT.unpack_from(data)
        at = _COMMIT.size
        replica = data[at:at + n_replica].decode()
        prefill = data[at + n_replica:at + n_replica + n_prefill].decode()
        tail = data[at + n_replica + n_prefill:]
        if len(tail) % 8:
            raise BadPeerMessage(f"not a peer commit: {len(tail)} bytes of blocks is not a whole number of blocks")
        return PeerCommit(origin, replica, prefill, uncached, rate, tuple(np.frombuffer(tail, dtype="<i8").tolist()),
                          block_key)
    if kind == b"R":
        _, count = _COUNT.unpack_from(data)
        replicas, at = [], _COUNT.size
        for _ in range(count):
            (size,) = _ORIGIN.unpack_from(data, at)
            replicas.append(data[at + _ORIGIN.size:at + _ORIGIN.size + size].decode())
            at += _ORIGIN.size + size
        return PeerRelease(origin, tuple(replicas))
    if kind == b"S":
        return PeerSettled(origin, data[1:].decode())
    if kind == b"L":
        loads = json.loads(data[1:])
        if not isinstance(loads, dict):
            raise BadPeerMessage("not peer loads: not a map of replica to count")
        return PeerLoads(origin, {str(k): int(v) for k, v in loads.items()})
    raise BadPeerMessage(f"unknown peer message kind {kind!r}")


def _strings(values: tuple[str, ...]) -> bytes:
    return b"".join(_ORIGIN.pack(len(raw)) + raw for raw in (v.encode() for v in values))


@dataclass
class _Peer:
    loads: dict[str, int] = field(default_factory=dict)
    heard: float = -math.inf


class PeerView:
    """The other routers' in-flight counts per replica, as last announced (plus commits and releases since),
    summed over the peers as they change (a Route reads the sum; it does not add it up)."""

    def __init__(self) -> None:
        self._peers: dict[str, _Peer] = {}
        self._total: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self._peers)

    def committed(self, origin: str, replicas: tuple[str, ...], now: float) -> None:
        peer = self._heard(origin, now)
        for replica in replicas:
            self._add(peer, replica, 1)

    def released(self, origin: str, replicas: tuple[str, ...], now: float) -> None:
        peer = self._heard(origin, now)
        for replica in replicas:
            if peer.loads.get(replica, 0) > 0:
                self._add(peer, replica, -1)

    def replace(self, message: PeerLoads, now: float) -> None:
        peer = self._heard(message.origin, now)
        self._forget(peer)
        for replica, count in message.loads.items():
            if count > 0:
                self._add(peer, replica, count)

    def loads(self, now: float) -> dict[str, int]:
        """In flight per replica over the peers heard from in the last LOADS_STALE_S (forgets the others). The
        caller must not change the dict."""
        for origin in [o for o, p in self._peers.items() if now - p.heard > LOADS_STALE_S]:
            self._forget(self._peers.pop(origin))
        return self._total

    def origins(self) -> frozenset[str]:
        return frozenset(self._peers)

    def _heard(self, origin: str, now: float) -> _Peer:
        peer = self._peers.get(origin)
        if peer is None:
            peer = self._peers[origin] = _Peer()
        peer.heard = now
        return peer

    def _add(self, peer: _Peer, replica: str, delta: int) -> None:
        peer.loads[replica] = peer.loads.get(replica, 0) + delta
        left = self._total.get(replica, 0) + delta
        if left > 0:
            self._total[replica] = left
        else:
            self._total.pop(replica, None)
        if not peer.loads[replica]:
            del peer.loads[replica]

    def _forget(self, peer: _Peer) -> None:
        for replica, count in list(peer.loads.items()):
            self._add(peer, replica, -count)
