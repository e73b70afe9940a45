"""Hot reload: watch the config files, recompile on change, swap atomically or keep the old config.

Polling (file size and modification time, every `interval` seconds) works the
same on every filesystem, including ConfigMap volumes whose files change by an
atomic symlink swap. A broken edit is logged and counted; the config in force
keeps serving until a later edit compiles.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from switchpoint.config.compiler import load_config
from switchpoint.config.errors import ConfigError
from switchpoint.config.manifests import manifest_files
from switchpoint.config.model import RouterConfig

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
    def __init__(self, paths: list[str | Path], apply: Callable[[RouterConfig], None],
                 refused: Callable[[ConfigError], None], interval: float = 1.0,
                 prepare: Callable[[RouterConfig], None] | None = None):
        self.paths = paths
        self.apply = apply
        self.prepare = prepare  # loads what the config needs (models); ConfigError refuses it
        self.refused = refused
        self.interval = interval
        self.seen = fingerprint(paths)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.check()

    async def check(self) -> bool:
        """Reload if the files changed since last seen; True when a new config was applied."""
        current = fingerprint(self.paths)
        if current == self.seen:
            return False
        self.seen = current
        try:
            config = await asyncio.to_thread(self._load)
        except ConfigError as exc:
            log.error("config reload refused; the previous config keeps serving:\n%s", exc)
            self.refused(exc)
            return False
        self.apply(config)
        return True

    def _load(self) -> RouterConfig:
        config = load_config(self.paths)
        if self.prepare is not None:
            self.prepare(config)
        return config
