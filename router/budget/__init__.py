"""Budgets: which apply to a request, what it costs, and an atomic shared ledger in Redis."""
