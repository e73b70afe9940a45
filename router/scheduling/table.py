"""Per-replica state as numpy columns, indexed by a stable slot per replica address.

The scheduler scores every candidate replica of a pool on each request; with the state in
columns it gathers a pool's values with one fancy-indexing operation (`column[slots]`)
instead of one dict lookup and one object per replica. A slot stays the replica's until
`retain` drops the replica; freed slots are reset to the column defaults and reused, so the
table holds at most as many slots as replicas a config named at once (plus those seen since).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import numpy as np

INITIAL_SLOTS = 16


class ReplicaTable:
    def __init__(self, **defaults: float):
        self._defaults = defaults
        self.slot_of: dict[str, int] = {}
        self._free: list[int] = []
        self._used = 0  # slots handed out so far (freed ones included)
        self.columns: dict[str, np.ndarray] = {name: np.full(INITIAL_SLOTS, value, dtype=np.float64)
                                               for name, value in defaults.items()}

    def __len__(self) -> int:
        return len(self.slot_of)

    def __contains__(self, address: str) -> bool:
        return address in self.slot_of

    @property
    def capacity(self) -> int:
        """Slots below this bound may be in use; every slot a caller holds is below it."""
        return self._used

    def slot(self, address: str) -> int:
        found = self.slot_of.get(address)
        return found if found is not None else self._assign(address)

    def slots(self, addresses: Iterable[str]) -> np.ndarray:
        return np.fromiter((self.slot(a) for a in addresses), dtype=np.intp)

    def retain(self, keep: Collection[str]) -> list[str]:
        """Drop every address not in `keep`; returns the dropped ones."""
        dropped = [a for a in self.slot_of if a not in keep]
        for address in dropped:
            slot = self.slot_of.pop(address)
            for name, column in self.columns.items():
                column[slot] = self._defaults[name]
            self._free.append(slot)
        return dropped

    def _assign(self, address: str) -> int:
        if self._free:
            slot = self._free.pop()
        else:
            slot = self._used
            self._used += 1
            size = len(next(iter(self.columns.values()))) if self.columns else slot + 1
            if slot >= size:
                for name, column in self.columns.items():
                    grown = np.full(2 * size, self._defaults[name], dtype=np.float64)
                    grown[:size] = column
                    self.columns[name] = grown
        self.slot_of[address] = slot
        return slot
