"""Refusals the router answers with a gRPC status code and a message naming the cause."""

from __future__ import annotations

import grpc


class RouteError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message
