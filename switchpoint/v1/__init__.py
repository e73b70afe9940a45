"""Generated gRPC stubs of the public API (package switchpoint.v1), built from proto/."""
