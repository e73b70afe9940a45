"""The cache's targetPrecision setting: compiled from a RoutingPolicy, validated by the CRD schema."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from switchpoint.router.cache.verifier import DEFAULT_TARGET_PRECISION
from tests.conftest import EXAMPLES


def test_the_policy_setting_compiles_and_is_validated(tmp_path: Path) -> None:
    from switchpoint.config.compiler import ConfigError, load_config

    smart = load_config([EXAMPLES]).policies["default/smart"]
    assert smart.default.cache.target_precision == DEFAULT_TARGET_PRECISION
    for name in ("pools.yaml", "smart-policy.yaml"):
        shutil.copy(Path(EXAMPLES) / name, tmp_path / name)
    path = tmp_path / "smart-policy.yaml"
    text = path.read_text().replace("cache: {enabled: true, ttl: 10m}", "cache: {enabled: true, ttl: 10m, "
                                    "targetPrecision: 0.99}")
    path.write_text(text)
    assert load_config([tmp_path]).policies["default/smart"].default.cache.target_precision == 0.99
    path.write_text(text.replace("targetPrecision: 0.99", "targetPrecision: 1.5"))
    with pytest.raises(ConfigError, match="targetPrecision"):
        load_config([tmp_path])


def test_the_cache_stage_passes_the_setting_on() -> None:
    from switchpoint.config.model import CacheConfig
    from switchpoint.router.caching import cache_options

    assert cache_options(CacheConfig()).target_precision == DEFAULT_TARGET_PRECISION
    assert cache_options(CacheConfig(target_precision=0.99)).target_precision == 0.99
