"""Incompatibility clustering (ISPL+B): find backdoor-poisoned samples in labelled images."""

from incompat.config import DEFAULT_PRESET, PRESETS, EngineConfig, get_preset
from incompat.engine import detect
from incompat.result import ClassSummary, DetectionResult
from incompat.verdict import ImplicatedGroup, Verdict
from incompat.version import __version__

__all__ = [
    "DEFAULT_PRESET",
    "PRESETS",
    "ClassSummary",
    "DetectionResult",
    "EngineConfig",
    "ImplicatedGroup",
    "Verdict",
    "__version__",
    "detect",
    "get_preset",
]
