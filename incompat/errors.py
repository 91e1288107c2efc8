"""The engine's errors, by whose move it is: the dataset's owner, the operator, or the machine.

Each is a ``ValueError`` too, as every one of them was before they had types of their own, so
callers that caught that still do.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base of the errors ``detect`` raises on purpose."""


class InvalidDatasetError(EngineError, ValueError):
    """The images or labels cannot be audited: wrong types or shapes, too few samples or classes."""


class InvalidConfigError(EngineError, ValueError):
    """The configuration is wrong: an unknown preset, field or architecture, or a value out of
    range."""


class DeviceUnavailableError(EngineError, ValueError):
    """The device asked for is not on this machine (e.g. CUDA without a GPU)."""
