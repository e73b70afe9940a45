"""Settlement tickets: what any router replica needs to settle a request another replica routed.

The Decision carries a ticket (also as the `x-switchpoint-ticket` header on the upstream request, for a
gateway whose response stream reaches another replica). A Report that brings it back settles on
whichever replica receives it: the ticket names the reservation and the budget lines it holds, the
bandit's context and arm, the cell of the matrix for the metrics, and whether the routing replica handed
off a cache write. It is signed, not encrypted: HMAC-SHA256 (truncated to 128 bits) with a key every
replica of a deployment shares (the chart's Secret, `--settle-key-file` / `SWITCHPOINT_SETTLE_KEY`).

Opening one refuses, naming the cause: a ticket that does not parse or whose signature does not verify
(forged, altered, or signed with another deployment's key), one issued for another request id (replayed
for a request it was not issued for), and one past its expiry (the request's in-flight TTL: its budget
reservation is then charged in full by the ledger, so a late Report counts nothing twice). A second
Report for the same request is not the ticket's business: the replicas' shared settle-once mark
(router/handoff.py) makes it a no-op.

Format: `1.<base64url(JSON array)>.<base64url(mac)>`, the MAC over `1.<payload>`. Pure functions of
their inputs and the clock; no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import time

from switchpoint.router.frozen import frozen
from switchpoint.router.refusals import InvalidRequest, NotFound

VERSION = "1"
MAC_BYTES = 16
MIN_KEY_BYTES = 16
SHA256_BLOCK = 64
TICKET_HEADER = "x-switchpoint-ticket"
_compact = json.JSONEncoder(separators=(",", ":")).encode  # json.dumps(separators=…) builds an encoder per call


@frozen
class TicketBudget:
    reservation_id: str
    outcome: str  # admitted, downgraded, observed, unenforced
    # (budget namespace/name, tenant for EachTenant, reserved units, the lease they came from or "")
    lines: tuple[tuple[str, str, int, str], ...]


@frozen
class Ticket:
    request_id: str
    expires_ms: int  # wall clock (Unix ms): the routing replica's in-flight TTL
    policy: str  # namespace/name of the RoutingPolicy ("" for a request that named a served model)
    decision: str
    pool: str  # the pool's name, as the Decision says
    model: str
    replica: str
    prefill_replica: str = ""
    workload: str = ""
    pricing: tuple[float, float, str] = (0.0, 0.0, "USD")  # the pool's prices per million tokens (in, out), currency
    budget: TicketBudget | None = None
    bandit: tuple[str, str] | None = None  # (context, arm model) of the decision's bandit
    cache: bool = False  # the routing replica handed off the cache write (router/handoff.py)

    def as_list(self) -> list:
        b = self.budget
        return [self.request_id, self.expires_ms, self.policy, self.decision, self.pool, self.model, self.replica,
                self.prefill_replica, self.workload, list(self.pricing),
                None if b is None else [b.reservation_id, b.outcome, [list(ln) for ln in b.lines]],
                None if self.bandit is None else list(self.bandit), int(self.cache)]

    @staticmethod
    def from_list(raw: list) -> Ticket:
        rid, expires, policy, decision, pool, model, replica, prefill, workload, pricing, budget, bandit, cache = raw
        tb = None
        if budget is not None:
            res_id, outcome, lines = budget
            # a line without a lease comes from a router of the version before leases (a rolling upgrade)
            tb = TicketBudget(str(res_id), str(outcome), tuple((str(k), str(t), int(u), str(lease[0]) if lease else "")
                                                               for k, t, u, *lease in lines))
        return Ticket(str(rid), int(expires), str(policy), str(decision), str(pool), str(model), str(replica),
                      str(prefill), str(workload), (float(pricing[0]), float(pricing[1]), str(pricing[2])), tb,
                      None if bandit is None else (str(bandit[0]), str(bandit[1])), bool(cache))


class TicketSigner:
    def __init__(self, key: bytes):
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"settle key: at least {MIN_KEY_BYTES} bytes, got {len(key)}")
        # HMAC-SHA256 (RFC 2104) with the key's inner and outer pads hashed once: each MAC then copies two hash
        # states instead of deriving them (1.8 us against hmac.digest's 4.5 us; the same bytes)
        block = key if len(key) <= SHA256_BLOCK else hashlib.sha256(key).digest()
        block = block.ljust(SHA256_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    @classmethod
    def ephemeral(cls) -> TicketSigner:
        """A key of this process only: its tickets settle here and nowhere else."""
        return cls(os.urandom(32))

    def sign(self, ticket: Ticket) -> str:
        payload = _b64(_compact(ticket.as_list()).encode())
        signed = f"{VERSION}.{payload}"
        return f"{signed}.{_b64(self._mac(signed))}"

    def open(self, token: str, request_id: str, now_ms: int | None = None) -> Ticket:
        """The ticket, verified, for `request_id`; InvalidRequest (forged, altered, another request's) or NotFound
        (expired) naming the cause."""
        version, _, rest = token.partition(".")
        payload, _, mac = rest.partition(".")
        if version != VERSION or not payload or not mac:
            raise InvalidRequest(f"ticket: not a settlement ticket of this router (expected '{VERSION}.<payload>."
                                 "<signature>' as the Decision's ticket field carries it)")
        try:
            given = _unb64(mac)
        except (binascii.Error, ValueError):
            given = b""
        if not hmac.compare_digest(given, self._mac(f"{version}.{payload}")):
            raise InvalidRequest("ticket: the signature does not verify: forged, altered, or signed by a router with "
                                 "another settle key (every replica must mount the same Secret)")
        try:
            ticket = Ticket.from_list(json.loads(_unb64(payload)))
        except (ValueError, TypeError, binascii.Error) as exc:  # signed by us, so only a version skew gets here
            raise InvalidRequest(f"ticket: signed but unreadable by this router version ({exc})") from None
        if ticket.request_id != request_id:
            raise InvalidRequest(f"ticket: issued for request_id '{ticket.request_id[:128]}', not "
                                 f"'{request_id[:128]}': a ticket settles only its own request")
        now = int(time.time() * 1000) if now_ms is None else now_ms
        if now > ticket.expires_ms:
            raise NotFound(f"request_id '{request_id[:128]}': its ticket expired {(now - ticket.expires_ms) / 1000:.0f}"
                           "s ago (the in-flight TTL); an expired reservation is charged in full by the ledger, so "
                           "this Report settles nothing")
        return ticket

    def _mac(self, signed: str) -> bytes:
        inner = self._inner.copy()
        inner.update(signed.encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:MAC_BYTES]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def settle_key_from_env(environ: dict[str, str] | None = None) -> bytes | None:
    """The deployment's settle key: $SWITCHPOINT_SETTLE_KEY (the key itself, as the chart's Secret gives it) or
    the file named by $SWITCHPOINT_SETTLE_KEY_FILE; None when neither is set. ValueError naming the cause."""
    env = os.environ if environ is None else environ
    if env.get("SWITCHPOINT_SETTLE_KEY"):
        key = env["SWITCHPOINT_SETTLE_KEY"].strip().encode()
        where = "$SWITCHPOINT_SETTLE_KEY"
    elif env.get("SWITCHPOINT_SETTLE_KEY_FILE"):
        path = env["SWITCHPOINT_SETTLE_KEY_FILE"]
        try:
            with open(path, "rb") as f:
                key = f.read().strip()
        except OSError as exc:
            raise ValueError(f"$SWITCHPOINT_SETTLE_KEY_FILE: cannot read {path}: {exc.strerror}") from None
        where = path
    else:
        return None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"settle key from {where}: at least {MIN_KEY_BYTES} bytes, got {len(key)}")
    return key
