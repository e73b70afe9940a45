"""Filters: which of a pool's replicas may take this request, before any scoring.

A filter takes the pool's view, the positions (into the view) still in the running and the
fleet's live state, and returns the positions it keeps. Profiles list theirs (every built-in
profile: `ready`); the scheduler adds a role filter per stage of a disaggregated placement
(`decode` for the destination, `prefill` for the prefill replica).

Adding a filter: a function here, registered with `@FILTERS.register("name")`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from switchpoint.router.scheduling.fleet import FleetState
from switchpoint.router.scheduling.registry import Registry

if TYPE_CHECKING:
    from switchpoint.router.scheduling.pools import PoolView

Filter = Callable[["PoolView", np.ndarray, FleetState], np.ndarray]
FILTERS: Registry[Filter] = Registry("filter")




@FILTERS.register("ready")
def ready(view: PoolView, positions: np.ndarray, fleet: FleetState) -> np.ndarray:
    """Replicas in rotation: of a scraped pool, those whose scrapes have not failed `failuresToUnready` times in a
    row; of every pool, those passive health has not ejected (failures seen in responses and Reports)."""
    mask = fleet.ready_mask(view.pool, view.fleet_slots[positions])
    kept = positions if mask is None else positions[mask]
    return fleet.passively_healthy(view.addresses, kept)


@FILTERS.register("decode")
def decode(view: PoolView, positions: np.ndarray, fleet: FleetState) -> np.ndarray:
    """Replicas that can be the destination (role decode or both)."""
    return positions if view.all_decode else positions[view.decodes[positions]]


@FILTERS.register("prefill")
def prefill(view: PoolView, positions: np.ndarray, fleet: FleetState) -> np.ndarray:
    """Dedicated prefill replicas (role prefill)."""
    return positions[:0] if view.all_decode else positions[view.prefill_only[positions]]
