"""Incompatibility clustering (ISPL+B): find backdoor-poisoned samples in labelled images.

The configuration and the errors import without torch, so the service's API can read the presets
and the flag threshold from here; the engine's names load torch on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from incompat.config import DEFAULT_PRESET, FLAG_THRESHOLD, PRESETS, EngineConfig, get_preset
from incompat.errors import (
    DeviceUnavailableError,
    EngineError,
    InvalidConfigError,
    InvalidDatasetError,
)
from incompat.version import __version__

if TYPE_CHECKING:
    from incompat.engine import detect
    from incompat.result import ClassSummary, DetectionResult
    from incompat.verdict import ImplicatedGroup, Verdict

_LAZY = {
    "detect": "incompat.engine",
    "ClassSummary": "incompat.result",
    "DetectionResult": "incompat.result",
    "ImplicatedGroup": "incompat.verdict",
    "Verdict": "incompat.verdict",
}

__all__ = [
    "DEFAULT_PRESET",
    "FLAG_THRESHOLD",
    "PRESETS",
    "ClassSummary",
    "DetectionResult",
    "DeviceUnavailableError",
    "EngineConfig",
    "EngineError",
    "ImplicatedGroup",
    "InvalidConfigError",
    "InvalidDatasetError",
    "Verdict",
    "__version__",
    "detect",
    "get_preset",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'incompat' has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
