"""What active router replicas tell each other, so that N routers in front of one fleet schedule as one.

A router's scheduling state is its own: the prefill backlog it has sent to each replica, the prompt
prefixes it believes each replica holds, and its in-flight count per replica. With N routers behind one
Service each sees about 1/N of that, and in a burst every router sends to the replica that looked idle at
the last scrape. So each router announces every placement it commits (`PeerCommit`: the replica, the
uncached prefill it added, the prefix blocks it sent), every request that leaves its in-flight ledger
(`PeerRelease`: settled or expired) and, every `LOADS_INTERVAL_S`, its whole in-flight count per replica
(`PeerLoads`, which repairs what a lost message skewed); the others apply them to their own state
(`PeerView`, Scheduler.apply). The counts of a router that stops announcing (killed, partitioned) are
dropped after `LOADS_STALE_S`.

Prefix blocks are Python hashes (router/scheduling/prefix.py): only routers started with the same
PYTHONHASHSEED compute the same blocks. Each message carries a fingerprint of the sender's block hashing;
a receiver whose fingerprint differs applies the backlog and the counts but not the blocks.

Messages are bytes (`encode`/`decode`): a JSON header and the blocks as packed int64, so a commit of a
long prompt (256 blocks) is about 2 KB. The transport is router/peering.py (Redis pub/sub) in a router
process, and virtual-time delivery in `switchpoint bench scheduling --routers N`.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field

import numpy as np

LOADS_INTERVAL_S = 0.1
LOADS_STALE_S = 1.0  # a router not heard from for this long has its in-flight counts dropped
BLOCK_KEY = hash((hash("switchpoint"), "prefix-blocks"))  # differs between processes unless PYTHONHASHSEED agrees
_HEADER = struct.Struct("<I")  # length of the JSON header


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
class PeerLoads:
    """A peer's in-flight count per replica, whole (it replaces what the peer announced before)."""

    origin: str
    loads: dict[str, int]


class BadPeerMessage(ValueError):
    """A message on the peer channel that is not one of ours."""


PeerMessage = PeerCommit | PeerRelease | PeerLoads


def encode(message: PeerMessage) -> bytes:
    if isinstance(message, PeerCommit):
        head = {"k": "commit", "o": message.origin, "r": message.replica, "p": message.prefill,
                "u": message.uncached_tokens, "t": message.rate, "b": message.block_key}
        tail = np.asarray(message.blocks, dtype="<i8").tobytes()
    elif isinstance(message, PeerRelease):
        head, tail = {"k": "release", "o": message.origin, "r": list(message.replicas)}, b""
    else:
        head, tail = {"k": "loads", "o": message.origin, "l": message.loads}, b""
    raw = json.dumps(head, separators=(",", ":")).encode()
    return _HEADER.pack(len(raw)) + raw + tail


def decode(data: bytes) -> PeerMessage:
    try:
        (size,) = _HEADER.unpack_from(data)
        head = json.loads(data[_HEADER.size:_HEADER.size + size])
        tail = data[_HEADER.size + size:]
        if head["k"] == "commit":
            blocks = tuple(np.frombuffer(tail, dtype="<i8").tolist())
            return PeerCommit(str(head["o"]), str(head["r"]), str(head["p"]), int(head["u"]), float(head["t"]),
                              blocks, int(head["b"]))
        if head["k"] == "release":
            return PeerRelease(str(head["o"]), tuple(str(r) for r in head["r"]))
        if head["k"] == "loads":
            return PeerLoads(str(head["o"]), {str(k): int(v) for k, v in dict(head["l"]).items()})
        raise BadPeerMessage(f"unknown peer message kind {head['k']!r}")
    except (struct.error, ValueError, KeyError, TypeError, AttributeError) as exc:
        if isinstance(exc, BadPeerMessage):
            raise
        raise BadPeerMessage(f"not a peer message ({len(data)} bytes): {exc}") from exc


@dataclass
class _Peer:
    loads: dict[str, int] = field(default_factory=dict)
    heard: float = -math.inf


class PeerView:
    """The other routers' in-flight counts per replica, as last announced (plus commits since)."""

    def __init__(self) -> None:
        self._peers: dict[str, _Peer] = {}

    def __bool__(self) -> bool:
        return bool(self._peers)

    def committed(self, origin: str, replicas: tuple[str, ...], now: float) -> None:
        peer = self._peers.setdefault(origin, _Peer())
        for replica in replicas:
            peer.loads[replica] = peer.loads.get(replica, 0) + 1
        peer.heard = now

    def released(self, origin: str, replicas: tuple[str, ...], now: float) -> None:
        peer = self._peers.setdefault(origin, _Peer())
        for replica in replicas:
            left = peer.loads.get(replica, 0) - 1
            if left > 0:
                peer.loads[replica] = left
            else:
                peer.loads.pop(replica, None)
        peer.heard = now

    def replace(self, message: PeerLoads, now: float) -> None:
        peer = self._peers.setdefault(message.origin, _Peer())
        peer.loads, peer.heard = dict(message.loads), now

    def loads(self, now: float) -> dict[str, int]:
        """In flight per replica over the peers heard from in the last LOADS_STALE_S; forgets the others."""
        total: dict[str, int] = {}
        for origin in [o for o, p in self._peers.items() if now - p.heard > LOADS_STALE_S]:
            del self._peers[origin]
        for peer in self._peers.values():
            for replica, count in peer.loads.items():
                total[replica] = total.get(replica, 0) + count
        return total

    def origins(self) -> frozenset[str]:
        return frozenset(self._peers)
