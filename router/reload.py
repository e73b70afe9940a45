"""Hot reload: watch the config files, recompile and prepare on change, swap whole or keep the old snapshot.

Polling (file size and modification time, every `interval` seconds) works the
same on every filesystem, including ConfigMap volumes whose files change by an
atomic symlink swap. Compiling and preparing (models, selectors) run in a worker
thread and build a new snapshot without touching the one in force; a broken edit
is logged and counted, and the snapshot in force keeps serving, unchanged, until a
later edit prepares.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from switchpoint.config.errors import ConfigError
from switchpoint.config.manifests import manifest_files
from switchpoint.router.core.snapshot import Snapshot

log = logging.getLogger("switchpoint.router.reload")

Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(paths: list[str | Path]) -> Fingerprint:
    entries = []
    for path in manifest_files(paths):
        try:
            st = os.stat(path)  # follows symlinks, as a ConfigMap volume needs
            entries.append((str(path), st.st_mtime_ns, st.st_size))
        except OSError:
            entries.append((str(path), -1, -1))
    return tuple(entries)


class ConfigWatcher:
    def __init__(self, paths: list[str | Path], load: Callable[[], Snapshot],
                 apply: Callable[[Snapshot], Awaitable[None]], refused: Callable[[ConfigError], None],
                 interval: float = 1.0):
        self.paths = paths
        self.load = load  # compiles and prepares a new snapshot (blocking; ConfigError refuses it)
        self.apply = apply
        self.refused = refused
        self.interval = interval
        self.seen = fingerprint(paths)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.check()

    async def check(self) -> bool:
        """Reload if the files changed since last seen; True when a new snapshot was applied."""
        current = fingerprint(self.paths)
        if current == self.seen:
            return False
        self.seen = current
        try:
            snapshot = await asyncio.to_thread(self.load)
        except ConfigError as exc:
            log.error("config reload refused; the previous config keeps serving:\n%s", exc)
            self.refused(exc)
            return False
        await self.apply(snapshot)
        return True
