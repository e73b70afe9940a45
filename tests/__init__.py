"""Switchpoint tests."""
