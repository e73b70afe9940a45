"""The Switchpoint router: gRPC service, request pipeline, signals, decisions, scheduling."""
