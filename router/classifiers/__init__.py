"""Neural classifiers run by onnxruntime on CPU: sentence encoders, classifier heads, and where their files live."""

from __future__ import annotations

import os
from pathlib import Path

import switchpoint

ENV_MODELS = "SWITCHPOINT_MODELS"


def models_dir() -> Path:
    """The models directory (built by `switchpoint models build`, never committed).

    $SWITCHPOINT_MODELS if set; else <checkout>/models when running from a source checkout (a pyproject.toml
    or a models/ folder beside the switchpoint package); else ~/.cache/switchpoint/models.
    """
    env = os.environ.get(ENV_MODELS)
    if env:
        return Path(env).expanduser()
    root = Path(switchpoint.__file__).resolve().parents[1]
    if (root / "models").is_dir() or (root / "pyproject.toml").is_file():
        return root / "models"
    return Path.home() / ".cache" / "switchpoint" / "models"
