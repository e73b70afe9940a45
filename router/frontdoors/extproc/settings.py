"""Settings of the Envoy external processing front door (the router process passes them; all have defaults)."""

from __future__ import annotations

from dataclasses import dataclass

EXTPROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
DEFAULT_PORT = 9002  # the port GIE's and llm-d's endpoint pickers serve ext_proc on
# gRPC metadata an ext_proc filter sends (its grpc_service.initial_metadata) to say which phases it sends: with
# "request" it sends nothing of the response (response headers SKIP, body NONE, trailers SKIP), so the router ends
# the stream with its last request answer instead of waiting for Envoy's end of stream. Envoy's protocol_config
# tells the body modes only, not the header modes, hence the filter says it (switchpoint gateway's split mode does).
PHASES_METADATA = "x-switchpoint-extproc-phases"


@dataclass(frozen=True)
class ExtProcSettings:
    # Identity comes from request headers, which the gateway in front sets from what it authenticated
    # (switchpoint gateway strips client-sent ones and sets the tenant from the API key).
    tenant_header: str = "x-switchpoint-tenant"
    user_header: str = "x-switchpoint-user"
    session_header: str = "x-switchpoint-session"
    # The largest request body accepted (a BUFFERED Envoy has its own limit, per_connection_buffer_limit_bytes).
    max_request_bytes: int = 16 * 1024 * 1024
    # A JSON response body, and a stream's answer text, are kept up to this size for usage and the cache.
    max_response_bytes: int = 8 * 1024 * 1024
    # FULL_DUPLEX_STREAMED bodies go back to Envoy in chunks of at most this many bytes (as GIE's picker:
    # bodies over 128 KB failed before chunking).
    body_chunk_bytes: int = 62_000
    # Request headers handed to the core as metadata (header signals), besides identity: all but these.
    private_headers: tuple[str, ...] = ("authorization", "cookie", "proxy-authorization", "x-api-key")
