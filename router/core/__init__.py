"""The router core: one transport-free object every front door calls (route, settle), and its config snapshot."""

from switchpoint.router.core.answers import CachedAnswer, Routed, ServedModel, Settled, Settlement, Target
from switchpoint.router.core.core import RouterCore
from switchpoint.router.core.snapshot import Preparer, Snapshot, check_files

__all__ = ["CachedAnswer", "Preparer", "Routed", "RouterCore", "ServedModel", "Settled", "Settlement", "Snapshot",
           "Target", "check_files"]
