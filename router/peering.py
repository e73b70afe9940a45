"""The peer channel: active router replicas tell each other what they place, over Redis pub/sub.

Every router on one Redis publishes its scheduler's announcements (router/scheduling/peers.py: commits,
releases, and its in-flight counts every LOADS_INTERVAL_S) on one channel and applies what the others
publish. Pub/sub fits what the messages are: a hint that is stale in a second, to whoever listens now;
a lost message only makes scheduling as good as one router's own view, and the next PeerLoads repairs
the counts. Nothing on the Route path waits for Redis: `publish` queues the bytes and a background task
sends what has queued in the last FLUSH_S as one pub/sub message (a Python Redis client spends ~100 us of
CPU on each message it receives, so per-announcement messages would cost every router that much per peer
Route; batched, the cost is shared by all the announcements of a batch, and peers hear of a placement at
most FLUSH_S later, which `switchpoint bench scheduling --routers 3` (peers hear 5 ms late) shows is harmless).
Batches are published over the pipelined connection of router/resp.py (about half redis-py's CPU per call);
the subscription is redis-py's.

A dead Redis costs no request: publishing drops what is queued (counted in `dropped`), the reader
reconnects with a backoff and subscribes again, and each router schedules on its own state meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from switchpoint.router import resp
from switchpoint.router.scheduling.peers import (
    LOADS_INTERVAL_S,
    BadPeerMessage,
    PeerLoads,
    PeerMessage,
    encode,
    origin_of,
    pack,
    unpack,
)
from switchpoint.router.scheduling.scheduler import Scheduler

log = logging.getLogger("switchpoint.peering")

CHANNEL = "switchpoint:peers"
MAX_QUEUED = 10_000  # announcements waiting to be sent; beyond it new ones are dropped
FLUSH_S = 0.005  # how long announcements gather before they are sent together (peers hear them this late)
MAX_BATCH_BYTES = 256 * 1024
CLOSE_S = 2.0
RECONNECT_S = (0.1, 2.0)  # first and longest wait before subscribing again


def router_name() -> str:
    """This router process, as its peers know it: unique even for two processes on one host."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


class PeerChannel:
    def __init__(self, url: str, scheduler: Scheduler, channel: str = CHANNEL, timeout_s: float = 0.25,
                 count: Callable[[str, int], None] | None = None):
        self.url = url
        self.channel = channel
        self.scheduler = scheduler
        self.client = aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self.pipe = resp.for_url(url, timeout_s)  # publishes (~half redis-py's CPU per call); None: redis-py's
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(MAX_QUEUED)
        self._tasks: list[asyncio.Task] = []
        self._closing = False
        self.subscribed = asyncio.Event()
        self.counts = {"sent": 0, "received": 0, "dropped": 0, "rejected": 0}
        self._count_to = count  # e.g. the router's switchpoint_peer_messages counter

    async def start(self) -> None:
        if not self.scheduler.name:
            self.scheduler.name = router_name()
        self.scheduler.announce = self.publish
        self._tasks = [asyncio.create_task(self._send()), asyncio.create_task(self._receive()),
                       asyncio.create_task(self._announce_loads())]

    def publish(self, message: PeerMessage) -> None:
        """Queue an announcement (never blocks; dropped when the queue is full)."""
        try:
            self._queue.put_nowait(encode(message))
        except asyncio.QueueFull:
            self._count("dropped")

    async def close(self) -> None:
        """Stop announcing and listening. Bounded: a task that does not finish within CLOSE_S is left behind
        (a Redis client call caught in its own timeout can swallow a cancellation: redis-py's publish does, so
        the loops also stop on `_closing`, and the sender is woken by an empty item)."""
        self.scheduler.announce = None
        self._closing = True
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(b"")
        for task in self._tasks:
            task.cancel()
        _, pending = await asyncio.wait(self._tasks, timeout=CLOSE_S)
        if pending:
            log.warning("peer channel: %d task(s) did not stop within %.0f s", len(pending), CLOSE_S)
        if self.pipe is not None:
            await self.pipe.close()
        with contextlib.suppress(RedisError, OSError):
            await asyncio.wait_for(self.client.aclose(), CLOSE_S)

    async def _send(self) -> None:
        failing = False
        while not self._closing:
            batch = [await self._queue.get()]
            await asyncio.sleep(FLUSH_S)
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            if self._closing:
                return
            try:
                await asyncio.gather(*(self._publish(p) for p in _batches(self.scheduler.name, batch)))
                self._count("sent", len(batch))
                if failing:
                    log.info("peer channel: publishing to %s again", self.channel)
                failing = False
            except (RedisError, OSError) as exc:
                self._count("dropped", len(batch))
                if not failing:
                    log.warning("peer channel: cannot publish (%s); routing on this router's own view until Redis "
                                "answers", exc)
                failing = True

    async def _publish(self, payload: bytes) -> None:
        if self.pipe is not None:  # concurrent calls are pipelined on its one connection
            await self.pipe.call("PUBLISH", self.channel, payload)
        else:
            await self.client.publish(self.channel, payload)

    async def _receive(self) -> None:
        wait = RECONNECT_S[0]
        while not self._closing:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.subscribed.set()
                wait = RECONNECT_S[0]
                while not self._closing:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._apply(message["data"])
            except (RedisError, OSError) as exc:
                self.subscribed.clear()
                log.warning("peer channel: subscription to %s lost (%s); again in %.1f s", self.channel, exc, wait)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(wait)
            wait = min(RECONNECT_S[1], 2 * wait)

    def _apply(self, data: bytes) -> None:
        try:
            if origin_of(data) == self.scheduler.name:
                return  # our own batch, echoed
            messages = unpack(data)
        except BadPeerMessage as exc:
            self._count("rejected")
            log.warning("peer channel: ignored a message on %s: %s", self.channel, exc)
            return
        self._count("received", len(messages))
        for message in messages:
            self.scheduler.apply(message)

    def _count(self, outcome: str, n: int = 1) -> None:
        self.counts[outcome] += n
        if self._count_to is not None:
            self._count_to(outcome, n)

    async def _announce_loads(self) -> None:
        while not self._closing:
            await asyncio.sleep(LOADS_INTERVAL_S)
            self.publish(PeerLoads(self.scheduler.name, self.scheduler.ledger.loads()))


def _batches(origin: str, messages: list[bytes]) -> list[bytes]:
    """The messages packed into as few batches as MAX_BATCH_BYTES allows."""
    out: list[bytes] = []
    start, size = 0, 0
    for i, m in enumerate(messages):
        if size and size + len(m) > MAX_BATCH_BYTES:
            out.append(pack(origin, messages[start:i]))
            start, size = i, 0
        size += len(m) + 4
    out.append(pack(origin, messages[start:]))
    return out
